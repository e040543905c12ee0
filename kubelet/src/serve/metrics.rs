//! The one registry the endpoint serves: kubelet's node and pod metrics and kube-proxy's.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::node::{self, NodeMetrics};
use crate::pod::{self, PodMetrics};

/// The registry and the handles the agent's loops report into.
pub struct AgentMetrics {
    pub registry: Arc<Registry>,
    pub node: NodeMetrics,
    pub pods: PodMetrics,
}

impl AgentMetrics {
    /// Register every metric. The proxy's are process-wide, so its numbers show in each
    /// registry made here.
    pub fn register() -> AgentMetrics {
        let mut registry = Registry::default();
        let node = node::register_metrics(&mut registry);
        let pods = pod::metrics::register_metrics(&mut registry);
        nodelet_proxy::register_metrics(&mut registry);
        AgentMetrics { registry: Arc::new(registry), node, pods }
    }
}
