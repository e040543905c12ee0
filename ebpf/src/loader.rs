//! Loading the socket load-balancer and attaching it to cgroups.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Link};
use aya::{Ebpf, EbpfLoader};

use crate::error::EbpfError;
use crate::layout::{Lb4Key, Lb4Value};
use crate::maps::LbMaps;
use crate::object::{CONNECT4_PROGRAM, SERVICES_MAP, SOCK_LB, SOCK_LB_PINNED};
use crate::pin::{self, Unpinned};
use crate::sys;
use crate::types::{ServiceList, MAX_BACKENDS};

/// Capacity of the maps, fixed when they are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries of the services map: one per frontend plus one per backend of
    /// each frontend, plus room for the next revision of the largest service
    /// while it is being replaced.
    pub services: u32,
}

impl MapSizes {
    /// Entries the services map needs for `frontends` frontends of `backends_each` backends:
    /// a master and the backend slots per frontend, plus one more revision of
    /// `MAX_BACKENDS` slots, which a replace holds until the old revision is removed.
    pub const fn services_needed(frontends: u32, backends_each: u32) -> u32 {
        frontends.saturating_mul(backends_each.saturating_add(1)).saturating_add(MAX_BACKENDS as u32)
    }
}

impl Default for MapSizes {
    /// 262,144 services entries: 10,000 Services of 10 endpoints with room to spare
    /// (about 20,000 single-port Services of 10 endpoints in all). The hash map is
    /// preallocated: each entry costs 96 bytes of kernel memory (the element header, the
    /// 12-byte key and value each rounded up to 16, its bucket), so 24 MiB for the map
    /// (`bpftool map show`: memlock 25,166,896 B; the former 65,536 entries: 6 MiB).
    fn default() -> Self {
        MapSizes { services: 262_144 }
    }
}

/// The loaded socket load-balancer: its `cgroup/connect4` program and maps.
pub struct SockLb {
    ebpf: Ebpf,
    services: HashMap<MapData, Lb4Key, Lb4Value>,
    /// Set when loaded by [`SockLb::load_pinned`]: maps and link live in this bpffs directory.
    pin_dir: Option<PathBuf>,
    maps_reused: bool,
}

impl SockLb {
    /// Load the programs and create their maps (max entries from [`MapSizes::default`]).
    pub fn load() -> Result<SockLb, EbpfError> {
        SockLb::load_with(MapSizes::default())
    }

    /// Load the programs and create their maps with the given capacity.
    pub fn load_with(sizes: MapSizes) -> Result<SockLb, EbpfError> {
        SockLb::load_object(SOCK_LB, EbpfLoader::new().set_max_entries(SERVICES_MAP, sizes.services), None)
    }

    /// Load with the maps pinned in `pin_dir` (a directory on a bpffs, created if needed;
    /// bpffs is mounted at /sys/fs/bpf when the directory is under it and nothing is
    /// mounted there). Maps already pinned there are reused with their contents, so a
    /// restarted agent sees what it programmed before; [`attach`](Self::attach) then pins
    /// the link there too, and nothing is detached when this value is dropped.
    pub fn load_pinned(sizes: MapSizes, pin_dir: &Path) -> Result<SockLb, EbpfError> {
        pin::prepare_pin_dir(pin_dir)?;
        let maps_reused = pin_dir.join(SERVICES_MAP).exists();
        let mut lb = SockLb::load_object(
            SOCK_LB_PINNED,
            EbpfLoader::new().set_max_entries(SERVICES_MAP, sizes.services).map_pin_path(pin_dir),
            Some(pin_dir.to_path_buf()),
        )?;
        lb.maps_reused = maps_reused;
        if maps_reused {
            tracing::info!(pin_dir = %pin_dir.display(), "reusing the pinned load-balancer maps");
        }
        Ok(lb)
    }

    /// Whether [`load_pinned`](Self::load_pinned) found the maps already pinned.
    pub fn maps_reused(&self) -> bool {
        self.maps_reused
    }

    /// Detach the link pinned in `pin_dir` (even while a process still holds it) and remove
    /// every pin there: the `nodelet proxy cleanup` path. Nothing pinned is not an error.
    pub fn unpin_and_detach(pin_dir: &Path) -> Result<Unpinned, EbpfError> {
        pin::unpin_and_detach(pin_dir)
    }

    /// The service table held by the maps pinned in `pin_dir`, without loading anything;
    /// `None` when nothing is pinned there.
    pub fn pinned_services(pin_dir: &Path) -> Result<Option<ServiceList>, EbpfError> {
        pin::pinned_services(pin_dir)
    }

    fn load_object(object: &[u8], loader: &mut EbpfLoader<'_>, pin_dir: Option<PathBuf>) -> Result<SockLb, EbpfError> {
        if object.is_empty() {
            return Err(EbpfError::ObjectNotBuilt);
        }
        let mut ebpf = loader.load(object).map_err(|source| EbpfError::Load(Box::new(source)))?;
        connect4(&mut ebpf)?
            .load()
            .map_err(|source| EbpfError::Program { name: CONNECT4_PROGRAM, source: Box::new(source) })?;
        let map = ebpf.take_map(SERVICES_MAP).ok_or(EbpfError::MapMissing { name: SERVICES_MAP })?;
        let services = HashMap::try_from(map).map_err(|source| EbpfError::Map {
            name: SERVICES_MAP,
            operation: "open",
            frontend: String::from("all frontends"),
            source: Box::new(source),
        })?;
        Ok(SockLb { ebpf, services, pin_dir, maps_reused: false })
    }

    /// Attach connect4 to a cgroup2 directory: sockets of every process in it
    /// and its descendants are load-balanced. The guard detaches on drop, unless the
    /// load-balancer was loaded pinned: then the link is pinned and outlives the guard.
    pub fn attach(&mut self, cgroup2_dir: &Path) -> Result<CgroupAttachment, EbpfError> {
        let cgroup = File::open(cgroup2_dir)
            .map_err(|source| EbpfError::OpenCgroup { path: cgroup2_dir.to_path_buf(), source })?;
        if let Some(pin_dir) = self.pin_dir.clone() {
            return self.attach_pinned(&cgroup, cgroup2_dir, &pin_dir);
        }
        let attach_error = |source| EbpfError::Attach {
            name: CONNECT4_PROGRAM,
            path: cgroup2_dir.to_path_buf(),
            source: Box::new(source),
        };
        let program = connect4(&mut self.ebpf)?;
        // A bpf_link (kernel >= 5.7): it lives as long as its fd, which the
        // guard owns, and never replaces programs others attached there.
        let link_id = program.attach(&cgroup, CgroupAttachMode::Single).map_err(attach_error)?;
        let link = program.take_link(link_id).map_err(attach_error)?;
        tracing::info!(cgroup = %cgroup2_dir.display(), "attached connect4 load-balancer");
        Ok(CgroupAttachment { link: Some(Attached::Owned(link)), cgroup: cgroup2_dir.to_path_buf(), reused: false })
    }

    /// Reuse the link pinned in `pin_dir` when it is attached to this cgroup, swapping in
    /// the program just loaded (one BPF_LINK_UPDATE, so no connect() goes unbalanced, and
    /// the running program is always the one using the maps this value programs). A pinned
    /// link of another cgroup, or a defunct one, is replaced.
    fn attach_pinned(&mut self, cgroup: &File, path: &Path, pin_dir: &Path) -> Result<CgroupAttachment, EbpfError> {
        let link_path = pin::link_pin_path(pin_dir);
        let pin_error = |operation, source| EbpfError::Pin { path: link_path.clone(), operation, source };
        let cgroup_id = pin::cgroup_id(cgroup, path)?;
        let program = connect4(&mut self.ebpf)?;
        let prog_fd = program
            .fd()
            .map_err(|source| EbpfError::Program { name: CONNECT4_PROGRAM, source: Box::new(source) })?
            .as_fd();
        if let Some(existing) = pin::open_link(pin_dir)? {
            let info = existing.info;
            if info.cgroup_id == cgroup_id && info.attach_type == sys::CGROUP_INET4_CONNECT {
                sys::link_update(existing.fd.as_fd(), prog_fd).map_err(|e| pin_error("replace the program of", e))?;
                tracing::info!(cgroup = %path.display(), link = info.id, "reusing the pinned connect4 link, program replaced");
                return Ok(CgroupAttachment {
                    link: Some(Attached::Pinned { _link: existing.fd }),
                    cgroup: path.to_path_buf(),
                    reused: true,
                });
            }
            tracing::warn!(
                link = info.id,
                cgroup_id = info.cgroup_id,
                "the pinned connect4 link is not attached to {}: replacing it",
                path.display()
            );
            // A defunct link (its cgroup removed) refuses detach; unpinning frees it anyway.
            if let Err(error) = sys::link_detach(existing.fd.as_fd()) {
                tracing::debug!(%error, "detach the previous pinned link");
            }
            std::fs::remove_file(&link_path).map_err(|e| pin_error("unpin", e))?;
        }
        let link = sys::link_create_cgroup(prog_fd, cgroup.as_fd(), sys::CGROUP_INET4_CONNECT)
            .map_err(|e| EbpfError::AttachPinned { path: path.to_path_buf(), source: e })?;
        if let Err(error) = sys::obj_pin(link.as_fd(), &link_path) {
            // Dropping `link` detaches it: nothing is left half-done.
            return Err(pin_error("pin", error));
        }
        tracing::info!(cgroup = %path.display(), pin = %link_path.display(), "attached and pinned connect4 load-balancer");
        Ok(CgroupAttachment { link: Some(Attached::Pinned { _link: link }), cgroup: path.to_path_buf(), reused: false })
    }

    /// Typed view of the maps.
    pub fn maps(&mut self) -> LbMaps<'_> {
        LbMaps::new(&mut self.services)
    }
}

fn connect4(ebpf: &mut Ebpf) -> Result<&mut CgroupSockAddr, EbpfError> {
    let missing = EbpfError::ProgramMissing { name: CONNECT4_PROGRAM };
    let program = ebpf.program_mut(CONNECT4_PROGRAM).ok_or(missing)?;
    program.try_into().map_err(|source| EbpfError::Program { name: CONNECT4_PROGRAM, source: Box::new(source) })
}

/// How the program is attached.
enum Attached {
    /// Owned by this process: detached with the guard.
    Owned(CgroupSockAddrLink),
    /// Pinned in bpffs: the fd is only our handle, the pin keeps the link attached.
    Pinned { _link: OwnedFd },
}

/// connect4 attached to one cgroup; detached when dropped or by [`detach`](Self::detach),
/// unless pinned (see [`SockLb::load_pinned`]).
#[must_use = "dropping the attachment detaches the program (unless pinned)"]
pub struct CgroupAttachment {
    link: Option<Attached>,
    cgroup: PathBuf,
    reused: bool,
}

impl CgroupAttachment {
    /// The cgroup2 directory the program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Whether the attachment is pinned (it stays when this guard is dropped).
    pub fn is_pinned(&self) -> bool {
        matches!(self.link, Some(Attached::Pinned { .. }))
    }

    /// Whether a link pinned by an earlier run was reused.
    pub fn reused_pinned_link(&self) -> bool {
        self.reused
    }

    /// Detach now, reporting failure (dropping detaches too, but only logs). A pinned
    /// attachment is only released: use [`SockLb::unpin_and_detach`] to remove it.
    pub fn detach(mut self) -> Result<(), EbpfError> {
        self.detach_link()
    }

    fn detach_link(&mut self) -> Result<(), EbpfError> {
        match self.link.take() {
            Some(Attached::Owned(link)) => link
                .detach()
                .map_err(|source| EbpfError::Detach { path: self.cgroup.clone(), source: Box::new(source) }),
            Some(Attached::Pinned { .. }) | None => Ok(()),
        }
    }
}

impl Drop for CgroupAttachment {
    fn drop(&mut self) {
        if !matches!(self.link, Some(Attached::Owned(_))) {
            return;
        }
        if let Err(error) = self.detach_link() {
            tracing::warn!(error = %error, "detach connect4 load-balancer");
        } else {
            tracing::debug!(cgroup = %self.cgroup.display(), "detached connect4 load-balancer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_hold_ten_thousand_services_of_ten_endpoints() {
        let needed = MapSizes::services_needed(10_000, 10);
        assert_eq!(needed, 110_000 + 1_024);
        assert!(MapSizes::default().services >= needed, "{:?} < {needed}", MapSizes::default());
        // The former default (65,536) did not.
        assert!(65_536 < needed);
    }

    #[test]
    fn services_needed_saturates() {
        assert_eq!(MapSizes::services_needed(u32::MAX, 10), u32::MAX);
    }
}
