//! Node metrics, with kubelet's names where kubelet has one.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Cheap to clone: every field shares its value with the registered metric.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    node_name: Family<Labels, Gauge>,
    registration_duration_seconds: Gauge<f64, AtomicU64>,
    lease_renewals: Family<Labels, Counter>,
    status_updates: Family<Labels, Counter>,
}

/// Outcome label of a heartbeat attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatResult {
    /// Written to the API server.
    Updated,
    /// Nothing to write (status unchanged and no report due).
    Unchanged,
    Error,
}

impl HeartbeatResult {
    fn label(self) -> Labels {
        let value = match self {
            HeartbeatResult::Updated => "updated",
            HeartbeatResult::Unchanged => "unchanged",
            HeartbeatResult::Error => "error",
        };
        vec![("result".to_string(), value.to_string())]
    }
}

impl NodeMetrics {
    pub(crate) fn set_node_name(&self, node: &str) {
        self.node_name.get_or_create(&vec![("node".to_string(), node.to_string())]).set(1);
    }

    pub(crate) fn set_registration_duration(&self, seconds: f64) {
        self.registration_duration_seconds.set(seconds);
    }

    pub(crate) fn lease_renewal(&self, result: HeartbeatResult) {
        self.lease_renewals.get_or_create(&result.label()).inc();
    }

    pub(crate) fn status_update(&self, result: HeartbeatResult) {
        self.status_updates.get_or_create(&result.label()).inc();
    }

    /// Count of lease renewals with this result so far.
    pub fn lease_renewals(&self, result: HeartbeatResult) -> u64 {
        self.lease_renewals.get_or_create(&result.label()).get()
    }

    /// Count of status syncs with this result so far.
    pub fn status_updates(&self, result: HeartbeatResult) -> u64 {
        self.status_updates.get_or_create(&result.label()).get()
    }
}

/// Register the node metrics in `registry` and return the handle the loops update.
pub fn register_metrics(registry: &mut Registry) -> NodeMetrics {
    let metrics = NodeMetrics::default();
    registry.register("kubelet_node_name", "The node's name. The count is always 1.", metrics.node_name.clone());
    registry.register(
        "kubelet_node_startup_registration_duration_seconds",
        "Duration in seconds of node registration with the API server",
        metrics.registration_duration_seconds.clone(),
    );
    registry.register(
        "nodelet_node_lease_renewals",
        "Node lease renewal attempts by result",
        metrics.lease_renewals.clone(),
    );
    registry.register("nodelet_node_status_updates", "Node status syncs by result", metrics.status_updates.clone());
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn encodes_kubelet_names() {
        let mut registry = Registry::default();
        let metrics = register_metrics(&mut registry);
        metrics.set_node_name("worker-1");
        metrics.lease_renewal(HeartbeatResult::Updated);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert!(text.contains("kubelet_node_name{node=\"worker-1\"} 1"), "{text}");
        assert!(text.contains("nodelet_node_lease_renewals_total{result=\"updated\"} 1"), "{text}");
        assert!(text.contains("kubelet_node_startup_registration_duration_seconds"), "{text}");
    }
}
