//! The spec's `mounts`, made inside the new rootfs before pivot_root.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;

use nix::sys::statvfs::{statvfs, FsFlags};

use crate::sys::mount_api::{self, attr};

use super::idmap::{self, IdmappedMount};
use super::paths::secure_join;
use super::userns;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount {source_desc} ({fstype}) on {target}")]
    Mount {
        source_desc: String,
        fstype: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot remount {target} with its options")]
    Remount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set the recursive mount attributes of {target}")]
    RecursiveAttrs {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set propagation of {target}")]
    Propagation {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Mount flags, the recursive attributes ("rro", "rnosuid", ...: MOUNT_ATTR_* bits to set
/// and clear with mount_setattr) and the leftover fs-specific data from an OCI options list.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub recursive_set: u64,
    pub recursive_clear: u64,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            recursive_set: 0,
            recursive_clear: 0,
            data: Vec::new(),
        }
    }
}

/// runtime-spec's recursive options: (name, clear, MOUNT_ATTR_* bit), as runc's table.
const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, attr::RDONLY),
    ("rrw", true, attr::RDONLY),
    ("rnosuid", false, attr::NOSUID),
    ("rsuid", true, attr::NOSUID),
    ("rnodev", false, attr::NODEV),
    ("rdev", true, attr::NODEV),
    ("rnoexec", false, attr::NOEXEC),
    ("rexec", true, attr::NOEXEC),
    ("rnodiratime", false, attr::NODIRATIME),
    ("rdiratime", true, attr::NODIRATIME),
    ("rrelatime", false, attr::RELATIME),
    ("rnorelatime", true, attr::RELATIME),
    ("rnoatime", false, attr::NOATIME),
    ("ratime", true, attr::NOATIME),
    ("rstrictatime", false, attr::STRICTATIME),
    ("rnostrictatime", true, attr::STRICTATIME),
    ("rnosymfollow", false, attr::NOSYMFOLLOW),
    ("rsymfollow", true, attr::NOSYMFOLLOW),
];

/// The names of the recursive options, for the features document.
pub(crate) fn recursive_option_names() -> impl Iterator<Item = &'static str> {
    RECURSIVE_OPTIONS.iter().map(|(name, _, _)| *name)
}

impl MountOptions {
    pub fn parse(options: &[String]) -> Self {
        let mut parsed = MountOptions::default();
        for option in options {
            let (clear, flag) = match option.as_str() {
                "defaults" => (false, MsFlags::empty()),
                "ro" => (false, MsFlags::MS_RDONLY),
                "rw" => (true, MsFlags::MS_RDONLY),
                "nosuid" => (false, MsFlags::MS_NOSUID),
                "suid" => (true, MsFlags::MS_NOSUID),
                "nodev" => (false, MsFlags::MS_NODEV),
                "dev" => (true, MsFlags::MS_NODEV),
                "noexec" => (false, MsFlags::MS_NOEXEC),
                "exec" => (true, MsFlags::MS_NOEXEC),
                "sync" => (false, MsFlags::MS_SYNCHRONOUS),
                "async" => (true, MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (false, MsFlags::MS_DIRSYNC),
                "remount" => (false, MsFlags::MS_REMOUNT),
                "mand" => (false, MsFlags::MS_MANDLOCK),
                "nomand" => (true, MsFlags::MS_MANDLOCK),
                "atime" => (true, MsFlags::MS_NOATIME),
                "noatime" => (false, MsFlags::MS_NOATIME),
                "diratime" => (true, MsFlags::MS_NODIRATIME),
                "nodiratime" => (false, MsFlags::MS_NODIRATIME),
                "relatime" => (false, MsFlags::MS_RELATIME),
                "norelatime" => (true, MsFlags::MS_RELATIME),
                "strictatime" => (false, MsFlags::MS_STRICTATIME),
                "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
                "bind" => (false, MsFlags::MS_BIND),
                "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
                "nosymfollow" => (false, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
                "symfollow" => (true, MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)),
                other => {
                    if let Some(propagation) = propagation_flag(other) {
                        parsed.propagation |= propagation;
                    } else if let Some((_, clear, bit)) = RECURSIVE_OPTIONS.iter().find(|(name, _, _)| *name == other) {
                        if *clear {
                            parsed.recursive_clear |= bit;
                        } else {
                            parsed.recursive_set |= bit;
                            // An atime value is set by clearing the whole field too.
                            if bit & attr::ATIME == *bit {
                                parsed.recursive_clear |= attr::ATIME;
                            }
                        }
                    } else {
                        parsed.data.push(other.to_string());
                    }
                    continue;
                }
            };
            if clear {
                parsed.flags.remove(flag);
            } else {
                parsed.flags.insert(flag);
            }
        }
        parsed
    }

    fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// Mount propagation named as in OCI options and `rootfsPropagation`.
pub(super) fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Make every spec mount under `rootfs`. `cgroup_views` are the container's cgroup
/// directories, shown at a mount of type "cgroup"; `idmapped` the detached trees of the
/// id-mapped mounts, by index.
pub(super) fn mount_all(
    rootfs: &Path,
    mounts: &[Mount],
    cgroup_views: &[(String, PathBuf)],
    idmapped: &[IdmappedMount],
) -> Result<(), MountError> {
    for (index, m) in mounts.iter().enumerate() {
        let target = secure_join(rootfs, m.destination());
        let options = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
        let fstype = m.typ().clone().unwrap_or_default();
        let source = m.source().clone().unwrap_or_default();
        mount_one(index, &source, &target, &fstype, &options, cgroup_views, idmapped)?;
        set_recursive_attrs(&target, &options)?;
    }
    Ok(())
}

/// One spec mount at `target`, by kind.
fn mount_one(
    index: usize,
    source: &Path,
    target: &Path,
    fstype: &str,
    options: &MountOptions,
    cgroup_views: &[(String, PathBuf)],
    idmapped: &[IdmappedMount],
) -> Result<(), MountError> {
    if let Some(tree) = idmapped.iter().find(|t| t.index == index) {
        return attach_idmapped(tree, source, target, options);
    }
    if fstype == "cgroup" || fstype == "cgroup2" {
        return mount_cgroup_views(target, options, cgroup_views);
    }
    if options.is_bind() {
        return mount_bind(source, target, options);
    }
    create_dir(target)?;
    match mount_fs(source, target, fstype, options) {
        // In a user namespace without a network namespace of its own, the kernel refuses a
        // new sysfs: bind the host's, as runc does.
        Err(MountError::Mount { source: nix::Error::EPERM, .. }) if fstype == "sysfs" => {
            let flags = options.flags | MsFlags::MS_BIND | MsFlags::MS_REC;
            let bind = MountOptions { flags, propagation: options.propagation, ..Default::default() };
            mount_bind(Path::new("/sys"), target, &bind)
        }
        result => result,
    }
}

/// "rro", "rnosuid", ...: on the mount at `target` and every mount below it.
fn set_recursive_attrs(target: &Path, options: &MountOptions) -> Result<(), MountError> {
    if options.recursive_set == 0 && options.recursive_clear == 0 {
        return Ok(());
    }
    mount_api::set_attrs(target, options.recursive_set, options.recursive_clear, true)
        .map_err(|source| MountError::RecursiveAttrs { target: target.to_path_buf(), source })
}

fn create_dir(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::MountPoint { path: path.to_path_buf(), source })
}

/// A bind mount point must be of the same kind as its source: a directory or a file.
fn create_mount_point_like(source: &Path, target: &Path) -> Result<(), MountError> {
    if source.is_dir() {
        return create_dir(target);
    }
    if let Some(parent) = target.parent() {
        create_dir(parent)?;
    }
    if !target.exists() {
        std::fs::File::create(target)
            .map_err(|source| MountError::MountPoint { path: target.to_path_buf(), source })?;
    }
    Ok(())
}

fn mount_fs(source: &Path, target: &Path, fstype: &str, options: &MountOptions) -> Result<(), MountError> {
    let data = options.data.join(",");
    mount(Some(source), target, Some(fstype), options.flags, (!data.is_empty()).then_some(data.as_str())).map_err(
        |e| MountError::Mount {
            source_desc: source.display().to_string(),
            fstype: fstype.to_string(),
            target: target.to_path_buf(),
            source: e,
        },
    )?;
    set_propagation(target, options.propagation)
}

/// Bind `source` (a host path) on `target`, then remount to apply ro/nosuid/... which a
/// plain MS_BIND ignores.
pub(super) fn mount_bind(source: &Path, target: &Path, options: &MountOptions) -> Result<(), MountError> {
    create_mount_point_like(source, target)?;
    let bind_flags = options.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    mount(Some(source), target, None::<&str>, bind_flags, None::<&str>).map_err(|e| MountError::Mount {
        source_desc: source.display().to_string(),
        fstype: "bind".to_string(),
        target: target.to_path_buf(),
        source: e,
    })?;
    let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        remount_bind(target, extra)?;
    }
    set_propagation(target, options.propagation)
}

/// An id-mapped bind: the prepared tree attached at `target`, then the other flags.
fn attach_idmapped(
    tree: &IdmappedMount,
    source: &Path,
    target: &Path,
    options: &MountOptions,
) -> Result<(), MountError> {
    create_mount_point_like(source, target)?;
    idmap::attach(tree, target).map_err(|e| MountError::Mount {
        source_desc: source.display().to_string(),
        fstype: "idmapped bind".to_string(),
        target: target.to_path_buf(),
        source: e,
    })?;
    let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        remount_bind(target, extra)?;
    }
    set_propagation(target, options.propagation)
}

pub(super) fn remount_bind(target: &Path, flags: MsFlags) -> Result<(), MountError> {
    let flags = if userns::in_user_namespace() { flags | locked_flags(target, flags) } else { flags };
    mount(None::<&str>, target, None::<&str>, flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT, None::<&str>)
        .map_err(|source| MountError::Remount { target: target.to_path_buf(), source })
}

/// In a user namespace, the flags a mount got from a more privileged mount namespace are
/// locked: a remount must repeat them (runc does the same). Atime flags only count when the
/// caller names none.
fn locked_flags(target: &Path, requested: MsFlags) -> MsFlags {
    let Ok(stat) = statvfs(target) else {
        return MsFlags::empty();
    };
    let mut pairs = vec![
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ];
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
    if !requested.intersects(atime) {
        pairs.extend([
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ]);
    }
    pairs.into_iter().filter(|(fs, _)| stat.flags().contains(*fs)).fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

fn set_propagation(target: &Path, propagation: MsFlags) -> Result<(), MountError> {
    if propagation.is_empty() {
        return Ok(());
    }
    mount(None::<&str>, target, None::<&str>, propagation, None::<&str>)
        .map_err(|source| MountError::Propagation { target: target.to_path_buf(), source })
}

/// Show the container's own cgroups at `target`: its cgroup2 directory itself on a pure v2
/// host, else a tmpfs with one bind mount per hierarchy (as runc does for v1).
fn mount_cgroup_views(
    target: &Path,
    options: &MountOptions,
    cgroup_views: &[(String, PathBuf)],
) -> Result<(), MountError> {
    let view_flags = (options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC)) | MsFlags::MS_BIND;
    let view_options = MountOptions { flags: view_flags, ..Default::default() };
    if let [(name, dir)] = cgroup_views {
        if name.is_empty() {
            return mount_bind(dir, target, &view_options);
        }
    }
    create_dir(target)?;
    let tmpfs_options = MountOptions {
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: vec!["mode=755".to_string()],
        ..Default::default()
    };
    mount_fs(Path::new("tmpfs"), target, "tmpfs", &tmpfs_options)?;
    for (name, dir) in cgroup_views {
        mount_bind(dir, &target.join(name), &view_options)?;
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        remount_bind(target, tmpfs_options.flags | MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> =
            ["nosuid", "rbind", "ro", "rprivate", "mode=755", "size=1k"].iter().map(|s| s.to_string()).collect();
        let parsed = MountOptions::parse(&opts);
        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(parsed.data, vec!["mode=755", "size=1k"]);
        let rw = MountOptions::parse(&["ro".to_string(), "rw".to_string()]);
        assert!(rw.flags.is_empty());
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        let opts: Vec<String> =
            ["rbind", "rro", "rnosuid", "rexec", "rnoatime", "nosymfollow"].iter().map(|s| s.to_string()).collect();
        let parsed = MountOptions::parse(&opts);
        assert_eq!(parsed.recursive_set, attr::RDONLY | attr::NOSUID | attr::NOATIME);
        assert_eq!(parsed.recursive_clear, attr::NOEXEC | attr::ATIME, "an atime value clears the field");
        assert!(parsed.flags.contains(MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)));
        assert!(parsed.data.is_empty(), "{:?}", parsed.data);
        let relatime = MountOptions::parse(&["rrelatime".to_string()]);
        assert_eq!((relatime.recursive_set, relatime.recursive_clear), (0, attr::ATIME));
    }
}
