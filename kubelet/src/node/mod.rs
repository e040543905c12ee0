//! The Node: machine facts, registration, the Lease heartbeat and node status, as kubelet
//! does them against any conforming API server.

mod api;
mod backoff;
mod conditions;
mod config;
mod facts;
mod images;
mod lease;
mod metrics;
mod object;
mod quantity;
mod register;
mod status;

use k8s_openapi::api::core::v1::Node;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use api::{ApiError, ApiErrorKind, ApiResult, KubeNodeApi, NodeApi, NODE_LEASE_NAMESPACE};
pub use backoff::Backoff;
pub use conditions::{
    conditions_changed, update_conditions, NodeReadiness, DISK_PRESSURE, MEMORY_PRESSURE, PID_PRESSURE, READY,
};
pub use config::{default_kubelet_version, ConfigError, NodeConfig, ResourceReservation};
pub use facts::{FactSources, FactsError, HugePages, NodeFacts};
pub use images::{status_images, NodeImage, MAX_IMAGES};
pub use lease::{run_lease_loop, LeaseHeartbeat, LEASE_INITIAL_BACKOFF, LEASE_MAX_BACKOFF};
pub use metrics::{register_metrics, HeartbeatResult, NodeMetrics};
pub use object::{
    addresses, allocatable, capacity, default_labels, desired_status, effective_hostname, initial_node,
    metadata_reconcile_patch, node_info, status_changed, status_patch, ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH,
    LABEL_ARCH, LABEL_ARCH_BETA, LABEL_HOSTNAME, LABEL_OS, LABEL_OS_BETA,
};
pub use quantity::{format_binary, format_cpu_millis, parse_millis, parse_units, QuantityError};
pub use register::{register_with, try_register};
pub use status::{run_status_loop, StatusReporter, StatusSync};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid node config")]
    Config(#[from] ConfigError),
    #[error("{op} {name}")]
    Api {
        op: &'static str,
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("node {0} not found")]
    NodeNotFound(String),
    #[error("cancelled by shutdown")]
    Cancelled,
}

impl NodeError {
    fn api(op: &'static str, name: &str, source: ApiError) -> Self {
        NodeError::Api { op, name: name.to_string(), source }
    }
}

/// Register the Node (create, or reconcile the existing one), retrying until it works or
/// `shutdown` fires (then Err(Cancelled)). The returned Node carries spec.podCIDR when the
/// controller manager has assigned one.
pub async fn register(
    client: kube::Client,
    cfg: &NodeConfig,
    facts: &NodeFacts,
    readiness: &NodeReadiness,
    shutdown: &CancellationToken,
) -> Result<Node, NodeError> {
    cfg.validate()?;
    register_with(&KubeNodeApi::new(client), cfg, facts, readiness, shutdown).await
}

/// Register, then heartbeat (Lease and status) until `shutdown`. Ok(()) on shutdown; errors
/// only for an invalid config: API failures are retried forever, as kubelet does.
pub async fn run_node(
    client: kube::Client,
    cfg: NodeConfig,
    facts: NodeFacts,
    readiness: watch::Receiver<NodeReadiness>,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let api = KubeNodeApi::new(client);
    run_node_with(&api, cfg, facts, readiness, None, &NodeMetrics::default(), &shutdown).await
}

/// `run_node` over any `NodeApi`, reporting into `metrics` (from `register_metrics`) and,
/// when given, the node's images as `status.images`.
pub async fn run_node_with<A: NodeApi>(
    api: &A,
    cfg: NodeConfig,
    facts: NodeFacts,
    readiness: watch::Receiver<NodeReadiness>,
    images: Option<watch::Receiver<Vec<NodeImage>>>,
    metrics: &NodeMetrics,
    shutdown: &CancellationToken,
) -> Result<(), NodeError> {
    cfg.validate()?;
    let started = Instant::now();
    let initial_readiness = readiness.borrow().clone();
    let node = match register_with(api, &cfg, &facts, &initial_readiness, shutdown).await {
        Ok(node) => node,
        Err(NodeError::Cancelled) => return Ok(()),
        Err(other) => return Err(other),
    };
    metrics.set_registration_duration(started.elapsed().as_secs_f64());
    metrics.set_node_name(&cfg.node_name);

    let heartbeat = LeaseHeartbeat::new(&cfg.node_name, cfg.lease_duration_seconds, node.metadata.uid.clone());
    let renew_interval = cfg.node_lease_renew_interval;
    let update_frequency = cfg.node_status_update_frequency;
    let mut reporter = StatusReporter::new(cfg, facts);
    if let Some(images) = images {
        reporter = reporter.with_images(images);
    }
    tokio::join!(
        run_lease_loop(api, heartbeat, renew_interval, metrics, shutdown),
        run_status_loop(api, reporter, update_frequency, readiness, metrics, shutdown),
    );
    Ok(())
}
