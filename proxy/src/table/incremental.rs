//! The service table kept up to date one Service at a time: a change to a Service or to
//! one of its EndpointSlices rebuilds that Service's frontends only (with the same
//! per-Service logic as [`build_table`](super::build_table)), and yields the frontends
//! that changed. The result always equals `build_table` of the current objects.
//!
//! One thing ties Services together: two claiming one frontend, the first by
//! (namespace, name) gets it and the other is left out whole. So a change rebuilds the
//! changed Services together with every Service that shares a frontend with them, directly
//! or through others (their conflict group), in key order, exactly as a full build would.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_ebpf::{Frontend, NodePortService, ServiceEntry};

use super::changes::{Changes, ObjectKey};
use super::{
    build_service, claimed_frontends, slices, FrontendKind, HealthCheck, IngressTable, NodeTopology, ObjectRef,
    Problem, ServiceBuild, ServiceTable,
};

/// The frontends to write and remove to go from the previous table to the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta<V> {
    /// New frontends, and frontends whose entry changed, with their entry now.
    pub upserts: Vec<(Frontend, V)>,
    /// Frontends no longer in the table.
    pub removals: Vec<Frontend>,
}

/// The changes of the socket load-balancer's table.
pub type TableDelta = Delta<ServiceEntry>;
/// The changes of the ingress table.
pub type IngressDelta = Delta<NodePortService>;

impl<V> Default for Delta<V> {
    fn default() -> Self {
        Delta { upserts: Vec::new(), removals: Vec::new() }
    }
}

impl<V> Delta<V> {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// What one [`IncrementalTable::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableUpdate {
    pub delta: TableDelta,
    /// The ingress table's changes.
    pub ingress: IngressDelta,
    /// Problems of the objects that appeared with this change, and those that went away.
    pub new_problems: Vec<Problem>,
    pub resolved_problems: Vec<Problem>,
    /// Services rebuilt (the changed ones and their conflict groups).
    pub rebuilt_services: usize,
}

/// One Service name: the Service (if it exists), the slices labelled for it, and what it
/// contributes to the table.
#[derive(Debug, Default)]
struct ServiceState {
    service: Option<Arc<Service>>,
    /// By slice name: the order a full build reads them in.
    slices: BTreeMap<String, Arc<EndpointSlice>>,
    /// The frontends the Service claims, whether or not it got them.
    claimed: Vec<Frontend>,
    /// The frontends it owns in the table.
    programmed: Vec<Frontend>,
    /// What is wrong with the Service and its slices.
    problems: BTreeSet<Problem>,
    /// Its health check, when it is programmed and has one.
    health_check: Option<HealthCheck>,
}

/// The current objects, indexed by Service, and the table built from them for one node.
#[derive(Debug, Default)]
pub struct IncrementalTable {
    node: NodeTopology,
    /// Sorted by (namespace, name): the order in which Services win contested frontends.
    services: BTreeMap<ObjectKey, ServiceState>,
    /// Which Service name each labelled slice is filed under.
    slice_homes: HashMap<ObjectKey, ObjectKey>,
    /// Slices without a Service label, with the problem that says so.
    unlabelled: BTreeMap<ObjectKey, Problem>,
    /// Who claims each frontend.
    claims: HashMap<Frontend, BTreeSet<ObjectKey>>,
    /// Who owns each frontend of the table.
    owners: HashMap<Frontend, ObjectRef>,
    table: ServiceTable,
    /// The kind of each frontend of the table.
    kinds: BTreeMap<Frontend, FrontendKind>,
    ingress: IngressTable,
}

impl IncrementalTable {
    pub fn new(node: NodeTopology) -> IncrementalTable {
        IncrementalTable { node, ..IncrementalTable::default() }
    }

    /// Start over from all the objects, for `node` (first sync, resync, a new zone).
    pub fn reset(
        &mut self,
        services: impl IntoIterator<Item = Arc<Service>>,
        slices: impl IntoIterator<Item = Arc<EndpointSlice>>,
        node: NodeTopology,
    ) {
        *self = IncrementalTable::new(node);
        let mut changes = Changes::new();
        for service in services {
            changes.service_applied(service);
        }
        for slice in slices {
            changes.slice_applied(slice);
        }
        self.apply(changes);
    }

    /// The desired table now.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// The kind of each frontend of the table.
    pub fn kinds(&self) -> &BTreeMap<Frontend, FrontendKind> {
        &self.kinds
    }

    /// The desired ingress table now.
    pub fn ingress(&self) -> &IngressTable {
        &self.ingress
    }

    /// The health checks of the programmed Services, by Service.
    pub fn health_checks(&self) -> impl Iterator<Item = (ObjectRef, HealthCheck)> + '_ {
        self.services.iter().filter_map(|(key, state)| {
            state.health_check.map(|check| (ObjectRef::service(&key.namespace, &key.name), check))
        })
    }

    /// What is wrong with the objects now.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.services.values().flat_map(|state| &state.problems).chain(self.unlabelled.values())
    }

    /// Take `changes` in and rebuild the Services they touch.
    pub fn apply(&mut self, changes: Changes) -> TableUpdate {
        let (services, slices) = changes.into_parts();
        let mut problems = ProblemSwap::default();
        let mut dirty = BTreeSet::new();
        for (key, service) in services {
            self.services.entry(key.clone()).or_default().service = service;
            dirty.insert(key);
        }
        for (key, slice) in slices {
            self.file_slice(key, slice, &mut dirty, &mut problems);
        }
        let group = self.conflict_group(dirty);
        let rebuilt_services = group.len();
        let (delta, ingress) = self.rebuild(&group, &mut problems);
        let (new_problems, resolved_problems) = problems.difference();
        TableUpdate { delta, ingress, new_problems, resolved_problems, rebuilt_services }
    }

    /// File the slice `key` (or its deletion) under the Service its label names, marking
    /// the Services it left and joined as dirty.
    fn file_slice(
        &mut self,
        key: ObjectKey,
        slice: Option<Arc<EndpointSlice>>,
        dirty: &mut BTreeSet<ObjectKey>,
        problems: &mut ProblemSwap,
    ) {
        if let Some(home) = self.slice_homes.remove(&key) {
            if let Some(state) = self.services.get_mut(&home) {
                state.slices.remove(&key.name);
            }
            dirty.insert(home);
        }
        problems.before.extend(self.unlabelled.remove(&key));
        let Some(slice) = slice else {
            return;
        };
        match slices::service_of(&slice) {
            Ok((namespace, service)) => {
                let home = ObjectKey::new(namespace, service);
                self.services.entry(home.clone()).or_default().slices.insert(key.name.clone(), slice);
                self.slice_homes.insert(key, home.clone());
                dirty.insert(home);
            }
            Err(problem) => {
                problems.after.insert(problem.clone());
                self.unlabelled.insert(key, problem);
            }
        }
    }

    /// The dirty Services and every Service that shares a frontend with one of them,
    /// directly or through others, before or after the change; their claims updated.
    fn conflict_group(&mut self, dirty: BTreeSet<ObjectKey>) -> BTreeSet<ObjectKey> {
        let mut pending: Vec<Frontend> = Vec::new();
        for key in &dirty {
            let Some(state) = self.services.get_mut(key) else {
                continue;
            };
            let claimed =
                state.service.as_deref().map(|service| claimed_frontends(service, &self.node)).unwrap_or_default();
            for frontend in std::mem::replace(&mut state.claimed, claimed.clone()) {
                if let Some(claimants) = self.claims.get_mut(&frontend) {
                    claimants.remove(key);
                    if claimants.is_empty() {
                        self.claims.remove(&frontend);
                    }
                }
                pending.push(frontend);
            }
            for frontend in claimed {
                self.claims.entry(frontend).or_default().insert(key.clone());
                pending.push(frontend);
            }
        }
        let mut group = dirty;
        let mut seen = HashSet::new();
        while let Some(frontend) = pending.pop() {
            if !seen.insert(frontend) {
                continue;
            }
            for key in self.claims.get(&frontend).into_iter().flatten() {
                if group.insert(key.clone()) {
                    pending.extend(self.services.get(key).into_iter().flat_map(|state| state.claimed.iter().copied()));
                }
            }
        }
        group
    }

    /// Take the group's frontends out of the tables and build them again, in key order.
    fn rebuild(&mut self, group: &BTreeSet<ObjectKey>, problems: &mut ProblemSwap) -> (TableDelta, IngressDelta) {
        let mut before: ServiceTable = BTreeMap::new();
        let mut ingress_before = IngressTable::new();
        for key in group {
            let Some(state) = self.services.get_mut(key) else {
                continue;
            };
            for frontend in std::mem::take(&mut state.programmed) {
                self.owners.remove(&frontend);
                self.kinds.remove(&frontend);
                before.extend(self.table.remove(&frontend).map(|entry| (frontend, entry)));
                ingress_before.extend(self.ingress.remove(&frontend).map(|service| (frontend, service)));
            }
            problems.before.append(&mut state.problems);
        }
        let mut touched: BTreeSet<Frontend> = before.keys().chain(ingress_before.keys()).copied().collect();
        for key in group {
            let Some(state) = self.services.get(key) else {
                continue;
            };
            let (built, built_problems) = build_one(key, state, &self.node, &self.owners);
            let object = ObjectRef::service(&key.namespace, &key.name);
            let programmed = built.frontends();
            for frontend in &programmed {
                self.owners.insert(*frontend, object.clone());
                touched.insert(*frontend);
            }
            for (frontend, (kind, entry)) in built.entries {
                self.kinds.insert(frontend, kind);
                self.table.insert(frontend, entry);
            }
            self.ingress.extend(built.ingress);
            problems.after.extend(built_problems.iter().cloned());
            if let Some(state) = self.services.get_mut(key) {
                state.programmed = programmed;
                state.problems = built_problems;
                state.health_check = built.health_check;
                if state.service.is_none() && state.slices.is_empty() {
                    self.services.remove(key);
                }
            }
        }
        (delta(&before, &self.table, &touched), delta(&ingress_before, &self.ingress, &touched))
    }
}

/// The writes from `before` (the old entries of the `touched` frontends) to `table`.
fn delta<V: Clone + PartialEq>(
    before: &BTreeMap<Frontend, V>,
    table: &BTreeMap<Frontend, V>,
    touched: &BTreeSet<Frontend>,
) -> Delta<V> {
    let mut delta = Delta::default();
    for frontend in touched.iter().copied() {
        match (before.get(&frontend), table.get(&frontend)) {
            (old, Some(new)) if old != Some(new) => delta.upserts.push((frontend, new.clone())),
            (Some(_), None) => delta.removals.push(frontend),
            _ => {}
        }
    }
    delta
}

/// One Service's entries, health check and problems (its own and its slices'), given the
/// owners of the frontends so far.
fn build_one(
    key: &ObjectKey,
    state: &ServiceState,
    node: &NodeTopology,
    owners: &HashMap<Frontend, ObjectRef>,
) -> (ServiceBuild, BTreeSet<Problem>) {
    let mut problems = BTreeSet::new();
    let exists = state.service.is_some();
    let used: Vec<&EndpointSlice> =
        state.slices.values().map(Arc::as_ref).filter(|slice| slices::admit(slice, exists, &mut problems)).collect();
    let entries = match &state.service {
        Some(service) => {
            let object = ObjectRef::service(&key.namespace, &key.name);
            build_service(service, &object, &used, node, |frontend| owners.get(frontend), &mut problems)
        }
        None => ServiceBuild::default(),
    };
    (entries, problems)
}

/// The problems of the objects an update touched, before and after it.
#[derive(Default)]
struct ProblemSwap {
    before: BTreeSet<Problem>,
    after: BTreeSet<Problem>,
}

impl ProblemSwap {
    /// (new, resolved).
    fn difference(self) -> (Vec<Problem>, Vec<Problem>) {
        let new = self.after.difference(&self.before).cloned().collect();
        let resolved = self.before.difference(&self.after).cloned().collect();
        (new, resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_service_objects;

    /// Services a and b on one cluster IP and port, c on its own; a slice for each.
    const OBJECTS: &str = "
kind: Service
apiVersion: v1
metadata: {name: a, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
---
kind: Service
apiVersion: v1
metadata: {name: b, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
---
kind: Service
apiVersion: v1
metadata: {name: c, namespace: default}
spec: {clusterIP: 10.96.0.3, ports: [{name: http, port: 80}]}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: a-1, namespace: default, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.1]}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: b-1, namespace: default, labels: {kubernetes.io/service-name: b}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.2]}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: c-1, namespace: default, labels: {kubernetes.io/service-name: c}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.3]}]
";

    fn table() -> (IncrementalTable, Vec<Service>, Vec<EndpointSlice>) {
        let objects = parse_service_objects(OBJECTS, "test").expect("parse");
        let mut table = IncrementalTable::default();
        let services = objects.services.iter().cloned().map(Arc::new);
        table.reset(services, objects.slices.iter().cloned().map(Arc::new), NodeTopology::default());
        (table, objects.services, objects.slices)
    }

    fn backend_of(table: &IncrementalTable, ip: &str) -> Vec<String> {
        let frontend = table.table().iter().find(|(frontend, _)| frontend.ip.to_string() == ip);
        frontend.map(|(_, entry)| entry.backends.iter().map(ToString::to_string).collect()).unwrap_or_default()
    }

    #[test]
    fn a_slice_change_rebuilds_its_service_only() {
        let (mut table, _, slices) = table();
        let mut moved = slices[2].clone();
        moved.endpoints[0].addresses = vec!["10.244.0.9".into()];
        let mut changes = Changes::new();
        changes.slice_applied(Arc::new(moved));
        let update = table.apply(changes);
        assert_eq!(update.rebuilt_services, 1);
        assert_eq!(update.delta.upserts.len(), 1);
        assert!(update.delta.removals.is_empty());
        assert_eq!(backend_of(&table, "10.96.0.3"), ["10.244.0.9:8080"]);
    }

    #[test]
    fn deleting_the_owner_of_a_contested_frontend_hands_it_to_the_next() {
        let (mut table, services, _) = table();
        assert_eq!(backend_of(&table, "10.96.0.1"), ["10.244.0.1:8080"], "a sorts first and wins");
        assert_eq!(table.problems().count(), 1, "b is reported");

        let mut changes = Changes::new();
        changes.service_deleted(&services[0]);
        let update = table.apply(changes);
        assert_eq!(update.rebuilt_services, 2, "a and b, not c");
        assert_eq!(backend_of(&table, "10.96.0.1"), ["10.244.0.2:8080"], "b has it now");
        let resolved: Vec<String> = update.resolved_problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            resolved,
            ["Service default/b: ClusterIP 10.96.0.1:80/tcp already belongs to Service default/a: skipped"]
        );
        let new: Vec<String> = update.new_problems.iter().map(ToString::to_string).collect();
        assert_eq!(new, ["EndpointSlice default/a-1: its Service default/a does not exist: not used"]);
    }
}
