//! The mounts a pod's volumes make on the host (tmpfs for memory-backed volumes, bind mounts
//! of subPaths) and their removal: everything mounted below a pod's directory, found in
//! /proc/self/mountinfo, is unmounted deepest first before the directory is removed.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountPointError {
    #[error("read /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    #[error("resolve {path}")]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount tmpfs on {path}")]
    Tmpfs {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bind mount {source_path} on {path}")]
    Bind {
        source_path: PathBuf,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmount {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// The mount points of this mount namespace, from /proc/self/mountinfo.
pub fn mount_points() -> Result<Vec<PathBuf>, MountPointError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountPointError::MountInfo)?;
    Ok(parse_mount_points(&text))
}

/// Field 5 of each mountinfo line, with the kernel's octal escapes (`\040`) decoded.
pub fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    nodelet_runtime::mountinfo::mount_points(mountinfo)
}

/// `path` with every symlink resolved, as mountinfo shows mount points; None when it does
/// not exist.
pub fn resolved(path: &Path) -> Result<Option<PathBuf>, MountPointError> {
    match std::fs::canonicalize(path) {
        Ok(resolved) => Ok(Some(resolved)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MountPointError::Resolve { path: path.to_path_buf(), source }),
    }
}

/// Whether something is mounted on `path` (compared resolved: a root dir reached through a
/// symlink still finds its mounts).
pub fn is_mount_point(path: &Path) -> Result<bool, MountPointError> {
    let Some(path) = resolved(path)? else {
        return Ok(false);
    };
    Ok(mount_points()?.contains(&path))
}

/// The mount points at or below `dir`, resolved.
pub fn mount_points_below(dir: &Path) -> Result<Vec<PathBuf>, MountPointError> {
    let Some(dir) = resolved(dir)? else {
        return Ok(Vec::new());
    };
    Ok(mount_points()?.into_iter().filter(|p| p.starts_with(&dir)).collect())
}

/// Mount a tmpfs of `size_bytes` (no limit when None) on `dir`, unless one is there already
/// (an agent restart reuses it).
pub fn mount_tmpfs(dir: &Path, size_bytes: Option<u64>) -> Result<(), MountPointError> {
    if is_mount_point(dir)? {
        return Ok(());
    }
    let options = size_bytes.map(|size| format!("size={size}"));
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::empty(), options.as_deref())
        .map_err(|source| MountPointError::Tmpfs { path: dir.to_path_buf(), source })
}

/// Bind mount `source` (a path or /proc/self/fd/N) on `target`.
pub fn bind(source: &Path, target: &Path) -> Result<(), MountPointError> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|errno| MountPointError::Bind {
        source_path: source.to_path_buf(),
        path: target.to_path_buf(),
        source: errno,
    })
}

/// Unmount everything mounted at or below `dir`, deepest first. Returns how many.
pub fn unmount_all_below(dir: &Path) -> Result<usize, MountPointError> {
    let mut below = mount_points_below(dir)?;
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for path in &below {
        // Stacked mounts on one point: unmount until it is no longer one.
        loop {
            match umount2(path.as_path(), MntFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOENT) => break,
                // Still in use by a process of ours (a lingering open file): detach it.
                Err(Errno::EBUSY) => umount2(path.as_path(), MntFlags::MNT_DETACH)
                    .map_err(|source| MountPointError::Unmount { path: path.clone(), source })?,
                Err(source) => return Err(MountPointError::Unmount { path: path.clone(), source }),
            }
        }
    }
    Ok(below.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_decoded() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /var/lib/nodelet/pods/u/volumes/kubernetes.io~empty-dir/my\\040vol rw - tmpfs tmpfs rw\n";
        let points = parse_mount_points(text);
        assert_eq!(points[0], Path::new("/"));
        assert_eq!(points[1], Path::new("/var/lib/nodelet/pods/u/volumes/kubernetes.io~empty-dir/my vol"));
    }
}
