//! BPF support for the service load-balancer: the bpf syscall and kernel BTF.

use std::path::Path;

use super::report::Check;

pub const SYSCALL_NAME: &str = "bpf syscall";
pub const BTF_NAME: &str = "btf";
pub const PROGRAMS_NAME: &str = "bpf programs";

/// The sysctl exists exactly when the kernel has the bpf syscall (CONFIG_BPF_SYSCALL); the
/// kernel config, when readable, also tells whether cgroup programs exist (CONFIG_CGROUP_BPF).
pub fn check_bpf_syscall(host_root: &Path) -> Check {
    if !host_root.join("proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        return Check::warn(SYSCALL_NAME, "kernel has no bpf syscall: Services are not load-balanced");
    }
    match cgroup_bpf_config(host_root) {
        Some(false) => {
            Check::warn(SYSCALL_NAME, "kernel built without CONFIG_CGROUP_BPF: Services are not load-balanced")
        }
        Some(true) => Check::ok(SYSCALL_NAME, "available, with cgroup programs"),
        None => Check::ok(SYSCALL_NAME, "available"),
    }
}

/// CONFIG_CGROUP_BPF from boot/config-<release>; None when that file is not there.
fn cgroup_bpf_config(host_root: &Path) -> Option<bool> {
    let release = std::fs::read_to_string(host_root.join("proc/sys/kernel/osrelease")).ok()?;
    let config = std::fs::read_to_string(host_root.join(format!("boot/config-{}", release.trim()))).ok()?;
    Some(config.lines().any(|l| l.trim() == "CONFIG_CGROUP_BPF=y"))
}

pub fn check_btf(host_root: &Path) -> Check {
    if host_root.join("sys/kernel/btf/vmlinux").exists() {
        Check::ok(BTF_NAME, "/sys/kernel/btf/vmlinux")
    } else {
        Check::warn(BTF_NAME, "no /sys/kernel/btf/vmlinux: BPF programs may fail to load")
    }
}

/// Load the Service load-balancer's programs and maps into this kernel, through the verifier,
/// without attaching them anywhere; they are unloaded again when dropped. This answers what
/// the version checks can only guess: whether the `cgroup/connect4` program and its helpers
/// (bpf_set_retval needs 5.18) are accepted here.
pub fn check_programs_load() -> Check {
    match nodelet_ebpf::SockLb::load() {
        Ok(_loaded) => Check::ok(
            PROGRAMS_NAME,
            "cgroup connect4/sendmsg4/recvmsg4/getpeername4 load-balancer and its maps load (not attached)",
        ),
        Err(err) => Check::warn(
            PROGRAMS_NAME,
            format!(
                "cannot load the Service load-balancer ({}): Services are not load-balanced",
                nodelet_runtime::error_chain(&err)
            ),
        ),
    }
}
