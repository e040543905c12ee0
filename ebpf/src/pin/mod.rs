//! Pinning in bpffs: the pin directory, the pinned cgroup links, and removing them.
//!
//! A pin directory holds the maps (by their names, pinned by aya at load) and one bpf_link
//! per program (`ProgramSpec::link_pin`). While the pins exist the programs stay attached
//! and the maps keep serving, whether or not a nodelet process runs.
//!
//! A map pinned by a nodelet of another map layout is not reused: `stale` sets it aside.

mod stale;

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData};

pub(crate) use stale::{set_aside_stale_maps, StaleMap};

use crate::error::EbpfError;
use crate::layout::{Lb4Key, Lb6Key, ServiceKey};
use crate::maps::ServicesMap;
use crate::object::{MapSpec, MAPS, PROGRAMS, SERVICES6_MAP_SPEC, SERVICES_MAP_SPEC};
use crate::sys::{self, LinkInfo};
use crate::types::ServiceList;

/// Where bpffs is mounted by convention (systemd, cilium, bpftool).
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Make `pin_dir` a directory on a bpffs. When it lies under `/sys/fs/bpf` and nothing is
/// mounted there yet, bpffs is mounted there first, as cilium's agent does; anywhere else a
/// missing bpffs is an error (we never mount over someone's directory).
pub(crate) fn prepare_pin_dir(pin_dir: &Path) -> Result<(), EbpfError> {
    let error = |reason: String| EbpfError::PinDir { path: pin_dir.to_path_buf(), reason };
    if !pin_dir.is_absolute() {
        return Err(error(String::from("must be an absolute path")));
    }
    let ancestor = existing_ancestor(pin_dir);
    if !is_bpffs(&ancestor) {
        let root = Path::new(BPFFS_ROOT);
        if pin_dir.starts_with(root) && ancestor.starts_with(root) && root.is_dir() {
            mount_bpffs(root).map_err(|e| error(format!("mounting bpffs at {BPFFS_ROOT}: {e}")))?;
        } else {
            return Err(error(format!("{} is not on a bpffs (mount -t bpf bpffs DIR)", ancestor.display())));
        }
    }
    fs::create_dir_all(pin_dir).map_err(|e| error(format!("creating it: {e}")))
}

fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/")).to_path_buf()
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn mount_bpffs(target: &Path) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    tracing::info!(target = %target.display(), "mounting bpffs for the pinned load-balancer");
    mount(Some("bpffs"), target, Some("bpf"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
}

/// The pinned link, opened.
pub(crate) struct PinnedLink {
    pub fd: OwnedFd,
    pub info: LinkInfo,
}

/// The link pinned at `path`, if any.
pub(crate) fn open_link(path: &Path) -> Result<Option<PinnedLink>, EbpfError> {
    let path = path.to_path_buf();
    let fd = match sys::obj_get(&path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EbpfError::Pin { path, operation: "open", source }),
    };
    let info =
        sys::link_info(fd.as_fd()).map_err(|source| EbpfError::Pin { path, operation: "read info of", source })?;
    Ok(Some(PinnedLink { fd, info }))
}

/// The cgroup id of a cgroup2 directory: its inode number on cgroupfs (what bpf_link_info's
/// cgroup_id reports).
pub(crate) fn cgroup_id(cgroup: &fs::File, path: &Path) -> Result<u64, EbpfError> {
    cgroup.metadata().map(|m| m.ino()).map_err(|source| EbpfError::OpenCgroup { path: path.to_path_buf(), source })
}

/// What [`unpin_and_detach`](crate::SockLb::unpin_and_detach) removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpinned {
    /// Pinned links were found, detached and unpinned (one per program).
    pub link: bool,
    /// Pinned maps removed.
    pub maps: usize,
}

pub(crate) fn unpin_and_detach(pin_dir: &Path) -> Result<Unpinned, EbpfError> {
    let mut unpinned = Unpinned::default();
    // The forward hooks first, as when an attachment is dropped.
    for spec in PROGRAMS.iter().rev() {
        let path = pin_dir.join(spec.link_pin);
        let Some(link) = open_link(&path)? else {
            continue;
        };
        // Detach first: a running agent may still hold the link's fd, and removing the pin
        // alone would leave the program attached until that process exits.
        sys::link_detach(link.fd.as_fd()).map_err(|source| EbpfError::Pin {
            path: path.clone(),
            operation: "detach",
            source,
        })?;
        fs::remove_file(&path).map_err(|source| EbpfError::Pin { path, operation: "unpin", source })?;
        tracing::info!(link = link.info.id, hook = spec.hook, pin_dir = %pin_dir.display(), "detached and unpinned");
        unpinned.link = true;
    }
    for map in MAPS {
        let path = pin_dir.join(map.name);
        match fs::remove_file(&path) {
            Ok(()) => unpinned.maps += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(EbpfError::Pin { path, operation: "unpin", source }),
        }
    }
    // Only our pins live there; a directory someone else filled is left alone.
    match fs::remove_dir(pin_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(pin_dir = %pin_dir.display(), error = %e, "pin directory left in place"),
    }
    Ok(unpinned)
}

/// The service table held by the services maps pinned in `pin_dir` (IPv4 frontends first);
/// `None` when neither is pinned. A nodelet from before IPv6 pinned only the IPv4 map.
pub(crate) fn pinned_services(pin_dir: &Path) -> Result<Option<ServiceList>, EbpfError> {
    let v4 = pinned_family::<Lb4Key>(pin_dir, &SERVICES_MAP_SPEC)?;
    let v6 = pinned_family::<Lb6Key>(pin_dir, &SERVICES6_MAP_SPEC)?;
    if v4.is_none() && v6.is_none() {
        return Ok(None);
    }
    Ok(Some(v4.into_iter().chain(v6).flatten().collect()))
}

/// The frontends of one family's services map pinned in `pin_dir`, if it is pinned.
fn pinned_family<K: ServiceKey>(pin_dir: &Path, spec: &MapSpec) -> Result<Option<ServiceList>, EbpfError> {
    let path = pin_dir.join(spec.name);
    if !path.exists() {
        return Ok(None);
    }
    if let Some(reason) = stale::layout_mismatch(&path, spec)? {
        return Err(EbpfError::PinnedMapLayout { path, reason });
    }
    let open_error = |source| EbpfError::Map {
        name: spec.name,
        operation: "open pinned",
        frontend: String::from("all frontends"),
        source: Box::new(source),
    };
    let data = MapData::from_pin(&path).map_err(open_error)?;
    let mut services: HashMap<MapData, K, K::Value> = HashMap::try_from(Map::HashMap(data)).map_err(open_error)?;
    ServicesMap::new(&mut services).services().map(Some)
}
