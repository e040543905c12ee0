//! Typed reads and writes of the services map, ordered so that a concurrent
//! connect() never sees a half-written service (see `bpf/lb.h`), and reads of the
//! reverse-translation and session-affinity maps, which only the programs write.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aya::maps::{HashMap, MapData, MapError};

use crate::error::EbpfError;
use crate::layout::{
    ip4_from_wire, Lb4AffinityKey, Lb4AffinityValue, Lb4Key, Lb4ReverseKey, Lb4ReverseValue, Lb4Value, MASTER_SLOT,
};
use crate::object::{AFFINITY_MAP, REVERSE_MAP, SERVICES_MAP};
use crate::types::{
    AffinityEntry, Backend, Frontend, Protocol, ReverseNat, ServiceEntry, ServiceList, SessionAffinity, MAX_BACKENDS,
};

/// Typed view of the maps: no raw bytes leave this crate.
pub struct LbMaps<'a> {
    services: &'a mut HashMap<MapData, Lb4Key, Lb4Value>,
}

/// A frontend's master entry as read from the map.
#[derive(Clone, Copy)]
struct Master {
    count: u16,
    rev: u16,
}

impl<'a> LbMaps<'a> {
    pub(crate) fn new(services: &'a mut HashMap<MapData, Lb4Key, Lb4Value>) -> LbMaps<'a> {
        LbMaps { services }
    }

    /// Insert or replace a frontend with its backends (empty = reject with
    /// ECONNREFUSED) and session affinity. The new set is written under a fresh revision,
    /// then the master flips to it (and to the new affinity) in one update, then the old
    /// revision is removed.
    pub fn upsert_service(&mut self, frontend: Frontend, entry: &ServiceEntry) -> Result<(), EbpfError> {
        let backends = entry.backends.as_slice();
        let frontend_ip = ipv4_of(&frontend, frontend.ip)?;
        if entry.affinity == (SessionAffinity::ClientIp { timeout_seconds: 0 }) {
            return Err(EbpfError::AffinityTimeout { frontend });
        }
        let count = u16::try_from(backends.len())
            .ok()
            .filter(|count| usize::from(*count) <= MAX_BACKENDS)
            .ok_or(EbpfError::TooManyBackends { frontend, count: backends.len(), max: MAX_BACKENDS })?;
        let slots = backends
            .iter()
            .map(|backend| Ok(Lb4Value::slot(ipv4_of(&frontend, backend.ip)?, backend)))
            .collect::<Result<Vec<_>, EbpfError>>()?;

        let master_key = Lb4Key::new(frontend_ip, &frontend, MASTER_SLOT, 0);
        let old = self.master(&frontend, &master_key)?;
        let rev = old.map_or(1, |old| old.rev.wrapping_add(1));

        if let Err(error) = self.write_slots(&frontend, master_key, rev, &slots) {
            // Nothing points at the new revision yet: drop what was written.
            self.remove_slots(&frontend, master_key, rev, count);
            return Err(error);
        }
        self.insert(&frontend, &master_key, &Lb4Value::master(count, rev, entry.affinity), "flip master")?;
        if let Some(old) = old {
            self.remove_slots(&frontend, master_key, old.rev, old.count);
        }
        Ok(())
    }

    /// Remove a frontend: its connections are no longer rewritten. Removing
    /// an unknown frontend is not an error.
    pub fn remove_service(&mut self, frontend: &Frontend) -> Result<(), EbpfError> {
        let master_key = Lb4Key::new(ipv4_of(frontend, frontend.ip)?, frontend, MASTER_SLOT, 0);
        let Some(old) = self.master(frontend, &master_key)? else {
            return Ok(());
        };
        // Master first: from then on no connect() reaches the slots.
        match self.services.remove(&master_key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_error("remove master", frontend, source)),
        }
        self.remove_slots(frontend, master_key, old.rev, old.count);
        Ok(())
    }

    /// Every frontend with its current backends and affinity, as programmed.
    pub fn services(&self) -> Result<ServiceList, EbpfError> {
        let mut masters = BTreeMap::new();
        for entry in self.services.iter() {
            let (key, value) = entry.map_err(|source| EbpfError::Map {
                name: SERVICES_MAP,
                operation: "iterate",
                frontend: String::from("all frontends"),
                source: Box::new(source),
            })?;
            if key.is_master() {
                masters.insert(frontend_of(&key)?, (key, value));
            }
        }
        let mut services = Vec::with_capacity(masters.len());
        for (frontend, (key, master)) in masters {
            let mut backends = Vec::with_capacity(usize::from(master.count));
            for slot in 1..=master.count {
                let value = self
                    .services
                    .get(&key.with_slot(slot, master.rev), 0)
                    .map_err(|source| map_error("read backend slot", &frontend, source))?;
                backends.push(Backend { ip: IpAddr::V4(ip4_from_wire(value.address)), port: u16::from_be(value.port) });
            }
            services.push((frontend, ServiceEntry::with_affinity(backends, master.affinity())));
        }
        Ok(services)
    }

    fn master(&self, frontend: &Frontend, key: &Lb4Key) -> Result<Option<Master>, EbpfError> {
        match self.services.get(key, 0) {
            Ok(value) => Ok(Some(Master { count: value.count, rev: value.rev })),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error("read master", frontend, source)),
        }
    }

    fn write_slots(
        &mut self,
        frontend: &Frontend,
        master_key: Lb4Key,
        rev: u16,
        slots: &[Lb4Value],
    ) -> Result<(), EbpfError> {
        for (slot, value) in (1..).zip(slots) {
            self.insert(frontend, &master_key.with_slot(slot, rev), value, "write backend slot")?;
        }
        Ok(())
    }

    /// Best effort: a slot left behind only wastes an entry, never misroutes,
    /// because no master points at a retired revision.
    fn remove_slots(&mut self, frontend: &Frontend, master_key: Lb4Key, rev: u16, count: u16) {
        for slot in 1..=count {
            match self.services.remove(&master_key.with_slot(slot, rev)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => {
                    tracing::warn!(%frontend, slot, rev, error = %error, "remove retired backend slot");
                }
            }
        }
    }

    fn insert(
        &mut self,
        frontend: &Frontend,
        key: &Lb4Key,
        value: &Lb4Value,
        operation: &'static str,
    ) -> Result<(), EbpfError> {
        self.services.insert(key, value, 0).map_err(|source| map_error(operation, frontend, source))
    }
}

/// Every entry of the session-affinity map, sorted. A snapshot, as for [`reverse_nat`].
pub(crate) fn affinity(
    map: &HashMap<MapData, Lb4AffinityKey, Lb4AffinityValue>,
) -> Result<Vec<AffinityEntry>, EbpfError> {
    let mut entries = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.map_err(|source| EbpfError::Map {
            name: AFFINITY_MAP,
            operation: "iterate",
            frontend: String::from("all entries"),
            source: Box::new(source),
        })?;
        let protocol = Protocol::from_ip_proto(key.proto)
            .ok_or(EbpfError::UnknownProtocol { name: AFFINITY_MAP, proto: key.proto })?;
        entries.push(AffinityEntry {
            client_netns: key.client,
            frontend: Frontend { ip: IpAddr::V4(ip4_from_wire(key.address)), port: u16::from_be(key.dport), protocol },
            backend: SocketAddr::from((ip4_from_wire(value.address), u16::from_be(value.port))),
        });
    }
    entries.sort();
    Ok(entries)
}

/// Every entry of the reverse-translation map, sorted. The programs keep writing it, so
/// this is a snapshot: an entry evicted during the walk may be missing.
pub(crate) fn reverse_nat(
    map: &HashMap<MapData, Lb4ReverseKey, Lb4ReverseValue>,
) -> Result<Vec<ReverseNat>, EbpfError> {
    let mut entries = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.map_err(|source| EbpfError::Map {
            name: REVERSE_MAP,
            operation: "iterate",
            frontend: String::from("all entries"),
            source: Box::new(source),
        })?;
        entries.push(ReverseNat {
            socket_cookie: key.cookie,
            backend: SocketAddr::from((ip4_from_wire(key.address), u16::from_be(key.port))),
            frontend: SocketAddr::from((ip4_from_wire(value.address), u16::from_be(value.port))),
        });
    }
    entries.sort();
    Ok(entries)
}

fn ipv4_of(frontend: &Frontend, ip: IpAddr) -> Result<Ipv4Addr, EbpfError> {
    match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(EbpfError::Ipv6Unsupported { frontend: *frontend, address: ip }),
    }
}

fn frontend_of(key: &Lb4Key) -> Result<Frontend, EbpfError> {
    let protocol = Protocol::from_ip_proto(key.proto)
        .ok_or(EbpfError::UnknownProtocol { name: SERVICES_MAP, proto: key.proto })?;
    Ok(Frontend { ip: IpAddr::V4(ip4_from_wire(key.address)), port: u16::from_be(key.dport), protocol })
}

fn map_error(operation: &'static str, frontend: &Frontend, source: MapError) -> EbpfError {
    EbpfError::Map { name: SERVICES_MAP, operation, frontend: frontend.to_string(), source: Box::new(source) }
}
