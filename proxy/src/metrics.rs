//! Prometheus metrics of the proxy, named as kube-proxy's where one exists.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Whether a sync rebuilt and applied the whole table or only the changed Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncKind {
    Full,
    Partial,
}

/// The proxy's metrics; process-wide, like kube-proxy's.
pub(crate) struct ProxyMetrics {
    /// Every sync, full or partial.
    sync_duration: Histogram,
    sync_full_duration: Histogram,
    sync_partial_duration: Histogram,
    last_sync_timestamp: Gauge<f64, AtomicU64>,
    sync_errors: Counter,
    frontends: Gauge,
}

pub(crate) static METRICS: LazyLock<ProxyMetrics> = LazyLock::new(|| ProxyMetrics {
    // kube-proxy's buckets: 1ms doubling 15 times (~16s).
    sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    sync_full_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    sync_partial_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    last_sync_timestamp: Gauge::default(),
    sync_errors: Counter::default(),
    frontends: Gauge::default(),
});

/// Register the proxy's metrics in the registry the binary serves.
pub fn register_metrics(registry: &mut Registry) {
    let metrics = &*METRICS;
    registry.register(
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds",
        metrics.sync_duration.clone(),
    );
    registry.register(
        "kubeproxy_sync_full_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds for full resyncs",
        metrics.sync_full_duration.clone(),
    );
    registry.register(
        "kubeproxy_sync_partial_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds for partial resyncs",
        metrics.sync_partial_duration.clone(),
    );
    registry.register(
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "The last time proxy rules were successfully synced",
        metrics.last_sync_timestamp.clone(),
    );
    registry.register(
        "nodelet_proxy_sync_errors",
        "Syncs of the service table that failed to program the datapath",
        metrics.sync_errors.clone(),
    );
    registry.register(
        "nodelet_proxy_frontends",
        "Service frontends (cluster IP, port, protocol) programmed in the datapath",
        metrics.frontends.clone(),
    );
}

impl ProxyMetrics {
    pub(crate) fn observe_success(&self, kind: SyncKind, took: Duration, frontends: usize) {
        self.observe_duration(kind, took);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.last_sync_timestamp.set(now);
        self.frontends.set(i64::try_from(frontends).unwrap_or(i64::MAX));
    }

    pub(crate) fn observe_failure(&self, kind: SyncKind, took: Duration) {
        self.observe_duration(kind, took);
        self.sync_errors.inc();
    }

    fn observe_duration(&self, kind: SyncKind, took: Duration) {
        let seconds = took.as_secs_f64();
        self.sync_duration.observe(seconds);
        match kind {
            SyncKind::Full => self.sync_full_duration.observe(seconds),
            SyncKind::Partial => self.sync_partial_duration.observe(seconds),
        }
    }

    /// Failed syncs so far (for tests and logs).
    pub(crate) fn sync_errors(&self) -> u64 {
        self.sync_errors.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metrics_are_exposed_under_kube_proxy_names() {
        let mut registry = Registry::default();
        register_metrics(&mut registry);
        METRICS.observe_success(SyncKind::Full, Duration::from_millis(3), 2);
        METRICS.observe_success(SyncKind::Partial, Duration::from_micros(300), 2);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"), "{text}");
        assert!(text.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count"), "{text}");
        assert!(text.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count"), "{text}");
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds "), "{text}");
        assert!(text.contains("nodelet_proxy_sync_errors_total"), "{text}");
        assert!(text.contains("nodelet_proxy_frontends"), "{text}");
    }
}
