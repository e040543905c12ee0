//! Services + EndpointSlices -> the desired service table (pure), by kube-proxy's rules.
//!
//! For every Service with a virtual IP (not headless, not ExternalName, not claimed by
//! another proxy through `service.kubernetes.io/service-proxy-name`): its IPv4 cluster IP x
//! each port is a frontend (`service`). Its backends are the endpoints of the Service's
//! EndpointSlices (label `kubernetes.io/service-name`, same namespace) on the slice port
//! of the same name and protocol: the slice holds the targetPort number resolved for its
//! pods, so a named targetPort may give different numbers in different slices (`slices`).
//! Which endpoints are used follows kube-proxy's `CategorizeEndpoints` (`select`): ready
//! ones, else serving and terminating ones; only this node's for `internalTrafficPolicy:
//! Local`; only those hinted for this node's zone when topology hints apply. At most
//! [`MAX_BACKENDS`] per frontend.
//!
//! Bad input never stops the rest: each problem is reported against its object
//! ([`Problem`]), and a Service with one is left out whole rather than programmed in part.
//!
//! [`build_table`] builds the whole table at once; [`IncrementalTable`] keeps it up to date
//! from [`Changes`], rebuilding only the Services they touch, with the same per-Service code
//! (`build_service`).

mod changes;
mod incremental;
mod node;
mod problem;
mod select;
mod service;
mod slices;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_ebpf::{Frontend, ServiceEntry, MAX_BACKENDS};

pub use changes::Changes;
pub use incremental::{IncrementalTable, TableDelta, TableUpdate};
pub use node::{NodeTopology, ZONE_LABEL};
pub use problem::{ObjectRef, Problem};

use service::{ProxiedService, ServiceKind};
use slices::SliceIndex;

/// Desired frontends and what each load-balances to (backends sorted and unique).
pub type ServiceTable = BTreeMap<Frontend, ServiceEntry>;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services (and their slices) another proxy implementation handles carry this label;
/// kube-proxy leaves them alone, so do we.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The EndpointSlice controller puts this label on the slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The table and what was wrong with the objects it was built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltTable {
    pub table: ServiceTable,
    /// Sorted, one per object and problem.
    pub problems: Vec<Problem>,
}

/// Compute the desired table from the current objects, for the node `node`.
pub fn build_table<'a, S, E>(services: S, slices: E, node: &NodeTopology) -> BuiltTable
where
    S: IntoIterator<Item = &'a Service>,
    E: IntoIterator<Item = &'a EndpointSlice>,
{
    let mut problems = BTreeSet::new();
    // Sorted, so that when two Services claim one frontend the same one always wins.
    let mut services: Vec<&Service> = services.into_iter().collect();
    services.sort_by(|a, b| service::key(a).cmp(&service::key(b)));
    let known = services.iter().filter_map(|s| service::key(s)).collect();
    let slices = SliceIndex::new(slices, &known, &mut problems);

    let mut table = ServiceTable::new();
    let mut owners: BTreeMap<Frontend, ObjectRef> = BTreeMap::new();
    for service in services {
        let Some(object) = service::key(service).map(|(namespace, name)| ObjectRef::service(namespace, name)) else {
            continue;
        };
        let service_slices = slices.of(&object.namespace, &object.name);
        let entries = build_service(service, &object, service_slices, node, |f| owners.get(f), &mut problems);
        for frontend in entries.keys() {
            owners.insert(*frontend, object.clone());
        }
        table.extend(entries);
    }
    BuiltTable { table, problems: problems.into_iter().collect() }
}

/// The frontends Service `service` claims (its cluster IP x each port), whether or not it
/// gets them; none when it is not load-balanced or invalid.
fn claimed_frontends(service: &Service) -> Vec<Frontend> {
    match service::parse(service) {
        Ok(ServiceKind::Proxied(proxied)) => proxied.ports.iter().map(|port| proxied.frontend(port)).collect(),
        Ok(ServiceKind::Skipped(_)) | Err(_) => Vec::new(),
    }
}

/// The frontends of one Service (`object`) from its EndpointSlices (those labelled for it,
/// in slice-name order), given who owns each frontend among the Services sorted before it
/// (`owner_of`): a Service that claims a frontend another owns is left out whole. What is
/// wrong goes to `problems`.
fn build_service<'o>(
    service: &Service,
    object: &ObjectRef,
    slices: &[&EndpointSlice],
    node: &NodeTopology,
    owner_of: impl Fn(&Frontend) -> Option<&'o ObjectRef>,
    problems: &mut BTreeSet<Problem>,
) -> ServiceTable {
    let proxied = match service::parse(service) {
        Ok(ServiceKind::Proxied(proxied)) => proxied,
        Ok(ServiceKind::Skipped(why)) => {
            tracing::trace!(service = %object, why, "not load-balanced");
            return ServiceTable::new();
        }
        Err(message) => {
            problems.insert(Problem::new(object.clone(), message));
            return ServiceTable::new();
        }
    };
    let frontends = proxied.ports.iter().map(|port| proxied.frontend(port));
    let claimed = frontends.clone().find_map(|frontend| owner_of(&frontend).map(|owner| (frontend, owner)));
    if let Some((frontend, owner)) = claimed {
        problems
            .insert(Problem::new(object.clone(), format!("{frontend} already belongs to Service {owner}: skipped")));
        return ServiceTable::new();
    }
    service_entries(&proxied, slices, node, object, problems)
}

/// The frontends of one Service (one per port) with their entries.
fn service_entries(
    service: &ProxiedService<'_>,
    service_slices: &[&EndpointSlice],
    node: &NodeTopology,
    object: &ObjectRef,
    problems: &mut BTreeSet<Problem>,
) -> ServiceTable {
    let mut entries = ServiceTable::new();
    for port in &service.ports {
        let frontend = service.frontend(port);
        let endpoints = slices::endpoints(service_slices, port, service.publish_not_ready, node.name.as_deref());
        let mut backends = select::usable(&endpoints, service.traffic_policy, node.zone.as_deref());
        if backends.len() > MAX_BACKENDS {
            problems.insert(Problem::new(
                object.clone(),
                format!(
                    "{frontend} has {} usable endpoints, more than the {MAX_BACKENDS} a frontend holds: \
                     using {MAX_BACKENDS} of them, chosen per node",
                    backends.len()
                ),
            ));
            backends = select::subset_for_node(backends, node.name.as_deref().unwrap_or_default(), MAX_BACKENDS);
        }
        entries.insert(frontend, ServiceEntry::with_affinity(backends, service.affinity));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("big".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.9.1".into()),
                ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..ServicePort::default() }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// A slice of `count` endpoints from 10.1.`third`.0 on (at most 1000, as the API allows).
    fn slice(third: u8, count: u16) -> EndpointSlice {
        let label = BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), "big".to_owned())]);
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("big-{third}")),
                namespace: Some("default".into()),
                labels: Some(label),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: (0..count)
                .map(|i| Endpoint {
                    addresses: vec![format!("10.1.{}.{}", u16::from(third) + i / 250, i % 250 + 1)],
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..EndpointPort::default() }]),
        }
    }

    #[test]
    fn more_endpoints_than_a_frontend_holds_are_capped_per_node() {
        let (service, slices) = (service(), [slice(0, 1000), slice(100, 200)]);
        let built = |node: &str| build_table([&service], &slices, &NodeTopology::named(node));

        let a = built("node-a");
        let backends = |table: &BuiltTable| table.table.values().next().expect("the frontend").backends.clone();
        assert_eq!(backends(&a).len(), MAX_BACKENDS);
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
        let problem = a.problems[0].to_string();
        assert!(problem.starts_with("Service default/big: 10.96.9.1:80/tcp has 1200 usable endpoints"), "{problem}");
        assert_eq!(backends(&built("node-a")), backends(&a), "the same subset on every sync");
        assert_ne!(backends(&built("node-b")), backends(&a), "another node uses other endpoints");
    }

    #[test]
    fn every_frontend_of_a_service_is_built_or_none() {
        let mut bad = service();
        if let Some(ports) = bad.spec.as_mut().and_then(|spec| spec.ports.as_mut()) {
            ports.push(ServicePort { name: Some("bad".into()), port: 70_000, ..ServicePort::default() });
        }
        let built = build_table([&bad], &[slice(0, 3)], &NodeTopology::default());
        assert!(built.table.is_empty(), "not even the valid port: {:?}", built.table);
        assert_eq!(built.problems.len(), 1);
    }
}
