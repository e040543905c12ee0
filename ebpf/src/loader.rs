//! Loading the socket load-balancer; attaching it is `attachment`'s job.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::{Ebpf, EbpfLoader, Pod};

use crate::attachment::{self, CgroupAttachment};
use crate::error::EbpfError;
use crate::layout::{Lb4AffinityKey, Lb4AffinityValue, Lb4Key, Lb4ReverseKey, Lb4ReverseValue, Lb4Value};
use crate::maps::{self, LbMaps};
use crate::object::{AFFINITY_MAP, PROGRAMS, REVERSE_MAP, SERVICES_MAP, SOCK_LB, SOCK_LB_PINNED};
use crate::pin::{self, Unpinned};
use crate::types::{AffinityEntry, ReverseNat, ServiceList, MAX_BACKENDS};

/// Capacity of the maps, fixed when they are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries of the services map: one per frontend plus one per backend of
    /// each frontend, plus room for the next revision of the largest service
    /// while it is being replaced.
    pub services: u32,
    /// Entries of the reverse-translation map (LRU): one per socket connected to a
    /// frontend, plus one per unconnected UDP socket and backend it sent to. When full,
    /// the least recently used entry makes room.
    pub reverse_nat: u32,
    /// Entries of the session-affinity map (LRU): one per client (network namespace) and
    /// frontend with `sessionAffinity: ClientIP` it connected to. When full, the least
    /// recently used entry makes room (that client's next connection picks afresh).
    pub affinity: u32,
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
    ///
    /// 262,144 reverse-translation entries, as cilium's `lb4_reverse_sk`: that many
    /// sockets talking to Services at once before the idlest is evicted. Preallocated
    /// too, 88 bytes an entry (16-byte key, 8-byte value): 22 MiB (`bpftool map show`:
    /// memlock 23,069,568 B).
    ///
    /// 65,536 session-affinity entries, as cilium's `cilium_lb4_affinity`: clients times
    /// sticky Services. Preallocated, about 100 bytes an entry (16-byte key, 24-byte
    /// value): 6 MiB.
    fn default() -> Self {
        MapSizes { services: 262_144, reverse_nat: 262_144, affinity: 65_536 }
    }
}

/// The loaded socket load-balancer: its four cgroup programs (`connect4`, `sendmsg4`,
/// `recvmsg4`, `getpeername4`) and their maps.
pub struct SockLb {
    ebpf: Ebpf,
    services: HashMap<MapData, Lb4Key, Lb4Value>,
    reverse: HashMap<MapData, Lb4ReverseKey, Lb4ReverseValue>,
    affinity: HashMap<MapData, Lb4AffinityKey, Lb4AffinityValue>,
    /// Set when loaded by [`SockLb::load_pinned`]: maps and links live in this bpffs directory.
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
        SockLb::load_object(SOCK_LB, sizes.apply(&mut EbpfLoader::new()), None)
    }

    /// Load with the maps pinned in `pin_dir` (a directory on a bpffs, created if needed;
    /// bpffs is mounted at /sys/fs/bpf when the directory is under it and nothing is
    /// mounted there). Maps already pinned there are reused with their contents, so a
    /// restarted agent sees what it programmed before; [`attach`](Self::attach) then pins
    /// the links there too, and nothing is detached when this value is dropped.
    ///
    /// A pinned map of another layout (pinned by another nodelet version) is recreated,
    /// with a log line naming it; when its layout is an older one the current layout
    /// appends to, its entries are copied into the new map before this returns, so the
    /// programs swapped in by [`attach`](Self::attach) find the services in place.
    pub fn load_pinned(sizes: MapSizes, pin_dir: &Path) -> Result<SockLb, EbpfError> {
        pin::prepare_pin_dir(pin_dir)?;
        let stale = pin::set_aside_stale_maps(pin_dir)?;
        let services_carried_over = stale.iter().any(|map| map.name() == SERVICES_MAP && map.carries_over());
        let maps_reused = pin_dir.join(SERVICES_MAP).exists() || services_carried_over;
        let loaded = SockLb::load_object(
            SOCK_LB_PINNED,
            sizes.apply(&mut EbpfLoader::new()).map_pin_path(pin_dir),
            Some(pin_dir.to_path_buf()),
        );
        let mut lb = match loaded {
            Ok(lb) => lb,
            Err(error) => {
                stale.into_iter().for_each(pin::StaleMap::restore);
                return Err(error);
            }
        };
        stale.into_iter().for_each(pin::StaleMap::carry_over);
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

    /// Detach the links pinned in `pin_dir` (even while a process still holds them) and
    /// remove every pin there: the `nodelet proxy cleanup` path. Nothing pinned is not an
    /// error.
    pub fn unpin_and_detach(pin_dir: &Path) -> Result<Unpinned, EbpfError> {
        pin::unpin_and_detach(pin_dir)
    }

    /// The service table held by the maps pinned in `pin_dir`, without loading anything;
    /// `None` when nothing is pinned there.
    pub fn pinned_services(pin_dir: &Path) -> Result<Option<ServiceList>, EbpfError> {
        pin::pinned_services(pin_dir)
    }

    /// Load every program of the object (all or none: an error drops what was loaded).
    fn load_object(object: &[u8], loader: &mut EbpfLoader<'_>, pin_dir: Option<PathBuf>) -> Result<SockLb, EbpfError> {
        if object.is_empty() {
            return Err(EbpfError::ObjectNotBuilt);
        }
        let mut ebpf = loader.load(object).map_err(|source| EbpfError::Load(Box::new(source)))?;
        for spec in &PROGRAMS {
            attachment::program_mut(&mut ebpf, spec)?
                .load()
                .map_err(|source| EbpfError::Program { name: spec.name, source: Box::new(source) })?;
        }
        let services = take_hash_map(&mut ebpf, SERVICES_MAP)?;
        let reverse = take_hash_map(&mut ebpf, REVERSE_MAP)?;
        let affinity = take_hash_map(&mut ebpf, AFFINITY_MAP)?;
        Ok(SockLb { ebpf, services, reverse, affinity, pin_dir, maps_reused: false })
    }

    /// Attach every program to a cgroup2 directory, all or none: sockets of every process
    /// in it and its descendants are load-balanced. The guard detaches on drop, unless the
    /// load-balancer was loaded pinned: then the links are pinned and outlive the guard
    /// (links pinned by an earlier run on the same cgroup are reused, their programs
    /// swapped for the ones just loaded).
    pub fn attach(&mut self, cgroup2_dir: &Path) -> Result<CgroupAttachment, EbpfError> {
        let cgroup = File::open(cgroup2_dir)
            .map_err(|source| EbpfError::OpenCgroup { path: cgroup2_dir.to_path_buf(), source })?;
        match &self.pin_dir {
            Some(pin_dir) => attachment::attach_pinned(&mut self.ebpf, &cgroup, cgroup2_dir, pin_dir),
            None => attachment::attach_owned(&mut self.ebpf, &cgroup, cgroup2_dir),
        }
    }

    /// Typed view of the services map.
    pub fn maps(&mut self) -> LbMaps<'_> {
        LbMaps::new(&mut self.services)
    }

    /// The reverse translations the programs recorded (one per socket and backend), for
    /// diagnostics and tests.
    pub fn reverse_nat(&self) -> Result<Vec<ReverseNat>, EbpfError> {
        maps::reverse_nat(&self.reverse)
    }

    /// The backends the programs remembered for clients of frontends with session
    /// affinity, for diagnostics and tests.
    pub fn affinity(&self) -> Result<Vec<AffinityEntry>, EbpfError> {
        maps::affinity(&self.affinity)
    }
}

impl MapSizes {
    fn apply<'a, 'b>(&self, loader: &'a mut EbpfLoader<'b>) -> &'a mut EbpfLoader<'b> {
        loader
            .set_max_entries(SERVICES_MAP, self.services)
            .set_max_entries(REVERSE_MAP, self.reverse_nat)
            .set_max_entries(AFFINITY_MAP, self.affinity)
    }
}

fn take_hash_map<K: Pod, V: Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<HashMap<MapData, K, V>, EbpfError> {
    let map = ebpf.take_map(name).ok_or(EbpfError::MapMissing { name })?;
    HashMap::try_from(map).map_err(|source| EbpfError::Map {
        name,
        operation: "open",
        frontend: String::from("all entries"),
        source: Box::new(source),
    })
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
