//! Which endpoints of a Service port a frontend on this node uses: kube-proxy's
//! `CategorizeEndpoints` (pkg/proxy/topology.go) for traffic that starts on this node.

use std::collections::BTreeSet;

use nodelet_ebpf::Backend;

/// Which endpoints a frontend of this node sends to: `internalTrafficPolicy` for the
/// ClusterIP, and [`ProxiedService::external_policy`](super::service::ProxiedService::external_policy)
/// for the other kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum TrafficPolicy {
    /// Any endpoint in the cluster (topology hints permitting).
    Cluster,
    /// Only the endpoints on this node.
    Local,
}

/// One endpoint of a Service port, as read from its slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EndpointInfo {
    pub backend: Backend,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Its `nodeName` is this node.
    pub local: bool,
    /// `hints.forZones`; `None` when it has none.
    pub zone_hints: Option<BTreeSet<String>>,
}

impl EndpointInfo {
    /// Still serving while it shuts down: used only when nothing is ready.
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The backends of the frontend, sorted:
/// - `Cluster`: the ready endpoints, only those hinted for `zone` when topology hints apply
///   ([`zone_hints_apply`]); when none is ready anywhere, the serving and terminating ones
///   (kube-proxy's fallback since 1.26: connections keep working during a rollout that
///   replaced every pod), without topology;
/// - `Local`: this node's ready endpoints, else this node's serving and terminating ones;
///   none at all when the node has neither (connections are then refused: kube-proxy drops
///   them, a socket-level load-balancer can only fail the connect).
pub(super) fn usable(endpoints: &[EndpointInfo], policy: TrafficPolicy, zone: Option<&str>) -> Vec<Backend> {
    let backends: BTreeSet<Backend> = chosen(endpoints, policy, zone).into_iter().map(|e| e.backend).collect();
    backends.into_iter().collect()
}

/// The endpoints [`usable`] takes the backends of, with what else is known of them (for
/// traffic entering the node: which are on this node).
pub(super) fn chosen<'e>(
    endpoints: &'e [EndpointInfo],
    policy: TrafficPolicy,
    zone: Option<&str>,
) -> Vec<&'e EndpointInfo> {
    match policy {
        TrafficPolicy::Cluster => {
            let zone = zone.filter(|zone| zone_hints_apply(endpoints, zone));
            let in_zone =
                |e: &EndpointInfo| zone.is_none_or(|zone| e.zone_hints.as_ref().is_some_and(|h| h.contains(zone)));
            let ready: Vec<&EndpointInfo> = endpoints.iter().filter(|e| e.ready && in_zone(e)).collect();
            if ready.is_empty() {
                endpoints.iter().filter(|e| e.serving_terminating()).collect()
            } else {
                ready
            }
        }
        TrafficPolicy::Local => {
            let local = || endpoints.iter().filter(|e| e.local);
            if local().any(|e| e.ready) {
                local().filter(|e| e.ready).collect()
            } else {
                local().filter(|e| e.serving_terminating()).collect()
            }
        }
    }
}

/// Topology-aware routing (`trafficDistribution: PreferClose`, or the older
/// `service.kubernetes.io/topology-mode: Auto`, make the EndpointSlice controller write
/// `hints.forZones`): applied only when every ready endpoint has zone hints and at least
/// one is hinted for this node's zone; otherwise every ready endpoint is used, as
/// kube-proxy's `topologyModeFromHints` decides.
pub(super) fn zone_hints_apply(endpoints: &[EndpointInfo], zone: &str) -> bool {
    let mut ready = endpoints.iter().filter(|e| e.ready).peekable();
    if ready.peek().is_none() {
        return false;
    }
    let mut any_for_zone = false;
    for endpoint in ready {
        match &endpoint.zone_hints {
            None => return false,
            Some(hints) => any_for_zone |= hints.contains(zone),
        }
    }
    any_for_zone
}

/// `max` of `backends` (sorted), chosen by highest random weight on (node, backend): the
/// same on every sync of this node, different from node to node, so that together the
/// nodes still use every endpoint.
pub(super) fn subset_for_node(backends: Vec<Backend>, node: &str, max: usize) -> Vec<Backend> {
    let mut weighted: Vec<(u64, Backend)> = backends.into_iter().map(|b| (weight(node, &b), b)).collect();
    weighted.sort_unstable();
    let mut kept: Vec<Backend> = weighted.into_iter().take(max).map(|(_, backend)| backend).collect();
    kept.sort_unstable();
    kept
}

/// FNV-1a of the node name and the backend: stable across builds and platforms (std's
/// hashers promise neither).
fn weight(node: &str, backend: &Backend) -> u64 {
    let address = match backend.ip {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let bytes = node.bytes().chain([0]).chain(address).chain(backend.port.to_be_bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn backend(last: u8) -> Backend {
        Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, last)), port: 8080 }
    }

    fn ready(last: u8) -> EndpointInfo {
        EndpointInfo {
            backend: backend(last),
            ready: true,
            serving: true,
            terminating: false,
            local: false,
            zone_hints: None,
        }
    }

    fn hinted(mut endpoint: EndpointInfo, zones: &[&str]) -> EndpointInfo {
        endpoint.zone_hints = Some(zones.iter().map(|z| z.to_string()).collect());
        endpoint
    }

    fn terminating(last: u8, serving: bool) -> EndpointInfo {
        EndpointInfo { ready: false, serving, terminating: true, ..ready(last) }
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let mixed = [ready(1), terminating(2, true)];
        assert_eq!(usable(&mixed, TrafficPolicy::Cluster, None), [backend(1)]);
        let draining = [terminating(2, true), terminating(3, false)];
        assert_eq!(usable(&draining, TrafficPolicy::Cluster, None), [backend(2)]);
    }

    #[test]
    fn hints_apply_only_when_complete_and_matching() {
        let all = [hinted(ready(1), &["a"]), hinted(ready(2), &["b"]), hinted(terminating(3, true), &["a"])];
        assert_eq!(usable(&all, TrafficPolicy::Cluster, Some("a")), [backend(1)]);
        assert_eq!(usable(&all, TrafficPolicy::Cluster, Some("c")), [backend(1), backend(2)], "none for c");
        assert_eq!(usable(&all, TrafficPolicy::Cluster, None), [backend(1), backend(2)], "no zone");
        let partial = [hinted(ready(1), &["a"]), ready(2)];
        assert_eq!(usable(&partial, TrafficPolicy::Cluster, Some("a")), [backend(1), backend(2)]);
    }

    #[test]
    fn local_uses_this_nodes_endpoints_ready_first() {
        let local = |e: EndpointInfo| EndpointInfo { local: true, ..e };
        let endpoints = [ready(1), local(ready(2)), local(terminating(3, true))];
        assert_eq!(usable(&endpoints, TrafficPolicy::Local, None), [backend(2)]);
        let draining = [ready(1), local(terminating(3, true)), local(terminating(4, false))];
        assert_eq!(usable(&draining, TrafficPolicy::Local, None), [backend(3)]);
        assert!(usable(&[ready(1)], TrafficPolicy::Local, None).is_empty(), "none on this node");
    }

    #[test]
    fn subsets_are_stable_per_node_and_differ_between_nodes() {
        let backends: Vec<Backend> = (1..=200).map(backend).collect();
        let a = subset_for_node(backends.clone(), "node-a", 50);
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(a, subset_for_node(backends.clone(), "node-a", 50), "stable");
        assert_ne!(a, subset_for_node(backends, "node-b", 50), "another node, another subset");
    }
}
