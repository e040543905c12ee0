//! Container root filesystems as overlayfs mounts: the image's unpacked layers as read-only
//! lower dirs (top layer first), a per-container upper and work dir.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::ImageError;

pub const ROOTFS_DIR: &str = "rootfs";
pub const UPPER_DIR: &str = "upper";
pub const WORK_DIR: &str = "work";

/// mount(2) copies at most one page of option data.
const MOUNT_DATA_LIMIT: usize = 4095;

/// Mount the overlay at `<container_dir>/rootfs`; `lower_dirs` top layer first. Returns the
/// rootfs path; already mounted -> Ok.
pub fn mount_overlay(lower_dirs: &[PathBuf], container_dir: &Path) -> Result<PathBuf, ImageError> {
    let rootfs = container_dir.join(ROOTFS_DIR);
    let upper = container_dir.join(UPPER_DIR);
    let work = container_dir.join(WORK_DIR);
    for dir in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(dir).map_err(ImageError::io("create", dir.as_path()))?;
    }
    if is_mount_point(&rootfs)? {
        return Ok(rootfs);
    }
    let lower = lower_dirs.iter().map(|dir| escape_option(dir)).collect::<Vec<_>>().join(":");
    let data = format!("lowerdir={lower},upperdir={},workdir={}", escape_option(&upper), escape_option(&work));
    if data.len() > MOUNT_DATA_LIMIT {
        return Err(ImageError::MountOptionsTooLong { target: rootfs, len: data.len() });
    }
    mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(data.as_str()))
        .map_err(|source| ImageError::Mount { target: rootfs.clone(), source })?;
    tracing::debug!(rootfs = %rootfs.display(), layers = lower_dirs.len(), "mounted container rootfs");
    Ok(rootfs)
}

/// Unmount `<container_dir>/rootfs` (every stacked mount there) and remove rootfs, upper and
/// work. Idempotent.
pub fn unmount_overlay(container_dir: &Path) -> Result<(), ImageError> {
    let rootfs = container_dir.join(ROOTFS_DIR);
    while rootfs.exists() && is_mount_point(&rootfs)? {
        match umount2(&rootfs, MntFlags::empty()) {
            Ok(()) => {}
            // Still in use (e.g. a process holds a cwd in it): detach it; the kernel finishes
            // when the last user goes.
            Err(Errno::EBUSY) => umount2(&rootfs, MntFlags::MNT_DETACH)
                .map_err(|source| ImageError::Unmount { target: rootfs.clone(), source })?,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(source) => return Err(ImageError::Unmount { target: rootfs.clone(), source }),
        }
    }
    for dir in [ROOTFS_DIR, UPPER_DIR, WORK_DIR] {
        let path = container_dir.join(dir);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", path)(e)),
        }
    }
    Ok(())
}

/// Whether something is mounted exactly at `path`, from /proc/self/mountinfo (a device
/// comparison would miss bind mounts of the same filesystem).
fn is_mount_point(path: &Path) -> Result<bool, ImageError> {
    let canonical = std::fs::canonicalize(path).map_err(ImageError::io("resolve", path))?;
    let mountinfo_path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(mountinfo_path).map_err(ImageError::io("read", mountinfo_path))?;
    let wanted = canonical.to_string_lossy();
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| crate::mountinfo::unescape(mount_point) == wanted))
}

/// overlayfs splits options on `,` and lower dirs on `:`; a backslash escapes them.
fn escape_option(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, ',' | ':' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_separators() {
        assert_eq!(escape_option(Path::new("/a:b,c\\d")), "/a\\:b\\,c\\\\d");
        assert_eq!(crate::mountinfo::unescape("/a\\040b"), "/a b");
    }
}
