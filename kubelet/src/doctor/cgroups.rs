//! Cgroup mode (v1, hybrid, v2) and the controllers the runtime needs.

use std::collections::BTreeSet;
use std::path::Path;

use super::mountinfo::Mount;
use super::read_host_file;
use super::report::Check;

pub const MODE_NAME: &str = "cgroup mode";
pub const CONTROLLERS_NAME: &str = "cgroup controllers";

const V2_ROOT: &str = "/sys/fs/cgroup";
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup2 at /sys/fs/cgroup.
    V2,
    /// v1 controllers, plus cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only: no cgroup2 for the service hook.
    V1,
    None,
}

pub fn detect_layout(mounts: &[Mount]) -> CgroupLayout {
    let cgroup2_at = |path: &str| mounts.iter().any(|m| m.fs_type == "cgroup2" && m.mount_point == path);
    let has_v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    if cgroup2_at(V2_ROOT) {
        CgroupLayout::V2
    } else if has_v1 && cgroup2_at(HYBRID_UNIFIED) {
        CgroupLayout::Hybrid
    } else if has_v1 {
        CgroupLayout::V1
    } else {
        CgroupLayout::None
    }
}

/// Controllers of the v1 hierarchies, from their mount options (named hierarchies like
/// `name=systemd` are not controllers).
pub fn v1_controllers(mounts: &[Mount]) -> BTreeSet<String> {
    const NOT_CONTROLLERS: [&str; 8] =
        ["rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noprefix", "clone_children"];
    mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .flat_map(|m| m.super_options.iter())
        .filter(|o| !o.contains('=') && !NOT_CONTROLLERS.contains(&o.as_str()))
        .cloned()
        .collect()
}

pub fn check_mode(mounts: &[Mount]) -> Check {
    match detect_layout(mounts) {
        CgroupLayout::V2 => Check::ok(MODE_NAME, format!("v2 (unified at {V2_ROOT})")),
        CgroupLayout::Hybrid => Check::ok(MODE_NAME, format!("hybrid (v1 controllers, cgroup2 at {HYBRID_UNIFIED})")),
        CgroupLayout::V1 => Check::warn(MODE_NAME, "v1 only: no cgroup2 hierarchy for the service load-balancer hook"),
        CgroupLayout::None => Check::fail(MODE_NAME, "no cgroup hierarchy mounted"),
    }
}

pub fn check_controllers(host_root: &Path, mounts: &[Mount]) -> Check {
    let (available, required, optional): (BTreeSet<String>, &[&str], &[&str]) = match detect_layout(mounts) {
        CgroupLayout::V2 => {
            let path = format!("{}/cgroup.controllers", V2_ROOT.trim_start_matches('/'));
            match read_host_file(host_root, &path) {
                Ok(text) => (
                    text.split_whitespace().map(str::to_string).collect(),
                    &["cpu", "memory", "pids"],
                    &["cpuset", "io"],
                ),
                Err(detail) => return Check::fail(CONTROLLERS_NAME, detail),
            }
        }
        CgroupLayout::Hybrid | CgroupLayout::V1 => {
            (v1_controllers(mounts), &["cpu", "cpuacct", "memory", "pids"], &["cpuset", "blkio", "devices", "freezer"])
        }
        CgroupLayout::None => return Check::fail(CONTROLLERS_NAME, "no cgroup hierarchy"),
    };
    let missing = |names: &[&str]| -> Vec<String> {
        names.iter().filter(|n| !available.contains(**n)).map(|n| n.to_string()).collect()
    };
    let listed = available.iter().cloned().collect::<Vec<_>>().join(" ");
    let missing_required = missing(required);
    let missing_optional = missing(optional);
    if !missing_required.is_empty() {
        Check::fail(CONTROLLERS_NAME, format!("missing {} (have: {listed})", missing_required.join(", ")))
    } else if !missing_optional.is_empty() {
        Check::warn(CONTROLLERS_NAME, format!("{listed} (missing {})", missing_optional.join(", ")))
    } else {
        Check::ok(CONTROLLERS_NAME, listed)
    }
}
