//! Programming the frontends (backends, Maglev table, source ranges) and reading the maps
//! back. Write order, so that a packet never sees a half-written frontend: new source
//! ranges before the service that checks them, the service in one update (backends, table
//! and flags together), then the ranges no longer wanted and the conntrack entries of the
//! backends the service lost (what kube-proxy does for UDP with `conntrack -D`; here for
//! TCP too, since a removed backend's flows would otherwise stick to it).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use aya::maps::lpm_trie::Key;
use aya::maps::{MapError, MapKeys};
use aya::Pod;

use super::error::NodePortError;
use super::layout::{Np4Backend, Np4Key, Np4Range, Np4Service, FLAG_SOURCE_RANGES, MAGLEV_TABLE_SIZE};
use super::types::{ConntrackEntry, NodePortService, SourceRange};
use super::{maglev, NodePortLb, CONNTRACK_MAP, SERVICES_MAP, SOURCE_RANGES_MAP};
use crate::types::{Backend, Frontend, MAX_BACKENDS};

impl NodePortLb {
    /// Create or replace `frontend` (IPv4, TCP or UDP). Flows already tracked keep their
    /// backend while it remains one of the frontend's; flows of backends it lost are
    /// forgotten (their next packet picks again; a TCP connection is reset by its new
    /// backend, as with kube-proxy).
    pub fn set_service(&mut self, frontend: &Frontend, service: &NodePortService) -> Result<(), NodePortError> {
        let key = Np4Key::new(frontend)?;
        // Backend -> remote; a local listing wins over a remote one.
        let mut all: BTreeMap<Backend, bool> = service.remote_backends.iter().map(|b| (*b, true)).collect();
        all.extend(service.backends.iter().map(|b| (*b, false)));
        if all.len() > MAX_BACKENDS {
            return Err(NodePortError::TooManyBackends { frontend: *frontend, count: all.len(), max: MAX_BACKENDS });
        }
        let slots =
            all.iter().map(|(b, remote)| Np4Backend::new(frontend, b, *remote)).collect::<Result<Vec<_>, _>>()?;
        let backends: Vec<Backend> = all.into_keys().collect();
        let table = maglev::populate(&backends, MAGLEV_TABLE_SIZE);
        let ranges: BTreeSet<SourceRange> = service.source_ranges.iter().copied().collect();
        let old_ranges = self.range_keys(&key)?;
        for range in &ranges {
            let (prefix_len, data) = Np4Range::new(key, range);
            self.source_ranges
                .insert(&Key::new(prefix_len, data), 1, 0)
                .map_err(|e| map_error(SOURCE_RANGES_MAP, "insert a source range", frontend, e))?;
        }
        let flags = if ranges.is_empty() { 0 } else { FLAG_SOURCE_RANGES };
        self.services
            .insert(key, Np4Service::new(&slots, &table, flags), 0)
            .map_err(|e| map_error(SERVICES_MAP, "insert", frontend, e))?;
        let wanted: BTreeSet<(u32, u32)> =
            ranges.iter().map(|r| Np4Range::new(key, r)).map(|(p, d)| (p, d.source)).collect();
        for old in old_ranges.into_iter().filter(|k| !wanted.contains(&(k.prefix_len(), k.data().source))) {
            self.remove_range(&old, frontend)?;
        }
        self.forget_flows(&key, frontend, |backend| backends.binary_search(&backend).is_err())
    }

    /// Remove `frontend`, its source ranges and its flows; nothing to remove is no error.
    pub fn remove_service(&mut self, frontend: &Frontend) -> Result<(), NodePortError> {
        let key = Np4Key::new(frontend)?;
        ignore_missing(self.services.remove(&key)).map_err(|e| map_error(SERVICES_MAP, "remove", frontend, e))?;
        for old in self.range_keys(&key)? {
            self.remove_range(&old, frontend)?;
        }
        self.forget_flows(&key, frontend, |_| true)
    }

    /// Every frontend with its backends (sorted) and source ranges (sorted), sorted.
    pub fn services(&self) -> Result<Vec<(Frontend, NodePortService)>, NodePortError> {
        let mut services = Vec::new();
        for entry in self.services.iter() {
            let (key, value) = entry.map_err(|e| iterate_error(SERVICES_MAP, e))?;
            let (remote, local): (Vec<&Np4Backend>, _) = value.backends().iter().partition(|b| b.is_remote());
            let backends = local.into_iter().map(Np4Backend::backend).collect();
            let remote_backends = remote.into_iter().map(Np4Backend::backend).collect();
            let mut source_ranges = Vec::new();
            for range in self.range_keys(&key)? {
                source_ranges.push(range.data().range(range.prefix_len())?);
            }
            source_ranges.sort();
            services.push((key.frontend(SERVICES_MAP)?, NodePortService { backends, remote_backends, source_ranges }));
        }
        services.sort();
        Ok(services)
    }

    /// The flows conntrack holds (their client's direction), sorted: for diagnostics and
    /// tests.
    pub fn conntrack(&self) -> Result<Vec<ConntrackEntry>, NodePortError> {
        let mut entries = Vec::new();
        for entry in self.conntrack.iter() {
            let (key, value) = entry.map_err(|e| iterate_error(CONNTRACK_MAP, e))?;
            if key.dir == super::layout::CT_FORWARD {
                entries.push(key.entry(&value, CONNTRACK_MAP)?);
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// The source range keys of `frontend`.
    fn range_keys(&self, frontend: &Np4Key) -> Result<Vec<Key<Np4Range>>, NodePortError> {
        collect_keys(self.source_ranges.keys(), SOURCE_RANGES_MAP, |key| key.data().frontend == *frontend)
    }

    fn remove_range(&mut self, key: &Key<Np4Range>, frontend: &Frontend) -> Result<(), NodePortError> {
        ignore_missing(self.source_ranges.remove(key))
            .map_err(|e| map_error(SOURCE_RANGES_MAP, "remove a source range", frontend, e))
    }

    /// Delete the conntrack entries (both directions) of the flows to `frontend` whose
    /// backend `gone` says is gone.
    fn forget_flows(
        &mut self,
        frontend: &Np4Key,
        shown: &Frontend,
        gone: impl Fn(Backend) -> bool,
    ) -> Result<(), NodePortError> {
        let mut doomed = Vec::new();
        for entry in self.conntrack.iter() {
            let (key, value) = entry.map_err(|e| iterate_error(CONNTRACK_MAP, e))?;
            if key.is_to(frontend) && gone(value.backend()) {
                doomed.push(key.pair(&value));
                doomed.push(key);
            }
        }
        for key in &doomed {
            ignore_missing(self.conntrack.remove(key))
                .map_err(|e| map_error(CONNTRACK_MAP, "remove a flow", shown, e))?;
        }
        if !doomed.is_empty() {
            tracing::debug!(frontend = %shown, flows = doomed.len() / 2, "forgot the flows of removed backends");
        }
        Ok(())
    }
}

fn collect_keys<K: Pod>(
    keys: MapKeys<'_, K>,
    name: &'static str,
    wanted: impl Fn(&K) -> bool,
) -> Result<Vec<K>, NodePortError> {
    let mut found = Vec::new();
    for key in keys {
        let key = key.map_err(|e| iterate_error(name, e))?;
        if wanted(&key) {
            found.push(key);
        }
    }
    Ok(found)
}

/// A delete of what is already gone (an LRU eviction, a frontend never written) is done.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(error)) if error.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn iterate_error(name: &'static str, source: MapError) -> NodePortError {
    NodePortError::Map { name, operation: "iterate", what: String::from("all entries"), source: Box::new(source) }
}

fn map_error(name: &'static str, operation: &'static str, frontend: &Frontend, source: MapError) -> NodePortError {
    NodePortError::Map { name, operation, what: frontend.to_string(), source: Box::new(source) }
}
