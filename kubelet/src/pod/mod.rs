//! Pods on this node: sources (API watch, static manifests), the Kubernetes -> OCI
//! translation, a per-pod worker stepping a state machine, container probes, status
//! reporting, deletion and adoption of containers that outlived an agent restart.
//!
//! Entry points: [`run_api_pods`] (agent mode) and [`run_static_pods`] (`nodelet run DIR`).

pub mod config;
pub mod container_cache;
pub mod dns;
pub mod expand;
pub mod ids;
mod image_pull;
pub mod layout;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod node_runtime;
pub mod pod_files;
pub mod probe;
pub mod pull_secrets;
pub mod quantity;
pub mod runtime_port;
pub mod source;
pub mod status;
pub mod status_sink;
pub mod step;
pub mod teardown;
pub mod translate;
pub mod user;
pub mod worker;

#[cfg(test)]
mod fake_runtime;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::PodConfig;
pub use manager::{PodManager, SourceEvent};
pub use metrics::PodMetrics;
pub use node_runtime::NodeRuntime;
pub use runtime_port::PodRuntime;
pub use source::SourceError;
pub use status_sink::{ApiStatusSink, MemoryStatusSink, StatusSink};

use pull_secrets::{ApiPullSecrets, NoPullSecrets};
use worker::WorkerContext;

use crate::events::EventRecorder;

/// How often `nodelet run` looks at its manifest directory again.
pub const STATIC_RESCAN: Duration = Duration::from_secs(5);

/// Agent mode: run the pods the API server binds to `cfg.node_name`, report their status
/// and finish their deletions, until `shutdown`. Containers keep running after shutdown.
/// The statuses reported update `metrics`.
pub async fn run_api_pods(
    client: kube::Client,
    cfg: PodConfig,
    runtime: Arc<dyn PodRuntime>,
    metrics: &PodMetrics,
    events: EventRecorder,
    shutdown: CancellationToken,
) {
    let sink = metrics.observe(Arc::new(ApiStatusSink::new(client.clone())));
    let node_name = cfg.node_name.clone();
    let context = WorkerContext {
        cfg: Arc::new(cfg),
        runtime,
        sink,
        probe_metrics: metrics.probes(),
        events,
        pull_secrets: Arc::new(ApiPullSecrets::new(client.clone())),
    };
    let manager = PodManager::new(context, shutdown.clone());
    let (tx, rx) = mpsc::channel(64);
    let watch = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { source::watch_api_pods(client, &node_name, tx, shutdown).await }
    });
    manager.run(rx).await;
    let _ = watch.await;
}

/// Standalone mode: run the Pod documents of the manifests in `dir` (rescanned every
/// [`STATIC_RESCAN`]) and report status to `sink`, until `shutdown`. Fails only when `dir`
/// cannot be read; broken manifests are logged and skipped. The statuses reported and the
/// probes run update `metrics`.
pub async fn run_static_pods(
    dir: PathBuf,
    cfg: PodConfig,
    runtime: Arc<dyn PodRuntime>,
    sink: Arc<dyn StatusSink>,
    metrics: &PodMetrics,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    // Fail early, before any worker starts, when the directory is unusable.
    source::load_static_pods(&dir, &cfg.node_name)?;
    let node_name = cfg.node_name.clone();
    let sink = metrics.observe(sink);
    // No API server: events are only logged, and pull secrets cannot be read.
    let context = WorkerContext {
        cfg: Arc::new(cfg),
        runtime,
        sink,
        probe_metrics: metrics.probes(),
        events: EventRecorder::log_only(),
        pull_secrets: Arc::new(NoPullSecrets),
    };
    let manager = PodManager::new(context, shutdown.clone());
    let (tx, rx) = mpsc::channel(64);
    let watch = tokio::spawn(source::watch_static_pods(dir, node_name, STATIC_RESCAN, tx, shutdown.clone()));
    manager.run(rx).await;
    match watch.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
