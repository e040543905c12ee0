//! What the tc datapath for traffic entering the node (`nodelet_ebpf::NodePortLb`) serves:
//! a Service's IPv4 TCP and UDP NodePort, externalIP and LoadBalancer frontends, each with
//! this node's endpoints and the other nodes' apart, as kube-proxy treats traffic from
//! outside the node:
//! - `externalTrafficPolicy: Local`: this node's ready endpoints, else its serving and
//!   terminating ones; no remote endpoint (the client's address is kept, and a node
//!   without endpoints drops the packets);
//! - `Cluster`: the endpoints the Service's cluster traffic uses (ready ones, topology hints
//!   permitting, else serving and terminating ones), split into this node's and the
//!   others';
//! - LoadBalancer frontends only: `loadBalancerSourceRanges` (the IPv4 ones), packets from
//!   other sources dropped. NodePorts and externalIPs are not restricted, as kube-proxy.
//!
//! NodePorts on loopback addresses are left out: no packet enters the node for them.

use std::collections::{BTreeMap, BTreeSet};

use nodelet_ebpf::{Backend, Frontend, NodePortService, Protocol};

use super::family::IpFamily;
use super::frontends::{FrontendKind, ServiceFrontend};
use super::select::{self, TrafficPolicy};
use super::service::ProxiedService;
use super::{capped, Endpoints, NodeTopology, ObjectRef, Problem};

/// The frontends of traffic entering the node and what each sends it to.
pub type IngressTable = BTreeMap<Frontend, NodePortService>;

/// Which of a Service's frontends the ingress datapath serves.
fn enters_node(f: &ServiceFrontend) -> bool {
    f.kind != FrontendKind::ClusterIp
        && IpFamily::of(f.frontend.ip) == IpFamily::V4
        && !f.frontend.ip.is_loopback()
        && matches!(f.frontend.protocol, Protocol::Tcp | Protocol::Udp)
}

/// The ingress entries of one Service's frontends.
pub(super) fn entries(
    service: &ProxiedService<'_>,
    frontends: &[ServiceFrontend],
    endpoints: &Endpoints,
    node: &NodeTopology,
    object: &ObjectRef,
    problems: &mut BTreeSet<Problem>,
) -> IngressTable {
    let policy = if service.external_traffic_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
    // Frontends of one port share their backends (and their problem).
    let mut chosen: BTreeMap<usize, (Vec<Backend>, Vec<Backend>)> = BTreeMap::new();
    let mut entries = IngressTable::new();
    for f in frontends.iter().filter(|f| enters_node(f)) {
        let (backends, remote_backends) = chosen
            .entry(f.port)
            .or_insert_with(|| {
                let of_port = endpoints.get(&(f.port, IpFamily::V4)).map_or(&[][..], Vec::as_slice);
                split(of_port, policy, f.frontend, node, object, problems)
            })
            .clone();
        let source_ranges = match (&service.load_balancer_source_ranges, f.kind) {
            (Some(ranges), FrontendKind::LoadBalancer) => ranges.clone(),
            _ => Vec::new(),
        };
        entries.insert(f.frontend, NodePortService { backends, remote_backends, source_ranges });
    }
    entries
}

/// (this node's, the other nodes') backends of `policy`, sorted, at most
/// [`MAX_BACKENDS`](nodelet_ebpf::MAX_BACKENDS) together.
fn split(
    endpoints: &[select::EndpointInfo],
    policy: TrafficPolicy,
    frontend: Frontend,
    node: &NodeTopology,
    object: &ObjectRef,
    problems: &mut BTreeSet<Problem>,
) -> (Vec<Backend>, Vec<Backend>) {
    let chosen = select::chosen(endpoints, policy, node.zone.as_deref());
    let local: BTreeSet<Backend> = chosen.iter().filter(|e| e.local).map(|e| e.backend).collect();
    // An address listed on this node and another (a stale slice) is this node's.
    let remote: BTreeSet<Backend> =
        chosen.iter().filter(|e| !e.local).map(|e| e.backend).filter(|b| !local.contains(b)).collect();
    let all: Vec<Backend> = local.iter().chain(&remote).copied().collect::<BTreeSet<_>>().into_iter().collect();
    let kept: BTreeSet<Backend> = capped(all, frontend, node, object, problems).into_iter().collect();
    let keep = |set: BTreeSet<Backend>| set.into_iter().filter(|b| kept.contains(b)).collect();
    (keep(local), keep(remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{build_table, IngressTable};
    use crate::{parse_service_objects, NodeTopology};
    use std::net::{IpAddr, Ipv4Addr};

    /// A NodePort Service (eTP from `policy`, LoadBalancer with source ranges when
    /// `lb`), and one slice: a ready endpoint on node-a, one on node-b, a terminating one on
    /// node-a.
    fn objects(policy: &str, lb: bool) -> String {
        let kind = if lb { "LoadBalancer" } else { "NodePort" };
        format!(
            "
kind: Service
apiVersion: v1
metadata: {{name: web, namespace: default}}
spec:
  type: {kind}
  clusterIP: 10.96.0.10
  externalTrafficPolicy: {policy}
  externalIPs: [192.0.2.7]
  loadBalancerSourceRanges: [203.0.113.9/24, 'fd00::/8']
  ports: [{{name: http, port: 80, nodePort: 30080}}, {{name: dns, port: 53, protocol: SCTP, nodePort: 30053}}]
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.1}}]}}}}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: dns, port: 5353, protocol: SCTP}}]
endpoints:
  - {{addresses: [10.244.0.1], nodeName: node-a}}
  - {{addresses: [10.244.1.1], nodeName: node-b}}
  - {{addresses: [10.244.0.2], nodeName: node-a, conditions: {{ready: false, serving: true, terminating: true}}}}
"
        )
    }

    fn ingress(yaml: &str) -> IngressTable {
        let objects = parse_service_objects(yaml, "test").expect("parse");
        let node = NodeTopology {
            node_port_addresses: vec!["127.0.0.1".parse().unwrap(), "192.168.0.1".parse().unwrap()],
            ..NodeTopology::named("node-a")
        };
        let built = build_table(&objects.services, &objects.slices, &node);
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        built.ingress
    }

    fn frontend(ip: [u8; 4], port: u16) -> Frontend {
        Frontend { ip: IpAddr::V4(Ipv4Addr::from(ip)), port, protocol: Protocol::Tcp }
    }

    fn backend(last: [u8; 2]) -> Backend {
        Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 244, last[0], last[1])), port: 8080 }
    }

    #[test]
    fn cluster_policy_splits_local_and_remote_endpoints() {
        let table = ingress(&objects("Cluster", false));
        let frontends: Vec<Frontend> = table.keys().copied().collect();
        assert_eq!(frontends, [frontend([192, 0, 2, 7], 80), frontend([192, 168, 0, 1], 30080)], "no loopback, SCTP");
        for service in table.values() {
            assert_eq!(service.backends, [backend([0, 1])]);
            assert_eq!(service.remote_backends, [backend([1, 1])]);
            assert!(service.source_ranges.is_empty(), "NodePorts and externalIPs are not restricted");
        }
    }

    #[test]
    fn local_policy_keeps_this_nodes_endpoints_only_terminating_as_fallback() {
        let table = ingress(&objects("Local", false));
        let service = &table[&frontend([192, 168, 0, 1], 30080)];
        assert_eq!(
            (service.backends.as_slice(), service.remote_backends.as_slice()),
            (&[backend([0, 1])][..], &[][..])
        );

        let draining = objects("Local", false).replace("- {addresses: [10.244.0.1], nodeName: node-a}", "");
        let service = &ingress(&draining)[&frontend([192, 168, 0, 1], 30080)];
        assert_eq!(service.backends, [backend([0, 2])], "serving and terminating when none is ready");
        assert!(service.remote_backends.is_empty());

        let elsewhere = draining.replace("{addresses: [10.244.0.2], nodeName: node-a", "{addresses: [10.244.0.2]");
        let service = &ingress(&elsewhere)[&frontend([192, 168, 0, 1], 30080)];
        assert_eq!(*service, NodePortService::default(), "nothing on this node: dropped");
    }

    #[test]
    fn source_ranges_restrict_load_balancer_ips_only() {
        let table = ingress(&objects("Cluster", true));
        let balancer = &table[&frontend([198, 51, 100, 1], 80)];
        let ranges: Vec<String> = balancer.source_ranges.iter().map(ToString::to_string).collect();
        assert_eq!(ranges, ["203.0.113.0/24"], "IPv4 ones, host bits cleared");
        assert!(table[&frontend([192, 168, 0, 1], 30080)].source_ranges.is_empty());
        assert!(table[&frontend([192, 0, 2, 7], 80)].source_ranges.is_empty());
    }

    #[test]
    fn a_bad_source_range_refuses_the_service() {
        let objects = parse_service_objects(&objects("Cluster", true).replace("203.0.113.9/24", "nope"), "t").unwrap();
        let built = build_table(&objects.services, &objects.slices, &NodeTopology::named("node-a"));
        assert!(built.table.is_empty() && built.ingress.is_empty());
        assert!(built.problems[0].message.contains("\"nope\" is not a CIDR"), "{:?}", built.problems);
    }
}
