//! Loading the socket load-balancer; attaching it is `attachment`'s job.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::{Ebpf, EbpfLoader, Pod};

use crate::attachment::{self, CgroupAttachment};
use crate::error::EbpfError;
use crate::layout::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Key, Lb4ReverseKey, Lb4ReverseValue, Lb4Value, Lb6AffinityKey,
    Lb6AffinityValue, Lb6Key, Lb6ReverseKey, Lb6ReverseValue, Lb6Value,
};
use crate::maps::{self, LbMaps};
use crate::object::{
    AFFINITY6_MAP, AFFINITY_MAP, PROGRAMS, REVERSE6_MAP, REVERSE_MAP, SERVICES6_MAP, SERVICES_MAP, SOCK_LB,
    SOCK_LB_PINNED,
};
use crate::pin::{self, Unpinned};
use crate::types::{AffinityEntry, ReverseNat, ServiceList, MAX_BACKENDS};

/// Capacity of the maps, fixed when they are created. Each address family has its own
/// maps: the fields without a suffix size the IPv4 maps, those ending in 6 the IPv6 maps.
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
    /// As `services`, for the IPv6 frontends.
    pub services6: u32,
    /// As `reverse_nat`, for sockets talking to IPv6 frontends.
    pub reverse_nat6: u32,
    /// As `affinity`, for IPv6 frontends.
    pub affinity6: u32,
}

impl MapSizes {
    /// Entries a services map needs for `frontends` frontends of `backends_each` backends:
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
    ///
    /// The IPv6 maps get a quarter as many entries: 65,536, 65,536 and 16,384 (about 5,000
    /// dual-stack Services of 10 endpoints, with their sockets). Their keys and values are
    /// larger (24 and 28 bytes, 32 and 20, 32 and 32), so at full size they would cost 68 MiB
    /// more on every node, IPv6 Services or not (cilium creates its lb6 maps only when IPv6
    /// is on); at these sizes about 17 MiB. A node with many IPv6 Services raises them.
    fn default() -> Self {
        MapSizes {
            services: 262_144,
            reverse_nat: 262_144,
            affinity: 65_536,
            services6: 65_536,
            reverse_nat6: 65_536,
            affinity6: 16_384,
        }
    }
}

/// The loaded socket load-balancer: its eight cgroup programs (`connect4`, `sendmsg4`,
/// `recvmsg4`, `getpeername4` and their IPv6 twins) and their maps.
pub struct SockLb {
    ebpf: Ebpf,
    services: HashMap<MapData, Lb4Key, Lb4Value>,
    reverse: HashMap<MapData, Lb4ReverseKey, Lb4ReverseValue>,
    affinity: HashMap<MapData, Lb4AffinityKey, Lb4AffinityValue>,
    services6: HashMap<MapData, Lb6Key, Lb6Value>,
    reverse6: HashMap<MapData, Lb6ReverseKey, Lb6ReverseValue>,
    affinity6: HashMap<MapData, Lb6AffinityKey, Lb6AffinityValue>,
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
        let services_maps = [SERVICES_MAP, SERVICES6_MAP];
        let services_carried_over = stale.iter().any(|map| services_maps.contains(&map.name()) && map.carries_over());
        let maps_reused = services_maps.iter().any(|name| pin_dir.join(name).exists()) || services_carried_over;
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

    /// The service table held by the maps pinned in `pin_dir` (both families), without
    /// loading anything; `None` when nothing is pinned there.
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
        let services6 = take_hash_map(&mut ebpf, SERVICES6_MAP)?;
        let reverse6 = take_hash_map(&mut ebpf, REVERSE6_MAP)?;
        let affinity6 = take_hash_map(&mut ebpf, AFFINITY6_MAP)?;
        Ok(SockLb { ebpf, services, reverse, affinity, services6, reverse6, affinity6, pin_dir, maps_reused: false })
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

    /// Typed view of the services maps (IPv4 and IPv6 frontends alike).
    pub fn maps(&mut self) -> LbMaps<'_> {
        LbMaps::new(&mut self.services, &mut self.services6)
    }

    /// The reverse translations the programs recorded (one per socket and backend, both
    /// families), sorted, for diagnostics and tests.
    pub fn reverse_nat(&self) -> Result<Vec<ReverseNat>, EbpfError> {
        let mut entries = maps::snapshot(&self.reverse, REVERSE_MAP, |key, value| Ok(key.entry(value)))?;
        entries.extend(maps::snapshot(&self.reverse6, REVERSE6_MAP, |key, value| Ok(key.entry(value)))?);
        entries.sort();
        Ok(entries)
    }

    /// The backends the programs remembered for clients of frontends with session
    /// affinity (both families), sorted, for diagnostics and tests.
    pub fn affinity(&self) -> Result<Vec<AffinityEntry>, EbpfError> {
        let mut entries = maps::snapshot(&self.affinity, AFFINITY_MAP, |key, value| key.entry(value))?;
        entries.extend(maps::snapshot(&self.affinity6, AFFINITY6_MAP, |key, value| key.entry(value))?);
        entries.sort();
        Ok(entries)
    }
}

impl MapSizes {
    fn apply<'a, 'b>(&self, loader: &'a mut EbpfLoader<'b>) -> &'a mut EbpfLoader<'b> {
        loader
            .set_max_entries(SERVICES_MAP, self.services)
            .set_max_entries(REVERSE_MAP, self.reverse_nat)
            .set_max_entries(AFFINITY_MAP, self.affinity)
            .set_max_entries(SERVICES6_MAP, self.services6)
            .set_max_entries(REVERSE6_MAP, self.reverse_nat6)
            .set_max_entries(AFFINITY6_MAP, self.affinity6)
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
    fn ipv6_maps_are_a_quarter_of_the_ipv4_ones_by_default() {
        let sizes = MapSizes::default();
        assert_eq!(
            (sizes.services6 * 4, sizes.reverse_nat6 * 4, sizes.affinity6 * 4),
            (sizes.services, sizes.reverse_nat, sizes.affinity)
        );
        // Room for 5,000 dual-stack Services of 10 endpoints.
        assert!(MapSizes::services_needed(5_000, 10) <= sizes.services6);
    }

    #[test]
    fn services_needed_saturates() {
        assert_eq!(MapSizes::services_needed(u32::MAX, 10), u32::MAX);
    }
}
