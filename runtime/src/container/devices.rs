//! The default device nodes and /dev symlinks every container gets.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

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
