//! Every address a Service is reached at from this node, and of which kind: its cluster IPs,
//! its externalIPs, its LoadBalancer ingress IPs and its nodePorts on the node's addresses,
//! each with every port, as kube-proxy and cilium's socket load-balancer program them. Per
//! IP family: a Service gets frontends of the families it has a cluster IP of only.

use std::collections::HashSet;
use std::net::IpAddr;

use nodelet_ebpf::Frontend;

use super::family::IpFamily;
use super::service::ProxiedService;

/// What makes a frontend, kept with it in the datapath for `nodelet proxy list`.
pub use nodelet_ebpf::FrontendKind;

/// One frontend of a Service: the address, its kind, and the index of the Service port it
/// serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ServiceFrontend {
    pub frontend: Frontend,
    pub kind: FrontendKind,
    pub port: usize,
    /// Served by the socket load-balancer too: all but the LoadBalancer IPs of a Service
    /// with `loadBalancerSourceRanges` (a socket hook runs before the socket has a source
    /// address to check, so such connections go to the load-balancer, which enforces
    /// them); those are served to traffic entering the node only.
    pub socket: bool,
}

/// The frontends of `service` on a node whose NodePorts are served on `node_addresses`
/// (both families): the cluster IP, externalIP, LoadBalancer and NodePort ones, each kind
/// port by port, of the Service's families. An address the Service lists twice (an
/// externalIP that is also its ingress IP, say) is one frontend, of the first kind.
pub(super) fn of(service: &ProxiedService<'_>, node_addresses: &[IpAddr]) -> Vec<ServiceFrontend> {
    let ports = || service.ports.iter().enumerate();
    let on = |ip: IpAddr, kind: FrontendKind| {
        let socket = kind != FrontendKind::LoadBalancer || service.load_balancer_source_ranges.is_none();
        ports().map(move |(index, port)| ServiceFrontend {
            frontend: Frontend { ip, port: port.port, protocol: port.protocol },
            kind,
            port: index,
            socket,
        })
    };
    let cluster = service.cluster_ips.iter().flat_map(|ip| on(*ip, FrontendKind::ClusterIp));
    let external = service.external_ips.iter().flat_map(|ip| on(*ip, FrontendKind::ExternalIp));
    let balancer = service.load_balancer_ips.iter().flat_map(|ip| on(*ip, FrontendKind::LoadBalancer));
    let families: Vec<IpFamily> = service.families().collect();
    let node_addresses = node_addresses.iter().filter(|ip| families.contains(&IpFamily::of(**ip)));
    let node_ports = node_addresses.flat_map(|ip| {
        ports().filter_map(move |(index, port)| {
            let node_port = port.node_port?;
            let frontend = Frontend { ip: *ip, port: node_port, protocol: port.protocol };
            Some(ServiceFrontend { frontend, kind: FrontendKind::NodePort, port: index, socket: true })
        })
    });
    let mut seen = HashSet::new();
    cluster.chain(external).chain(balancer).chain(node_ports).filter(|f| seen.insert(f.frontend)).collect()
}
