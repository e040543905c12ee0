//! Typed reads and writes of the services maps (one per address family), ordered so that
//! a concurrent connect() never sees a half-written service (see `bpf/lb.h`), and reads of
//! the reverse-translation and session-affinity maps, which only the programs write.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};
use aya::Pod;

use crate::error::EbpfError;
use crate::layout::{Lb4Key, Lb4Value, Lb6Key, Lb6Value, ServiceKey, ServiceValue};
use crate::types::{Backend, Frontend, ServiceEntry, ServiceList, SessionAffinity, MAX_BACKENDS};

/// Typed view of the maps: no raw bytes leave this crate. IPv4 and IPv6 frontends alike:
/// each goes to its family's map, chosen by its address.
pub struct LbMaps<'a> {
    v4: ServicesMap<'a, Lb4Key>,
    v6: ServicesMap<'a, Lb6Key>,
}

impl<'a> LbMaps<'a> {
    pub(crate) fn new(
        v4: &'a mut HashMap<MapData, Lb4Key, Lb4Value>,
        v6: &'a mut HashMap<MapData, Lb6Key, Lb6Value>,
    ) -> LbMaps<'a> {
        LbMaps { v4: ServicesMap::new(v4), v6: ServicesMap::new(v6) }
    }

    /// Insert or replace a frontend with its backends (empty = reject with
    /// ECONNREFUSED) and session affinity. The new set is written under a fresh revision,
    /// then the master flips to it (and to the new affinity) in one update, then the old
    /// revision is removed. The backends must be of the frontend's address family, and no
    /// address IPv4-mapped (a dual-stack socket dialling `::ffff:a.b.c.d` is served by the
    /// IPv4 frontend `a.b.c.d`).
    pub fn upsert_service(&mut self, frontend: Frontend, entry: &ServiceEntry) -> Result<(), EbpfError> {
        check_entry(&frontend, entry)?;
        match frontend.ip {
            IpAddr::V4(_) => self.v4.upsert(frontend, entry),
            IpAddr::V6(_) => self.v6.upsert(frontend, entry),
        }
    }

    /// Remove a frontend: its connections are no longer rewritten. Removing
    /// an unknown frontend is not an error.
    pub fn remove_service(&mut self, frontend: &Frontend) -> Result<(), EbpfError> {
        check_not_mapped(frontend, frontend.ip)?;
        match frontend.ip {
            IpAddr::V4(_) => self.v4.remove(frontend),
            IpAddr::V6(_) => self.v6.remove(frontend),
        }
    }

    /// Every frontend with its current backends and affinity, as programmed, sorted (the
    /// IPv4 frontends first).
    pub fn services(&self) -> Result<ServiceList, EbpfError> {
        let mut services = self.v4.services()?;
        services.extend(self.v6.services()?);
        Ok(services)
    }
}

/// What can be refused before anything is written.
fn check_entry(frontend: &Frontend, entry: &ServiceEntry) -> Result<(), EbpfError> {
    check_not_mapped(frontend, frontend.ip)?;
    for backend in &entry.backends {
        check_not_mapped(frontend, backend.ip)?;
        if backend.ip.is_ipv4() != frontend.ip.is_ipv4() {
            return Err(EbpfError::AddressFamilyMismatch { frontend: *frontend, backend: backend.ip });
        }
    }
    if entry.affinity == (SessionAffinity::ClientIp { timeout_seconds: 0 }) {
        return Err(EbpfError::AffinityTimeout { frontend: *frontend });
    }
    if entry.backends.len() > MAX_BACKENDS {
        return Err(EbpfError::TooManyBackends { frontend: *frontend, count: entry.backends.len(), max: MAX_BACKENDS });
    }
    Ok(())
}

/// The programs look IPv4-mapped destinations up in the IPv4 maps: one in the IPv6 maps
/// would never be reached.
fn check_not_mapped(frontend: &Frontend, address: IpAddr) -> Result<(), EbpfError> {
    match address {
        IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => {
            Err(EbpfError::Ipv4MappedAddress { frontend: *frontend, address })
        }
        _ => Ok(()),
    }
}

/// A frontend's master entry as read from the map.
#[derive(Clone, Copy)]
struct Master {
    count: u16,
    rev: u16,
}

/// One address family's services map (`lb4_services` or `lb6_services`).
pub(crate) struct ServicesMap<'a, K: ServiceKey> {
    map: &'a mut HashMap<MapData, K, K::Value>,
}

impl<'a, K: ServiceKey> ServicesMap<'a, K> {
    pub(crate) fn new(map: &'a mut HashMap<MapData, K, K::Value>) -> ServicesMap<'a, K> {
        ServicesMap { map }
    }

    /// `upsert_service` once `check_entry` passed.
    fn upsert(&mut self, frontend: Frontend, entry: &ServiceEntry) -> Result<(), EbpfError> {
        let master_key = master_key::<K>(&frontend)?;
        let slots = entry
            .backends
            .iter()
            .map(|backend| slot::<K>(&frontend, backend))
            .collect::<Result<Vec<_>, EbpfError>>()?;
        let count = u16::try_from(slots.len()).map_err(|_| EbpfError::TooManyBackends {
            frontend,
            count: slots.len(),
            max: MAX_BACKENDS,
        })?;

        let old = self.master(&frontend, &master_key)?;
        let rev = old.map_or(1, |old| old.rev.wrapping_add(1));

        if let Err(error) = self.write_slots(&frontend, master_key, rev, &slots) {
            // Nothing points at the new revision yet: drop what was written.
            self.remove_slots(&frontend, master_key, rev, count);
            return Err(error);
        }
        self.insert(&frontend, &master_key, &K::Value::master(count, rev, entry.affinity, entry.kind), "flip master")?;
        if let Some(old) = old {
            self.remove_slots(&frontend, master_key, old.rev, old.count);
        }
        Ok(())
    }

    fn remove(&mut self, frontend: &Frontend) -> Result<(), EbpfError> {
        let master_key = master_key::<K>(frontend)?;
        let Some(old) = self.master(frontend, &master_key)? else {
            return Ok(());
        };
        // Master first: from then on no connect() reaches the slots.
        match self.map.remove(&master_key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(map_error(K::MAP, "remove master", frontend, source)),
        }
        self.remove_slots(frontend, master_key, old.rev, old.count);
        Ok(())
    }

    /// Every frontend of this map with its current backends and affinity, sorted.
    pub(crate) fn services(&self) -> Result<ServiceList, EbpfError> {
        let mut masters = BTreeMap::new();
        for entry in self.map.iter() {
            let (key, value) = entry.map_err(|source| iterate_error(K::MAP, "all frontends", source))?;
            if key.is_master() {
                masters.insert(key.frontend()?, (key, value));
            }
        }
        let mut services = Vec::with_capacity(masters.len());
        for (frontend, (key, master)) in masters {
            let backends = (1..=master.count())
                .map(|slot| {
                    self.map
                        .get(&key.with_slot(slot, master.rev()), 0)
                        .map(|value| value.backend())
                        .map_err(|source| map_error(K::MAP, "read backend slot", &frontend, source))
                })
                .collect::<Result<Vec<Backend>, EbpfError>>()?;
            services.push((frontend, ServiceEntry::with_affinity(backends, master.affinity()).of_kind(master.kind())));
        }
        Ok(services)
    }

    fn master(&self, frontend: &Frontend, key: &K) -> Result<Option<Master>, EbpfError> {
        match self.map.get(key, 0) {
            Ok(value) => Ok(Some(Master { count: value.count(), rev: value.rev() })),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error(K::MAP, "read master", frontend, source)),
        }
    }

    fn write_slots(
        &mut self,
        frontend: &Frontend,
        master_key: K,
        rev: u16,
        slots: &[K::Value],
    ) -> Result<(), EbpfError> {
        for (slot, value) in (1..).zip(slots) {
            self.insert(frontend, &master_key.with_slot(slot, rev), value, "write backend slot")?;
        }
        Ok(())
    }

    /// Best effort: a slot left behind only wastes an entry, never misroutes,
    /// because no master points at a retired revision.
    fn remove_slots(&mut self, frontend: &Frontend, master_key: K, rev: u16, count: u16) {
        for slot in 1..=count {
            match self.map.remove(&master_key.with_slot(slot, rev)) {
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
        key: &K,
        value: &K::Value,
        operation: &'static str,
    ) -> Result<(), EbpfError> {
        self.map.insert(key, value, 0).map_err(|source| map_error(K::MAP, operation, frontend, source))
    }
}

/// The master key of `frontend` in `K`'s map. The caller picked the map by the frontend's
/// family, so a miss is a bug, reported all the same.
fn master_key<K: ServiceKey>(frontend: &Frontend) -> Result<K, EbpfError> {
    K::master(frontend).ok_or(EbpfError::AddressFamilyMismatch { frontend: *frontend, backend: frontend.ip })
}

/// The slot of `backend` in `K`'s map (`check_entry` refused backends of the other family).
fn slot<K: ServiceKey>(frontend: &Frontend, backend: &Backend) -> Result<K::Value, EbpfError> {
    K::Value::slot(backend).ok_or(EbpfError::AddressFamilyMismatch { frontend: *frontend, backend: backend.ip })
}

/// Every entry of a map the programs write (reverse translation, session affinity),
/// converted and sorted. The programs keep writing it, so this is a snapshot: an entry
/// evicted during the walk may be missing.
pub(crate) fn snapshot<K: Pod, V: Pod, T: Ord>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    convert: impl Fn(&K, &V) -> Result<T, EbpfError>,
) -> Result<Vec<T>, EbpfError> {
    let mut entries = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.map_err(|source| iterate_error(name, "all entries", source))?;
        entries.push(convert(&key, &value)?);
    }
    entries.sort();
    Ok(entries)
}

fn iterate_error(name: &'static str, what: &str, source: MapError) -> EbpfError {
    EbpfError::Map { name, operation: "iterate", frontend: what.to_owned(), source: Box::new(source) }
}

fn map_error(name: &'static str, operation: &'static str, frontend: &Frontend, source: MapError) -> EbpfError {
    EbpfError::Map { name, operation, frontend: frontend.to_string(), source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::types::Protocol;

    fn frontend(ip: &str) -> Frontend {
        Frontend { ip: ip.parse().expect("ip"), port: 80, protocol: Protocol::Tcp }
    }

    fn entry(backends: &[&str]) -> ServiceEntry {
        ServiceEntry::new(backends.iter().map(|ip| Backend { ip: ip.parse().expect("ip"), port: 8080 }).collect())
    }

    #[test]
    fn backends_must_share_the_frontend_family() {
        check_entry(&frontend("10.96.0.1"), &entry(&["10.0.0.1", "10.0.0.2"])).expect("ipv4");
        check_entry(&frontend("fd00:96::1"), &entry(&["fd00::1", "fd00::2"])).expect("ipv6");
        let error = check_entry(&frontend("fd00:96::1"), &entry(&["fd00::1", "10.0.0.1"])).expect_err("mixed");
        assert!(
            matches!(error, EbpfError::AddressFamilyMismatch { backend, .. } if backend == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            "{error}"
        );
        let error = check_entry(&frontend("10.96.0.1"), &entry(&["fd00::1"])).expect_err("mixed");
        assert!(error.to_string().contains("address family"), "{error}");
    }

    #[test]
    fn ipv4_mapped_addresses_are_refused() {
        let error = check_entry(&frontend("::ffff:10.96.0.1"), &entry(&[])).expect_err("mapped frontend");
        assert!(matches!(error, EbpfError::Ipv4MappedAddress { .. }), "{error}");
        assert!(error.to_string().contains("ipv4-mapped"), "{error}");
        let error = check_entry(&frontend("fd00:96::1"), &entry(&["::ffff:10.0.0.1"])).expect_err("mapped backend");
        assert!(matches!(error, EbpfError::Ipv4MappedAddress { .. }), "{error}");
        // Not mapped: an IPv4-compatible address is an ordinary IPv6 address.
        check_entry(&frontend("::a60:1"), &entry(&[])).expect("plain ipv6");
    }

    #[test]
    fn oversized_entries_and_zero_timeouts_are_refused() {
        let too_many =
            ServiceEntry::new(vec![Backend { ip: "fd00::1".parse().expect("ip"), port: 1 }; MAX_BACKENDS + 1]);
        let error = check_entry(&frontend("fd00:96::1"), &too_many).expect_err("too many");
        assert!(matches!(error, EbpfError::TooManyBackends { count, .. } if count == MAX_BACKENDS + 1), "{error}");
        let zero = ServiceEntry::with_affinity(vec![], SessionAffinity::ClientIp { timeout_seconds: 0 });
        let error = check_entry(&frontend("fd00:96::1"), &zero).expect_err("zero timeout");
        assert!(matches!(error, EbpfError::AffinityTimeout { .. }), "{error}");
    }
}
