//! Turning the bundle's rootfs into the container's "/": propagation, pivot_root, and the
//! masked and read-only paths applied afterwards.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};

use super::mounts::{propagation_flag, remount_bind, MountError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot make mount propagation of / {propagation}")]
    Propagation {
        propagation: String,
        #[source]
        source: nix::Error,
    },
    #[error("unknown rootfs propagation {0:?}")]
    UnknownPropagation(String),
    #[error("cannot bind rootfs {path} onto itself")]
    BindRootfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot pivot_root into {path}")]
    PivotRoot {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot detach the old root after pivot_root")]
    DetachOldRoot(#[source] nix::Error),
    #[error("cannot mask {path}")]
    Mask {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot make {path} read-only")]
    ReadOnly {
        path: PathBuf,
        #[source]
        source: MountError,
    },
    #[error("cannot bind {path} onto itself")]
    BindSelf {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Stop mount events from leaking to the host, and make the rootfs a mount point (needed by
/// pivot_root).
pub(super) fn prepare(rootfs: &Path) -> Result<(), RootfsError> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|source| RootfsError::Propagation { propagation: "rprivate".to_string(), source })?;
    mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|source| RootfsError::BindRootfs { path: rootfs.to_path_buf(), source })
}

/// pivot_root with the old root stacked on the new one, then lazily detach it: no path of
/// the host stays reachable.
pub(super) fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let pivot_err = |source| RootfsError::PivotRoot { path: rootfs.to_path_buf(), source };
    chdir(rootfs).map_err(pivot_err)?;
    pivot_root(".", ".").map_err(pivot_err)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(RootfsError::DetachOldRoot)?;
    chdir("/").map_err(pivot_err)
}

/// Without pivot_root (a rootfs on ramfs, where pivot_root fails): move the rootfs mount
/// over "/" and chroot into it, as runc's `--no-pivot` does. The old root stays reachable
/// to a process that can escape the chroot, which is why pivot is the default.
pub(super) fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let move_err = |source| RootfsError::PivotRoot { path: rootfs.to_path_buf(), source };
    chdir(rootfs).map_err(move_err)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(move_err)?;
    nix::unistd::chroot(".").map_err(move_err)?;
    chdir("/").map_err(move_err)
}

/// Apply `linux.rootfsPropagation` to the new root, when given.
pub(super) fn set_root_propagation(propagation: Option<&str>) -> Result<(), RootfsError> {
    let Some(name) = propagation else {
        return Ok(());
    };
    let flags = propagation_flag(name).ok_or_else(|| RootfsError::UnknownPropagation(name.to_string()))?;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
        .map_err(|source| RootfsError::Propagation { propagation: name.to_string(), source })
}

/// Hide each path: an empty read-only tmpfs over directories, /dev/null over files.
pub(super) fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    for path in paths.iter().map(Path::new) {
        let Ok(meta) = path.metadata() else {
            continue; // nothing to hide
        };
        let result = if meta.is_dir() {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
        } else {
            mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        };
        result.map_err(|source| RootfsError::Mask { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// Bind each path onto itself and remount it read-only, keeping its other flags.
pub(super) fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    for path in paths.iter().map(Path::new) {
        if path.symlink_metadata().is_err() {
            continue;
        }
        mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|source| RootfsError::BindSelf { path: path.to_path_buf(), source })?;
        make_readonly(path)?;
    }
    Ok(())
}

/// Remount the mount at `path` read-only.
pub(super) fn make_readonly(path: &Path) -> Result<(), RootfsError> {
    remount_bind(path, existing_flags(path) | MsFlags::MS_RDONLY)
        .map_err(|source| RootfsError::ReadOnly { path: path.to_path_buf(), source })
}

/// A read-only bind remount must repeat nosuid/nodev/noexec or the kernel may refuse it.
fn existing_flags(path: &Path) -> MsFlags {
    let Ok(stat) = statvfs(path) else {
        return MsFlags::empty();
    };
    let mut flags = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if stat.flags().contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    flags
}
