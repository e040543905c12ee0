//! Services + EndpointSlices -> the desired service table (pure), by kube-proxy's rules.
//!
//! For every Service with a virtual IP (not headless, not ExternalName, not claimed by
//! another proxy through `service.kubernetes.io/service-proxy-name`): its cluster IPs (one
//! per IP family), externalIPs and LoadBalancer ingress IPs x each port, and each port's
//! nodePort on the node's NodePort addresses, are frontends (`service`, `frontends`,
//! `node`), of the Service's families only (`family`), as kube-proxy's dual-stack
//! meta-proxier runs one proxier per family. Its backends are the endpoints of the
//! Service's EndpointSlices (label `kubernetes.io/service-name`, same namespace) of the
//! frontend's family (`addressType`), on the slice port of the same name and protocol:
//! the slice holds the targetPort number resolved for its pods, so a named targetPort may
//! give different numbers in different slices (`slices`).
//! Which endpoints are used follows kube-proxy's `CategorizeEndpoints` (`select`): ready
//! ones, else serving and terminating ones; only this node's for `internalTrafficPolicy:
//! Local` (the ClusterIP) and for the other kinds when `externalTrafficPolicy` is Local too;
//! only those hinted for this node's zone when topology hints apply. At most
//! [`MAX_BACKENDS`] per frontend. LoadBalancer Services with `externalTrafficPolicy: Local`
//! also get a [`HealthCheck`]: the count of this node's ready endpoints.
//!
//! Bad input never stops the rest: each problem is reported against its object
//! ([`Problem`]), and a Service with one is left out whole rather than programmed in part.
//!
//! Beside it, the ingress table (`ingress`): what the tc datapath serves to traffic entering
//! the node, per IPv4 NodePort, externalIP and LoadBalancer frontend (this node's and other
//! nodes' endpoints apart, by `externalTrafficPolicy`; `loadBalancerSourceRanges`).
//!
//! [`build_table`] builds the whole table at once; [`IncrementalTable`] keeps it up to date
//! from [`Changes`], rebuilding only the Services they touch, with the same per-Service code
//! (`build_service`).

mod changes;
mod family;
mod frontends;
mod incremental;
mod ingress;
mod node;
mod nodeport_addresses;
mod problem;
mod select;
mod service;
mod slices;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_ebpf::{Backend, Frontend, ServiceEntry, MAX_BACKENDS};

pub use changes::Changes;
pub use family::IpFamily;
pub use frontends::FrontendKind;
pub use incremental::{Delta, IncrementalTable, IngressDelta, TableDelta, TableUpdate};
pub use ingress::IngressTable;
pub use node::{node_port_addresses, NodeTopology, ZONE_LABEL};
pub use nodeport_addresses::{NodePortAddresses, NodePortAddressesError};
pub use problem::{ObjectRef, Problem};

use select::{EndpointInfo, TrafficPolicy};
use service::{ProxiedService, ServiceKind};
use slices::SliceIndex;

/// Desired frontends and what each load-balances to (backends sorted and unique).
pub type ServiceTable = BTreeMap<Frontend, ServiceEntry>;

/// The health check a LoadBalancer Service with `externalTrafficPolicy: Local` asks of
/// every node on its `healthCheckNodePort`, so that the load-balancer sends only to nodes
/// with endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub node_port: u16,
    /// Ready endpoints on this node, counted per Service port and summed, as kube-proxy's
    /// `LocalReadyEndpoints` counts them.
    pub local_endpoints: usize,
}

/// The health checks of the programmed Services.
pub type HealthChecks = BTreeMap<ObjectRef, HealthCheck>;

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
    /// The kind of each frontend of the table.
    pub kinds: BTreeMap<Frontend, FrontendKind>,
    /// Sorted, one per object and problem.
    pub problems: Vec<Problem>,
    pub health_checks: HealthChecks,
    /// What traffic entering the node is sent to, per frontend.
    pub ingress: IngressTable,
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

    let mut built = BuiltTable::default();
    let mut owners: BTreeMap<Frontend, ObjectRef> = BTreeMap::new();
    for service in services {
        let Some(object) = service::key(service).map(|(namespace, name)| ObjectRef::service(namespace, name)) else {
            continue;
        };
        let service_slices = slices.of(&object.namespace, &object.name);
        let one = build_service(service, &object, service_slices, node, |f| owners.get(f), &mut problems);
        for (frontend, (kind, entry)) in one.entries {
            owners.insert(frontend, object.clone());
            built.kinds.insert(frontend, kind);
            built.table.insert(frontend, entry);
        }
        for (frontend, service) in one.ingress {
            owners.insert(frontend, object.clone());
            built.ingress.insert(frontend, service);
        }
        built.health_checks.extend(one.health_check.map(|check| (object, check)));
    }
    built.problems = problems.into_iter().collect();
    built
}

/// The frontends Service `service` claims on `node` (cluster IP, externalIPs, LoadBalancer
/// IPs and NodePorts, each port), whether or not it gets them; none when it is not
/// load-balanced or invalid.
fn claimed_frontends(service: &Service, node: &NodeTopology) -> Vec<Frontend> {
    match service::parse(service) {
        Ok(ServiceKind::Proxied(proxied)) => {
            frontends::of(&proxied, &node.node_port_addresses).into_iter().map(|f| f.frontend).collect()
        }
        Ok(ServiceKind::Skipped(_)) | Err(_) => Vec::new(),
    }
}

/// What one Service contributes: its frontends (with their kind), its ingress frontends and
/// its health check.
#[derive(Debug, Default)]
struct ServiceBuild {
    entries: BTreeMap<Frontend, (FrontendKind, ServiceEntry)>,
    ingress: IngressTable,
    health_check: Option<HealthCheck>,
}

impl ServiceBuild {
    /// Every frontend it owns, in either table.
    fn frontends(&self) -> Vec<Frontend> {
        let all: BTreeSet<Frontend> = self.entries.keys().chain(self.ingress.keys()).copied().collect();
        all.into_iter().collect()
    }
}

/// The frontends of one Service (`object`) from its EndpointSlices (those labelled for it,
/// in slice-name order), given who owns each frontend among the Services sorted before it
/// (`owner_of`): a Service that claims a frontend another owns is left out whole, health
/// check included. What is wrong goes to `problems`.
fn build_service<'o>(
    service: &Service,
    object: &ObjectRef,
    slices: &[&EndpointSlice],
    node: &NodeTopology,
    owner_of: impl Fn(&Frontend) -> Option<&'o ObjectRef>,
    problems: &mut BTreeSet<Problem>,
) -> ServiceBuild {
    let proxied = match service::parse(service) {
        Ok(ServiceKind::Proxied(proxied)) => proxied,
        Ok(ServiceKind::Skipped(why)) => {
            tracing::trace!(service = %object, why, "not load-balanced");
            return ServiceBuild::default();
        }
        Err(message) => {
            problems.insert(Problem::new(object.clone(), message));
            return ServiceBuild::default();
        }
    };
    let frontends = frontends::of(&proxied, &node.node_port_addresses);
    let claimed = frontends.iter().find_map(|f| owner_of(&f.frontend).map(|owner| (f, owner)));
    if let Some((taken, owner)) = claimed {
        let message = format!("{} {} already belongs to Service {owner}: skipped", taken.kind, taken.frontend);
        problems.insert(Problem::new(object.clone(), message));
        return ServiceBuild::default();
    }
    let endpoints: Endpoints = proxied
        .families()
        .flat_map(|family| proxied.ports.iter().enumerate().map(move |(index, port)| (index, port, family)))
        .map(|(index, port, family)| {
            let found = slices::endpoints(slices, port, family, proxied.publish_not_ready, node.name.as_deref());
            ((index, family), found)
        })
        .collect();
    let health_check = proxied
        .health_check_node_port
        .map(|node_port| HealthCheck { node_port, local_endpoints: local_ready_endpoints(&proxied, &endpoints) });
    let entries = service_entries(&proxied, &frontends, &endpoints, node, object, problems);
    let ingress = ingress::entries(&proxied, &frontends, &endpoints, node, object, problems);
    ServiceBuild { entries, ingress, health_check }
}

/// The endpoints of a Service, by port index and IP family.
type Endpoints = HashMap<(usize, IpFamily), Vec<EndpointInfo>>;

/// This node's ready endpoints of the Service's primary family, per port and summed: what
/// kube-proxy's proxier of that family counts (`LocalReadyEndpoints`); a dual-stack pod
/// has an address of each family, and counting both would count it twice.
fn local_ready_endpoints(service: &ProxiedService<'_>, endpoints: &Endpoints) -> usize {
    let Some(primary) = service.families().next() else {
        return 0;
    };
    let of_primary = endpoints.iter().filter(|((_, family), _)| *family == primary);
    of_primary.flat_map(|(_, found)| found).filter(|e| e.local && e.ready).count()
}

/// The entries of a Service's frontends, from the endpoints of each of its ports and
/// families: a frontend gets backends of its own family only.
fn service_entries(
    service: &ProxiedService<'_>,
    frontends: &[frontends::ServiceFrontend],
    endpoints: &Endpoints,
    node: &NodeTopology,
    object: &ObjectRef,
    problems: &mut BTreeSet<Problem>,
) -> BTreeMap<Frontend, (FrontendKind, ServiceEntry)> {
    // Frontends of one port, family and policy share their backends (and their problem).
    let mut chosen: HashMap<(usize, IpFamily, TrafficPolicy), Vec<Backend>> = HashMap::new();
    let mut entries = BTreeMap::new();
    for f in frontends.iter().filter(|f| f.socket) {
        let policy = match f.kind {
            FrontendKind::ClusterIp => service.traffic_policy,
            _ => service.external_policy(),
        };
        let family = IpFamily::of(f.frontend.ip);
        let backends = chosen.entry((f.port, family, policy)).or_insert_with(|| {
            let of_port = endpoints.get(&(f.port, family)).map_or(&[][..], Vec::as_slice);
            let usable = select::usable(of_port, policy, node.zone.as_deref());
            capped(usable, f.frontend, node, object, problems)
        });
        entries.insert(
            f.frontend,
            (f.kind, ServiceEntry::with_affinity(backends.clone(), service.affinity).of_kind(f.kind)),
        );
    }
    entries
}

/// At most [`MAX_BACKENDS`] of `backends`, chosen per node; the problem names `frontend`.
fn capped(
    backends: Vec<Backend>,
    frontend: Frontend,
    node: &NodeTopology,
    object: &ObjectRef,
    problems: &mut BTreeSet<Problem>,
) -> Vec<Backend> {
    if backends.len() <= MAX_BACKENDS {
        return backends;
    }
    problems.insert(Problem::new(
        object.clone(),
        format!(
            "{frontend} has {} usable endpoints, more than the {MAX_BACKENDS} a frontend holds: \
             using {MAX_BACKENDS} of them, chosen per node",
            backends.len()
        ),
    ));
    select::subset_for_node(backends, node.name.as_deref().unwrap_or_default(), MAX_BACKENDS)
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

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4() {
        let mut mapped = service();
        if let Some(spec) = mapped.spec.as_mut() {
            spec.external_ips = Some(vec!["::ffff:192.0.2.7".into()]);
        }
        let mut endpoints = slice(0, 1);
        endpoints.endpoints[0].addresses = vec!["::ffff:10.1.0.9".into()];
        let built = build_table([&mapped], &[endpoints], &NodeTopology::default());
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        let frontends: Vec<String> = built.table.keys().map(|f| f.ip.to_string()).collect();
        assert_eq!(frontends, ["10.96.9.1", "192.0.2.7"]);
        let backends = &built.table.values().next().expect("frontend").backends;
        assert_eq!(backends[0].ip.to_string(), "10.1.0.9");
    }
}
