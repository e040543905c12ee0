//! The default device nodes and /dev symlinks every container gets, and the spec's
//! `linux.devices`: made with mknod, or bind-mounted from the host's node of the same path
//! where mknod is not allowed (in a user namespace, or refused with EPERM), as runc does.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::mounts::{mount_bind, MountError, MountOptions};
use super::paths::secure_join;

/// Bind-mounted from the host: works the same whether or not mknod is allowed.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
];

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot bind device {device}")]
    Bind {
        device: String,
        #[source]
        source: MountError,
    },
    #[error("linux.devices: {path} is not a valid device path")]
    BadPath { path: PathBuf },
    #[error("linux.devices: {path} has type {kind:?}, which cannot be made (c, u, b or p only)")]
    BadType { path: PathBuf, kind: String },
    #[error("cannot create device {path}")]
    Mknod {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set the mode and owner of device {path}")]
    Owner {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create the directory of device {path}")]
    Parent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create symlink {path}")]
    Symlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Create the default devices and symlinks under `<rootfs>/dev`.
pub(super) fn create_default_devices(rootfs: &Path) -> Result<(), DeviceError> {
    let dev = rootfs.join("dev");
    let options = MountOptions { flags: MsFlags::MS_BIND, ..Default::default() };
    for name in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(name);
        let target = secure_join(rootfs, &Path::new("/dev").join(name));
        if target.exists() && !target.is_file() {
            continue; // the image or a spec mount already provides it
        }
        mount_bind(&host, &target, &options)
            .map_err(|source| DeviceError::Bind { device: host.display().to_string(), source })?;
    }
    for (target, link) in DEV_SYMLINKS {
        let path = dev.join(link);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        symlink(target, &path).map_err(|source| DeviceError::Symlink { path, source })?;
    }
    Ok(())
}

/// Make each of `linux.devices` under `rootfs` (bind mounts of the host's nodes when
/// `bind`: mknod in a user namespace makes nodes nobody may open).
pub(super) fn create_spec_devices(rootfs: &Path, devices: &[LinuxDevice], bind: bool) -> Result<(), DeviceError> {
    for device in devices {
        let path = device.path();
        if !path.is_absolute() || path.parent().is_none() {
            return Err(DeviceError::BadPath { path: path.clone() });
        }
        let target = secure_join(rootfs, path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DeviceError::Parent { path: path.clone(), source })?;
        }
        if bind {
            bind_host_node(path, &target)?;
            continue;
        }
        match make_node(device, &target) {
            Err(DeviceError::Mknod { source: nix::Error::EEXIST, .. }) => {}
            Err(DeviceError::Mknod { source: nix::Error::EPERM, .. }) => bind_host_node(path, &target)?,
            result => result?,
        }
    }
    Ok(())
}

fn make_node(device: &LinuxDevice, target: &Path) -> Result<(), DeviceError> {
    let kind = match device.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(DeviceError::BadType { path: device.path().clone(), kind: device.typ().as_str().to_string() })
        }
    };
    let mode = Mode::from_bits_truncate(device.file_mode().unwrap_or(0o666));
    let number = nix::sys::stat::makedev(device.major() as u64, device.minor() as u64);
    mknod(target, kind, mode, number).map_err(|source| DeviceError::Mknod { path: device.path().clone(), source })?;
    let owner_err = |source| DeviceError::Owner { path: device.path().clone(), source };
    // The umask may have taken bits away.
    nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, target, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
        .map_err(owner_err)?;
    let uid = device.uid().map(nix::unistd::Uid::from_raw);
    let gid = device.gid().map(nix::unistd::Gid::from_raw);
    nix::unistd::chown(target, uid.or(Some(nix::unistd::Uid::from_raw(0))), gid.or(Some(nix::unistd::Gid::from_raw(0))))
        .map_err(owner_err)
}

fn bind_host_node(path: &Path, target: &Path) -> Result<(), DeviceError> {
    let options = MountOptions { flags: MsFlags::MS_BIND, ..Default::default() };
    mount_bind(path, target, &options)
        .map_err(|source| DeviceError::Bind { device: path.display().to_string(), source })
}
