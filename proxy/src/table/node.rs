//! The node the table is built for: which endpoints are local, its zone, and the addresses
//! its NodePorts are served on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

/// The Node label topology hints are matched against.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the table needs to know of the node it is built for, as kube-proxy's hostname and
/// topology labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeTopology {
    /// The node's name: endpoints whose `nodeName` is this are local
    /// (`internalTrafficPolicy: Local`). `None`: no endpoint is local.
    pub name: Option<String>,
    /// The node's `topology.kubernetes.io/zone` label. `None` (no Node object, as in
    /// standalone mode, or no label): topology hints are not applied.
    pub zone: Option<String>,
    /// The addresses NodePorts are served on (sorted, unique): see [`node_port_addresses`].
    /// Empty: no NodePort frontend.
    pub node_port_addresses: Vec<Ipv4Addr>,
}

impl NodeTopology {
    /// A node known by name only (no NodePort address).
    pub fn named(name: impl Into<String>) -> NodeTopology {
        NodeTopology { name: Some(name.into()), ..NodeTopology::default() }
    }

    /// The node `node`: its name, its zone label (an empty label is no zone), and its
    /// NodePort addresses from its status, filtered by `nodeport_addresses` (kube-proxy's
    /// `--nodeport-addresses`; empty: all).
    pub fn from_node(node: &Node, nodeport_addresses: &[Ipv4Net]) -> NodeTopology {
        let zone = node.metadata.labels.as_ref().and_then(|labels| labels.get(ZONE_LABEL)).filter(|z| !z.is_empty());
        NodeTopology {
            name: node.metadata.name.clone(),
            zone: zone.cloned(),
            node_port_addresses: node_port_addresses(&status_addresses(node), nodeport_addresses),
        }
    }

    /// A node without a Node object (standalone mode, or before it was listed): NodePorts on
    /// 127.0.0.1 only, when `nodeport_addresses` allows it.
    pub fn without_node(name: Option<String>, nodeport_addresses: &[Ipv4Net]) -> NodeTopology {
        NodeTopology { name, zone: None, node_port_addresses: node_port_addresses(&[], nodeport_addresses) }
    }
}

/// The node's IPv4 InternalIP and ExternalIP addresses, from its status.
fn status_addresses(node: &Node) -> Vec<Ipv4Addr> {
    let addresses = node.status.as_ref().and_then(|status| status.addresses.as_ref());
    addresses
        .into_iter()
        .flatten()
        .filter(|address| matches!(address.type_.as_str(), "InternalIP" | "ExternalIP"))
        .filter_map(|address| address.address.parse().ok())
        .collect()
}

/// Where NodePorts are served, as kube-proxy's `--nodeport-addresses` chooses (IPv4): the
/// node's `addresses` within one of the `filter` CIDRs (all of them when `filter` is
/// empty), and 127.0.0.1 when the filter allows loopback (kube-proxy's iptables mode
/// accepts NodePorts on localhost then). Sorted, unique.
pub fn node_port_addresses(addresses: &[Ipv4Addr], filter: &[Ipv4Net]) -> Vec<Ipv4Addr> {
    let allowed = |ip: &Ipv4Addr| filter.is_empty() || filter.iter().any(|net| net.contains(ip));
    let chosen: BTreeSet<Ipv4Addr> =
        addresses.iter().copied().chain([Ipv4Addr::LOCALHOST]).filter(|ip| allowed(ip)).collect();
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn node(labels: &[(&str, &str)]) -> Node {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        Node {
            metadata: ObjectMeta { name: Some("worker-1".into()), labels: Some(labels), ..ObjectMeta::default() },
            ..Node::default()
        }
    }

    #[test]
    fn the_zone_comes_from_the_zone_label() {
        let zoned = NodeTopology::from_node(&node(&[(ZONE_LABEL, "zone-a"), ("other", "x")]), &[]);
        assert_eq!(zoned.name.as_deref(), Some("worker-1"));
        assert_eq!(zoned.zone.as_deref(), Some("zone-a"));
        assert_eq!(NodeTopology::from_node(&node(&[(ZONE_LABEL, "")]), &[]).zone, None);
    }

    fn addressed(addresses: &[(&str, &str)]) -> Node {
        let mut node = node(&[]);
        node.status = Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(type_, address)| NodeAddress { type_: (*type_).into(), address: (*address).into() })
                    .collect(),
            ),
            ..NodeStatus::default()
        });
        node
    }

    fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|ip| ip.parse().expect("ip")).collect()
    }

    #[test]
    fn node_ports_are_served_on_the_internal_and_external_ips_and_localhost() {
        let node = addressed(&[
            ("InternalIP", "192.168.1.10"),
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "fd00::10"),
            ("Hostname", "worker-1"),
            ("InternalDNS", "10.9.9.9"),
        ]);
        let all = NodeTopology::from_node(&node, &[]).node_port_addresses;
        assert_eq!(all, ips(&["127.0.0.1", "192.168.1.10", "203.0.113.7"]));

        let filter: Vec<Ipv4Net> = vec!["192.168.0.0/16".parse().expect("cidr")];
        assert_eq!(NodeTopology::from_node(&node, &filter).node_port_addresses, ips(&["192.168.1.10"]));
        let with_loopback: Vec<Ipv4Net> =
            vec!["192.168.0.0/16".parse().expect("cidr"), "127.0.0.0/8".parse().expect("cidr")];
        assert_eq!(
            NodeTopology::from_node(&node, &with_loopback).node_port_addresses,
            ips(&["127.0.0.1", "192.168.1.10"])
        );
    }

    #[test]
    fn without_a_node_object_node_ports_are_on_localhost_only() {
        assert_eq!(NodeTopology::without_node(None, &[]).node_port_addresses, ips(&["127.0.0.1"]));
        let filter: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().expect("cidr")];
        assert!(NodeTopology::without_node(None, &filter).node_port_addresses.is_empty());
        assert!(NodeTopology::named("worker-1").node_port_addresses.is_empty());
    }
}
