//! Services + EndpointSlices -> the desired service table (pure).
//!
//! For every ClusterIP Service: each IPv4 cluster IP x each port is a
//! frontend; its backends are the ready endpoints of the Service's
//! EndpointSlices (label `kubernetes.io/service-name`, same namespace), on the
//! slice port whose name is the Service port's name (the slice already holds
//! the resolved targetPort number). Headless and ExternalName Services have no
//! virtual IP and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use nodelet_ebpf::{Backend, Frontend, Protocol};

/// Desired frontends and their backends, backends sorted and unique.
pub type ServiceTable = BTreeMap<Frontend, Vec<Backend>>;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const HEADLESS_CLUSTER_IP: &str = "None";
const EXTERNAL_NAME_TYPE: &str = "ExternalName";
const IPV4_ADDRESS_TYPE: &str = "IPv4";

/// Compute the desired table from the current objects.
pub fn build_table<'a, S, E>(services: S, slices: E) -> ServiceTable
where
    S: IntoIterator<Item = &'a Service>,
    E: IntoIterator<Item = &'a EndpointSlice>,
{
    let slices_by_service = index_slices(slices);
    let mut table = ServiceTable::new();
    for service in services {
        let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
            continue;
        };
        let slices = slices_by_service.get(&(namespace.as_str(), name.as_str())).map_or(&[][..], Vec::as_slice);
        add_service(&mut table, service, slices);
    }
    table
}

/// IPv4 EndpointSlices by (namespace, service name).
fn index_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
    let mut index: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != IPV4_ADDRESS_TYPE {
            continue;
        }
        let service = slice.metadata.labels.as_ref().and_then(|labels| labels.get(SERVICE_NAME_LABEL));
        if let (Some(namespace), Some(service)) = (&slice.metadata.namespace, service) {
            index.entry((namespace.as_str(), service.as_str())).or_default().push(slice);
        }
    }
    index
}

fn add_service(table: &mut ServiceTable, service: &Service, slices: &[&EndpointSlice]) {
    let Some(spec) = &service.spec else {
        return;
    };
    if spec.type_.as_deref() == Some(EXTERNAL_NAME_TYPE) {
        return;
    }
    let cluster_ips = cluster_ipv4s(spec.cluster_ips.as_deref(), spec.cluster_ip.as_deref());
    for port in spec.ports.iter().flatten() {
        let (Some(protocol), Ok(service_port)) = (protocol_of(port.protocol.as_deref()), u16::try_from(port.port))
        else {
            continue;
        };
        let backends = ready_backends(slices, port, protocol);
        for ip in &cluster_ips {
            let frontend = Frontend { ip: IpAddr::V4(*ip), port: service_port, protocol };
            table.insert(frontend, backends.clone());
        }
    }
}

/// The Service's IPv4 cluster IPs (`clusterIPs`, or `clusterIP` when that is
/// empty); none for a headless Service.
fn cluster_ipv4s(cluster_ips: Option<&[String]>, cluster_ip: Option<&str>) -> Vec<Ipv4Addr> {
    let listed = cluster_ips.filter(|ips| !ips.is_empty());
    let ips: Vec<&str> = match listed {
        Some(ips) => ips.iter().map(String::as_str).collect(),
        None => cluster_ip.into_iter().collect(),
    };
    ips.into_iter().filter(|ip| *ip != HEADLESS_CLUSTER_IP).filter_map(|ip| ip.parse::<Ipv4Addr>().ok()).collect()
}

/// Kubernetes protocol name (default TCP) to ours; unknown names are skipped.
fn protocol_of(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Ready endpoints of the slices on the slice port named like `port`, sorted
/// and unique (an endpoint may appear in two slices while they are rebalanced).
fn ready_backends(slices: &[&EndpointSlice], port: &ServicePort, protocol: Protocol) -> Vec<Backend> {
    let name = port.name.as_deref().unwrap_or("");
    let mut backends = BTreeSet::new();
    for slice in slices {
        let target_port = slice.ports.iter().flatten().find_map(|slice_port| {
            let same_name = slice_port.name.as_deref().unwrap_or("") == name;
            let same_protocol = protocol_of(slice_port.protocol.as_deref()) == Some(protocol);
            (same_name && same_protocol).then_some(slice_port.port).flatten().and_then(|port| u16::try_from(port).ok())
        });
        let Some(target_port) = target_port else {
            continue;
        };
        for endpoint in slice.endpoints.iter().filter(|e| is_ready(e)) {
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<Ipv4Addr>() {
                    backends.insert(Backend { ip: IpAddr::V4(ip), port: target_port });
                }
            }
        }
    }
    backends.into_iter().collect()
}

/// Ready is true or unset (unset means ready, per the EndpointSlice API).
fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint.conditions.as_ref().and_then(|conditions| conditions.ready).unwrap_or(true)
}
