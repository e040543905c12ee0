//! Device access rules (`linux.resources.devices`) as runc applies them: the spec's rules,
//! then runc's always-allowed devices (null, zero, full, random, urandom, tty, ptmx, pts,
//! tun, and mknod of anything), then read-write-mknod for each of `linux.devices`. On v1 they
//! are written to devices.deny / devices.allow in order; on cgroup2 (pure v2, and the unified
//! directory of a hybrid host) they become a BPF_CGROUP_DEVICE program (`device_filter`),
//! attached to the container's cgroup and detached before it is removed.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use crate::sys::bpf;

use super::device_filter;

use oci_spec::runtime::{Linux, LinuxDeviceCgroup, LinuxDeviceType};

use super::{write_file, CgroupError};

/// One rule: `kind` is 'a' (all), 'c' or 'b'; None is the wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

impl DeviceRule {
    fn allowed(kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow: true, kind, major, minor, access: access.to_string() }
    }

    /// The kernel's syntax: "c 1:3 rwm", "a *:* rwm".
    pub fn to_v1(&self) -> String {
        let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "*".to_string());
        format!("{} {}:{} {}", self.kind, number(self.major), number(self.minor), self.access)
    }
}

/// runc's `AllowedDevices`, always added after the spec's rules.
fn runc_defaults() -> Vec<DeviceRule> {
    vec![
        DeviceRule::allowed('c', None, None, "m"),
        DeviceRule::allowed('b', None, None, "m"),
        DeviceRule::allowed('c', Some(1), Some(3), "rwm"),
        DeviceRule::allowed('c', Some(1), Some(8), "rwm"),
        DeviceRule::allowed('c', Some(1), Some(7), "rwm"),
        DeviceRule::allowed('c', Some(5), Some(0), "rwm"),
        DeviceRule::allowed('c', Some(1), Some(5), "rwm"),
        DeviceRule::allowed('c', Some(1), Some(9), "rwm"),
        DeviceRule::allowed('c', Some(136), None, "rwm"),
        DeviceRule::allowed('c', Some(5), Some(2), "rwm"),
        DeviceRule::allowed('c', Some(10), Some(200), "rwm"),
    ]
}

/// The rules to apply for `linux`; none when the spec lists no device rule (the container
/// then keeps its parent's access, as the kubelet's pods do).
pub fn rules_for(linux: Option<&Linux>) -> Vec<DeviceRule> {
    let spec_rules: &[LinuxDeviceCgroup] =
        linux.and_then(|l| l.resources().as_ref()).and_then(|r| r.devices().as_deref()).unwrap_or(&[]);
    if spec_rules.is_empty() {
        return Vec::new();
    }
    let mut rules: Vec<DeviceRule> = spec_rules.iter().map(from_spec).collect();
    rules.extend(runc_defaults());
    for device in linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]) {
        rules.push(DeviceRule::allowed(kind_of(device.typ()), Some(device.major()), Some(device.minor()), "rwm"));
    }
    rules
}

fn from_spec(rule: &LinuxDeviceCgroup) -> DeviceRule {
    DeviceRule {
        allow: rule.allow(),
        kind: kind_of(rule.typ().unwrap_or(LinuxDeviceType::A)),
        major: rule.major(),
        minor: rule.minor(),
        access: rule.access().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "rwm".to_string()),
    }
}

/// 'u' (unbuffered char) is a char device to the cgroup; FIFOs need no rule, and count as
/// char as runc maps them.
fn kind_of(typ: LinuxDeviceType) -> char {
    match typ {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::P => 'c',
    }
}

/// Write the rules in order: each one changes the kernel's list as the spec's order says
/// (a rule for all devices resets the list to allow-all or deny-all).
pub(super) fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for rule in rules {
        let (file, value) = match (rule.allow, rule.kind) {
            (true, 'a') => ("devices.allow", "a".to_string()),
            (false, 'a') => ("devices.deny", "a".to_string()),
            (true, _) => ("devices.allow", rule.to_v1()),
            (false, _) => ("devices.deny", rule.to_v1()),
        };
        write_file(&dir.join(file), &value)?;
    }
    Ok(())
}

/// The program's name, as `bpftool prog` shows it.
const FILTER_NAME: &str = "nodelet_devices";

/// Load the filter for `rules` and attach it to the cgroup2 directory `dir` (alongside what
/// the parents hold: every attached program must allow an access).
pub(super) fn apply_v2(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    if rules.is_empty() {
        return Ok(());
    }
    let program =
        device_filter::build(rules).map_err(|source| CgroupError::DeviceRules { path: dir.to_path_buf(), source })?;
    let filter_err = |what: &'static str, log: String| {
        let path = dir.to_path_buf();
        move |source| CgroupError::DeviceFilter { what, path, log, source }
    };
    let prog = bpf::prog_load(bpf::PROG_TYPE_CGROUP_DEVICE, bpf::ATTACH_CGROUP_DEVICE, &program, FILTER_NAME)
        .map_err(|(errno, log)| filter_err("load", verifier_note(&log))(errno))?;
    let cgroup = File::open(dir).map_err(|source| CgroupError::Read { path: dir.to_path_buf(), source })?;
    bpf::prog_attach(cgroup.as_fd(), prog.as_fd(), bpf::ATTACH_CGROUP_DEVICE, bpf::F_ALLOW_MULTI)
        .map_err(filter_err("attach", String::new()))
}

fn verifier_note(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {})", log.lines().last().unwrap_or_default())
    }
}

/// Detach every device program attached to `dir` itself (none when it is gone).
pub(super) fn detach_v2(dir: &Path) -> Result<(), CgroupError> {
    let Ok(cgroup) = File::open(dir) else {
        return Ok(());
    };
    let filter_err = |what: &'static str| {
        let path = dir.to_path_buf();
        move |source| CgroupError::DeviceFilter { what, path, log: String::new(), source }
    };
    for id in bpf::prog_query(cgroup.as_fd(), bpf::ATTACH_CGROUP_DEVICE).map_err(filter_err("list"))? {
        match bpf::prog_get_fd_by_id(id) {
            Ok(prog) => bpf::prog_detach(cgroup.as_fd(), prog.as_fd(), bpf::ATTACH_CGROUP_DEVICE)
                .map_err(filter_err("detach"))?,
            Err(nix::Error::ENOENT) => {} // released meanwhile
            Err(source) => return Err(filter_err("open")(source)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxResourcesBuilder};

    #[test]
    fn spec_rules_then_runc_defaults_then_spec_devices() {
        let deny_all = LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap();
        let fuse = LinuxDeviceBuilder::default().path("/dev/fuse").typ(LinuxDeviceType::C).major(10).minor(229);
        let linux = LinuxBuilder::default()
            .resources(LinuxResourcesBuilder::default().devices(vec![deny_all]).build().unwrap())
            .devices(vec![fuse.build().unwrap()])
            .build()
            .unwrap();
        let rules = rules_for(Some(&linux));
        assert_eq!(rules.first().map(DeviceRule::to_v1).as_deref(), Some("a *:* rwm"));
        assert!(!rules[0].allow);
        assert_eq!(rules[1].to_v1(), "c *:* m");
        assert_eq!(rules[9].to_v1(), "c 136:* rwm");
        assert_eq!(rules.last().map(DeviceRule::to_v1).as_deref(), Some("c 10:229 rwm"));

        let dir = tempfile::tempdir().unwrap();
        apply_v1(dir.path(), &rules).unwrap();
        // Only the last write stays in a plain file: the allow of /dev/fuse.
        assert_eq!(std::fs::read_to_string(dir.path().join("devices.deny")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(dir.path().join("devices.allow")).unwrap(), "c 10:229 rwm");
    }

    #[test]
    fn no_spec_rules_no_change() {
        let linux = LinuxBuilder::default().build().unwrap();
        assert!(rules_for(Some(&linux)).is_empty());
        assert!(rules_for(None).is_empty());
    }
}
