//! The node the table is built for: which endpoints are local, and its zone.

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
}

impl NodeTopology {
    /// A node known by name only.
    pub fn named(name: impl Into<String>) -> NodeTopology {
        NodeTopology { name: Some(name.into()), zone: None }
    }

    /// The node `node` (its name and zone label; an empty label is no zone).
    pub fn from_node(node: &Node) -> NodeTopology {
        let zone = node.metadata.labels.as_ref().and_then(|labels| labels.get(ZONE_LABEL)).filter(|z| !z.is_empty());
        NodeTopology { name: node.metadata.name.clone(), zone: zone.cloned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let zoned = NodeTopology::from_node(&node(&[(ZONE_LABEL, "zone-a"), ("other", "x")]));
        assert_eq!(zoned, NodeTopology { name: Some("worker-1".into()), zone: Some("zone-a".into()) });
        assert_eq!(NodeTopology::from_node(&node(&[(ZONE_LABEL, "")])).zone, None);
        assert_eq!(NodeTopology::from_node(&node(&[])), NodeTopology::named("worker-1"));
    }
}
