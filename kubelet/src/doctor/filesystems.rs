//! Filesystems: overlayfs for container root filesystems, bpffs for BPF objects.

use std::path::Path;

use super::mountinfo::Mount;
use super::read_host_file;
use super::report::Check;

pub const OVERLAY_NAME: &str = "overlayfs";
pub const BPFFS_NAME: &str = "bpffs";

/// Filesystem types the kernel has registered (/proc/filesystems).
pub fn registered_filesystems(host_root: &Path) -> Result<Vec<String>, String> {
    let text = read_host_file(host_root, "proc/filesystems")?;
    Ok(text.lines().filter_map(|l| l.split_whitespace().last()).map(str::to_string).collect())
}

/// The module file for `overlay` under lib/modules/<release>, when it is built as a module
/// (the kernel loads it on the first mount).
fn overlay_module_present(host_root: &Path, release: &str) -> bool {
    let dir = host_root.join(format!("lib/modules/{release}/kernel/fs/overlayfs"));
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("overlay.ko")))
        .unwrap_or(false)
}

pub fn check_overlay(host_root: &Path, filesystems: &[String]) -> Check {
    if filesystems.iter().any(|f| f == "overlay") {
        return Check::ok(OVERLAY_NAME, "supported");
    }
    let release =
        read_host_file(host_root, "proc/sys/kernel/osrelease").map(|r| r.trim().to_string()).unwrap_or_default();
    if !release.is_empty() && overlay_module_present(host_root, &release) {
        Check::ok(OVERLAY_NAME, "available as a module (loaded on first mount)")
    } else {
        Check::fail(OVERLAY_NAME, "not supported by the kernel: images cannot be mounted")
    }
}

pub fn check_bpffs(filesystems: &[String], mounts: &[Mount]) -> Check {
    if let Some(mount) = mounts.iter().find(|m| m.fs_type == "bpf") {
        return Check::ok(BPFFS_NAME, format!("mounted at {}", mount.mount_point));
    }
    if filesystems.iter().any(|f| f == "bpf") {
        Check::ok(BPFFS_NAME, "supported (not mounted)")
    } else {
        Check::warn(BPFFS_NAME, "not supported by the kernel")
    }
}
