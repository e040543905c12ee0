//! `nodelet doctor`: checks that this host can run nodelet, as a readable report.
//! Every check reads files below a host root passed in, so tests use fake roots; only the
//! root-user check looks at the live process.

mod bpf;
mod cgroups;
mod filesystems;
mod kernel;
mod mountinfo;
mod namespaces;
mod privileges;
mod report;

use std::path::{Path, PathBuf};

pub use cgroups::{detect_layout, v1_controllers, CgroupLayout};
pub use kernel::parse_release;
pub use mountinfo::{parse_mountinfo, Mount};
pub use report::{Check, CheckStatus, DoctorReport};

/// Names of the checks, as they appear in the report.
pub mod check_names {
    pub use super::bpf::{BTF_NAME as BTF, PROGRAMS_NAME as BPF_PROGRAMS, SYSCALL_NAME as BPF_SYSCALL};
    pub use super::cgroups::{CONTROLLERS_NAME as CGROUP_CONTROLLERS, MODE_NAME as CGROUP_MODE};
    pub use super::filesystems::{BPFFS_NAME as BPFFS, OVERLAY_NAME as OVERLAYFS};
    pub use super::kernel::NAME as KERNEL;
    pub use super::namespaces::NAME as NAMESPACES;
    pub use super::privileges::NAME as ROOT;
}

#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// Where `proc/`, `sys/`, `boot/` and `lib/modules/` are read (`/` on a real host).
    pub host_root: PathBuf,
    /// Check that this process runs as root (off for fake roots in tests).
    pub check_privileges: bool,
    /// Load the BPF programs into the running kernel (off for fake roots in tests).
    pub probe_bpf: bool,
}

impl DoctorOptions {
    /// The real host.
    pub fn host() -> Self {
        DoctorOptions { host_root: PathBuf::from("/"), check_privileges: true, probe_bpf: true }
    }
}

/// Run every check.
pub fn diagnose(options: &DoctorOptions) -> DoctorReport {
    let root = options.host_root.as_path();
    let mut checks = Vec::new();
    if options.check_privileges {
        checks.push(privileges::check_root());
    }
    checks.push(kernel::check_kernel(root));
    checks.push(namespaces::check_namespaces(root));
    match read_host_file(root, "proc/self/mountinfo") {
        Ok(text) => {
            let mounts = parse_mountinfo(&text);
            checks.push(cgroups::check_mode(&mounts));
            checks.push(cgroups::check_controllers(root, &mounts));
            checks.extend(filesystem_checks(root, &mounts));
        }
        Err(detail) => {
            checks.push(Check::fail(cgroups::MODE_NAME, detail.clone()));
            checks.extend(filesystem_checks(root, &[]));
        }
    }
    checks.push(bpf::check_bpf_syscall(root));
    checks.push(bpf::check_btf(root));
    if options.probe_bpf {
        checks.push(bpf::check_programs_load());
    }
    DoctorReport { checks }
}

fn filesystem_checks(root: &Path, mounts: &[Mount]) -> Vec<Check> {
    match filesystems::registered_filesystems(root) {
        Ok(registered) => {
            vec![filesystems::check_overlay(root, &registered), filesystems::check_bpffs(&registered, mounts)]
        }
        Err(detail) => {
            vec![Check::fail(filesystems::OVERLAY_NAME, detail.clone()), Check::warn(filesystems::BPFFS_NAME, detail)]
        }
    }
}

/// Read `<root>/<relative>`, or a one-line reason for the report.
fn read_host_file(root: &Path, relative: &str) -> Result<String, String> {
    let path = root.join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
