//! kubelet's RemoveAllOneFilesystem: a pod directory is removed with a walk that never
//! crosses into another mount. A subPath bind or a tmpfs still mounted below it (an unmount
//! that was missed) makes the removal fail naming that path, instead of deleting what the
//! mount shows (a hostPath's content). Every entry is reached through its parent's file
//! descriptor without following symlinks.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::mount_points::{mount_points, resolved, MountPointError};

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("refusing to remove {path}: another filesystem is mounted there")]
    MountPoint { path: PathBuf },
    #[error("{operation} {path}")]
    Sys {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Mounts(#[from] MountPointError),
}

fn sys(operation: &'static str, path: &Path) -> impl FnOnce(Errno) -> RemoveError {
    let path = path.to_path_buf();
    move |source| RemoveError::Sys { operation, path, source }
}

/// What the walk must not cross: the directory's device and the mount points below it.
struct Fence {
    dev: u64,
    mounts: Vec<PathBuf>,
}

impl Fence {
    fn check(&self, path: &Path, dev: u64) -> Result<(), RemoveError> {
        if dev != self.dev || self.mounts.iter().any(|m| m == path) {
            return Err(RemoveError::MountPoint { path: path.to_path_buf() });
        }
        Ok(())
    }
}

/// Remove `path` and everything below it, on its own filesystem only. A missing path is
/// fine (removal is repeated after partial failures).
pub fn remove_all_one_filesystem(path: &Path) -> Result<(), RemoveError> {
    let Some(root) = resolved(path)? else {
        return Ok(());
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match open(&root, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::ENOTDIR) => return remove_at_cwd(&root, UnlinkatFlags::NoRemoveDir),
        Err(Errno::ENOENT) => return Ok(()),
        Err(source) => return Err(RemoveError::Sys { operation: "open", path: root, source }),
    };
    let dev = fstat(dir.as_fd()).map_err(sys("stat", &root))?.st_dev;
    let mounts: Vec<PathBuf> = mount_points()?.into_iter().filter(|m| m.starts_with(&root)).collect();
    let fence = Fence { dev, mounts };
    fence.check(&root, dev)?;
    empty_dir(dir, &root, &fence)?;
    remove_at_cwd(&root, UnlinkatFlags::RemoveDir)
}

fn remove_at_cwd(path: &Path, flag: UnlinkatFlags) -> Result<(), RemoveError> {
    match unlinkat(AT_FDCWD, path, flag) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(RemoveError::Sys { operation: "remove", path: path.to_path_buf(), source }),
    }
}

/// Remove everything in the open directory `dir` (at `path`).
fn empty_dir(dir: OwnedFd, path: &Path, fence: &Fence) -> Result<(), RemoveError> {
    let mut entries = Dir::from_fd(dir).map_err(sys("read directory", path))?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in entries.iter() {
        let entry = entry.map_err(sys("read directory", path))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    for name in names {
        let name = OsStr::from_bytes(&name);
        let child = path.join(name);
        let stat = fstatat(entries.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(sys("stat", &child))?;
        fence.check(&child, stat.st_dev)?;
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir {
            // RESOLVE_NO_XDEV: a bind mount of the same filesystem (same st_dev) still fails.
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS);
            let sub = openat2(entries.as_fd(), name, how).map_err(|source| match source {
                Errno::EXDEV => RemoveError::MountPoint { path: child.clone() },
                source => RemoveError::Sys { operation: "open", path: child.clone(), source },
            })?;
            empty_dir(sub, &child, fence)?;
        }
        let flag = if is_dir { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        match unlinkat(entries.as_fd(), name, flag) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EBUSY) => return Err(RemoveError::MountPoint { path: child }),
            Err(source) => return Err(RemoveError::Sys { operation: "remove", path: child, source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_tree_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        std::fs::create_dir_all(kept.join("inner")).unwrap();
        std::fs::write(kept.join("inner/file"), "x").unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir_all(gone.join("a/b")).unwrap();
        std::fs::write(gone.join("a/b/f"), "y").unwrap();
        std::os::unix::fs::symlink(&kept, gone.join("a/link")).unwrap();
        remove_all_one_filesystem(&gone).unwrap();
        assert!(!gone.exists());
        assert_eq!(std::fs::read_to_string(kept.join("inner/file")).unwrap(), "x");
        // Missing: fine.
        remove_all_one_filesystem(&gone).unwrap();
    }
}
