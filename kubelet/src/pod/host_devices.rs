//! The host's device nodes, which a privileged container gets all of (containerd's
//! WithDevices of oci.HostDevices).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
#[error("list host devices under {path}")]
pub struct HostDevicesError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Directories of /dev that are not devices of the host to hand over.
const SKIPPED: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".udev"];

/// Every block and character device under `dev`, with its numbers, mode and owner.
pub fn host_devices(dev: &Path) -> Result<Vec<LinuxDevice>, HostDevicesError> {
    let mut devices = Vec::new();
    collect(dev, &mut devices)?;
    devices.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(devices)
}

fn collect(dir: &Path, devices: &mut Vec<LinuxDevice>) -> Result<(), HostDevicesError> {
    let error = |source| HostDevicesError { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(error)? {
        let entry = entry.map_err(error)?;
        let path = entry.path();
        // Gone meanwhile (hotplug): skip it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let kind = meta.file_type();
        if kind.is_dir() {
            if !SKIPPED.iter().any(|s| entry.file_name() == *s) {
                collect(&path, devices)?;
            }
            continue;
        }
        let typ = if kind.is_block_device() {
            LinuxDeviceType::B
        } else if kind.is_char_device() {
            LinuxDeviceType::C
        } else {
            continue;
        };
        // /dev/console is the container's own terminal, as runc treats it.
        if path == Path::new("/dev/console") {
            continue;
        }
        let rdev = meta.rdev();
        let mut device = LinuxDevice::default();
        device.set_path(path);
        device.set_typ(typ);
        device.set_major(i64::from(nix::sys::stat::major(rdev) as u32));
        device.set_minor(i64::from(nix::sys::stat::minor(rdev) as u32));
        device.set_file_mode(Some(meta.mode() & 0o7777));
        device.set_uid(Some(meta.uid()));
        device.set_gid(Some(meta.gid()));
        devices.push(device);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_null_and_skips_pts() {
        let devices = host_devices(Path::new("/dev")).expect("devices");
        let null = devices.iter().find(|d| d.path() == Path::new("/dev/null")).expect("/dev/null");
        assert_eq!((null.typ(), null.major(), null.minor()), (LinuxDeviceType::C, 1, 3));
        assert!(devices.iter().all(|d| !d.path().starts_with("/dev/pts")));
    }
}
