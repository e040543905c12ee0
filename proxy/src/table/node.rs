//! The node the table is built for: which endpoints are local, its zone, and the addresses
//! its NodePorts are served on.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use super::family::IpFamily;
use super::nodeport_addresses::NodePortAddresses;

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
    /// The addresses NodePorts are served on, of both families (sorted, IPv4 first, unique):
    /// see [`node_port_addresses`]. Empty: no NodePort frontend.
    pub node_port_addresses: Vec<IpAddr>,
}

impl NodeTopology {
    /// A node known by name only (no NodePort address).
    pub fn named(name: impl Into<String>) -> NodeTopology {
        NodeTopology { name: Some(name.into()), ..NodeTopology::default() }
    }

    /// The node `node`: its name, its zone label (an empty label is no zone), and its
    /// NodePort addresses from its status, filtered by `nodeport_addresses` (kube-proxy's
    /// `--nodeport-addresses`).
    pub fn from_node(node: &Node, nodeport_addresses: &NodePortAddresses) -> NodeTopology {
        let zone = node.metadata.labels.as_ref().and_then(|labels| labels.get(ZONE_LABEL)).filter(|z| !z.is_empty());
        let addresses = status_addresses(node);
        let filter = nodeport_addresses.cidrs(&primary_addresses(&addresses));
        NodeTopology {
            name: node.metadata.name.clone(),
            zone: zone.cloned(),
            node_port_addresses: node_port_addresses(&addresses, &filter),
        }
    }

    /// A node without a Node object (standalone mode, or before it was listed): NodePorts on
    /// 127.0.0.1 only, when `nodeport_addresses` allows it (`primary` does: kube-proxy takes
    /// loopback as the node's address when it finds none).
    pub fn without_node(name: Option<String>, nodeport_addresses: &NodePortAddresses) -> NodeTopology {
        let filter = nodeport_addresses.cidrs(&[]);
        NodeTopology { name, zone: None, node_port_addresses: node_port_addresses(&[], &filter) }
    }
}

/// The node's InternalIP and ExternalIP addresses (both families), from its status: the
/// InternalIPs first.
fn status_addresses(node: &Node) -> Vec<IpAddr> {
    let addresses = node.status.as_ref().and_then(|status| status.addresses.as_ref());
    let of_type = |wanted: &'static str| {
        let typed = addresses.into_iter().flatten().filter(move |address| address.type_ == wanted);
        typed.filter_map(|address| address.address.parse().ok().map(super::service::canonical))
    };
    of_type("InternalIP").chain(of_type("ExternalIP")).collect()
}

/// The first of `addresses` (InternalIPs first) of each family: the node's primary
/// addresses, as kube-proxy's `GetNodeHostIPs` picks them.
fn primary_addresses(addresses: &[IpAddr]) -> Vec<IpAddr> {
    let first_of = |family| addresses.iter().copied().find(|ip| IpFamily::of(*ip) == family);
    [IpFamily::V4, IpFamily::V6].into_iter().filter_map(first_of).collect()
}

/// Where NodePorts are served, as kube-proxy's `--nodeport-addresses` chooses, family by
/// family: the node's `addresses` within one of the `filter` CIDRs of their family (all of
/// them when `filter` has none of that family, as kube-proxy's `NewNodePortAddresses`
/// falls back to `0.0.0.0/0` or `::/0`), and 127.0.0.1 when the IPv4 filter allows
/// loopback (kube-proxy's iptables mode accepts NodePorts on localhost then; never `::1`,
/// which kube-proxy does not serve NodePorts on). Sorted, IPv4 first, unique.
pub fn node_port_addresses(addresses: &[IpAddr], filter: &[IpNet]) -> Vec<IpAddr> {
    let allowed = |ip: &IpAddr| {
        let mut of_family = filter.iter().filter(|net| IpFamily::of(net.addr()) == IpFamily::of(*ip)).peekable();
        of_family.peek().is_none() || of_family.any(|net| net.contains(ip))
    };
    let chosen: BTreeSet<IpAddr> = addresses
        .iter()
        .copied()
        .filter(|ip| !(ip.is_ipv6() && ip.is_loopback()))
        .chain([IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .filter(allowed)
        .collect();
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
        let zoned = NodeTopology::from_node(&node(&[(ZONE_LABEL, "zone-a"), ("other", "x")]), &ALL);
        assert_eq!(zoned.name.as_deref(), Some("worker-1"));
        assert_eq!(zoned.zone.as_deref(), Some("zone-a"));
        assert_eq!(NodeTopology::from_node(&node(&[(ZONE_LABEL, "")]), &ALL).zone, None);
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

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().expect("ip")).collect()
    }

    fn cidrs(list: &[&str]) -> NodePortAddresses {
        NodePortAddresses::Cidrs(list.iter().map(|cidr| cidr.parse().expect("cidr")).collect())
    }

    const ALL: NodePortAddresses = NodePortAddresses::Cidrs(Vec::new());

    #[test]
    fn node_ports_are_served_on_the_internal_and_external_ips_and_localhost() {
        let node = addressed(&[
            ("InternalIP", "192.168.1.10"),
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "fd00::10"),
            ("Hostname", "worker-1"),
            ("InternalDNS", "10.9.9.9"),
        ]);
        let all = NodeTopology::from_node(&node, &ALL).node_port_addresses;
        assert_eq!(all, ips(&["127.0.0.1", "192.168.1.10", "203.0.113.7", "fd00::10"]));

        let filter = cidrs(&["192.168.0.0/16"]);
        let no_v6_filter = NodeTopology::from_node(&node, &filter).node_port_addresses;
        assert_eq!(no_v6_filter, ips(&["192.168.1.10", "fd00::10"]), "no IPv6 CIDR: every IPv6 address");
        let with_loopback = cidrs(&["192.168.0.0/16", "127.0.0.0/8"]);
        assert_eq!(
            NodeTopology::from_node(&node, &with_loopback).node_port_addresses,
            ips(&["127.0.0.1", "192.168.1.10", "fd00::10"])
        );
        let both = cidrs(&["203.0.113.0/24", "fd00:1::/64"]);
        assert_eq!(NodeTopology::from_node(&node, &both).node_port_addresses, ips(&["203.0.113.7"]));
        let v6_only = cidrs(&["fd00::/64"]);
        assert_eq!(
            NodeTopology::from_node(&node, &v6_only).node_port_addresses,
            ips(&["127.0.0.1", "192.168.1.10", "203.0.113.7", "fd00::10"]),
            "no IPv4 CIDR: every IPv4 address and localhost"
        );
    }

    #[test]
    fn primary_serves_the_first_internal_ip_of_each_family() {
        let node = addressed(&[
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "192.168.1.10"),
            ("InternalIP", "192.168.1.11"),
            ("ExternalIP", "2001:db8::7"),
        ]);
        let primary = NodeTopology::from_node(&node, &NodePortAddresses::Primary).node_port_addresses;
        assert_eq!(primary, ips(&["192.168.1.10", "2001:db8::7"]), "no InternalIP of IPv6: its first ExternalIP");
        let alone = NodeTopology::without_node(None, &NodePortAddresses::Primary).node_port_addresses;
        assert_eq!(alone, ips(&["127.0.0.1"]), "no Node: loopback, as kube-proxy assumes");
    }

    #[test]
    fn ipv6_loopback_never_serves_node_ports() {
        let node = addressed(&[("InternalIP", "::1"), ("InternalIP", "fd00::10")]);
        assert_eq!(
            NodeTopology::from_node(&node, &cidrs(&["::/0"])).node_port_addresses,
            ips(&["127.0.0.1", "fd00::10"])
        );
    }

    #[test]
    fn without_a_node_object_node_ports_are_on_localhost_only() {
        assert_eq!(NodeTopology::without_node(None, &ALL).node_port_addresses, ips(&["127.0.0.1"]));
        assert!(NodeTopology::without_node(None, &cidrs(&["10.0.0.0/8"])).node_port_addresses.is_empty());
        assert!(NodeTopology::named("worker-1").node_port_addresses.is_empty());
    }
}
