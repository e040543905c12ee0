//! Pods on this node: sources (API watch, static manifests), the Kubernetes -> OCI
//! translation, a per-pod worker stepping a state machine, container probes, status
//! reporting, deletion and adoption of containers that outlived an agent restart.
//!
//! Entry points: [`run_api_pods`] (agent mode) and [`run_static_pods`] (`nodelet run DIR`).

pub mod admission;
pub mod config;
pub mod container_cache;
pub mod dns;
pub mod downward;
pub mod env;
pub mod expand;
pub mod host_devices;
pub mod ids;
pub mod image_groups;
mod image_pull;
pub mod layout;
pub mod lifecycle_hooks;
pub mod manager;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod node_runtime;
pub mod pod_files;
pub mod probe;
pub mod pull_secrets;
pub mod quantity;
pub mod referenced_objects;
pub mod runtime_port;
pub mod seccomp_default;
pub mod security_context;
pub mod service_account_token;
pub mod source;
pub mod source_merge;
pub mod status;
pub mod status_sink;
pub mod step;
pub mod teardown;
pub mod translate;
pub mod user;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod fake_runtime;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use config::PodConfig;
pub use manager::{PodManager, SourceEvent};
pub use metrics::PodMetrics;
pub use node_runtime::NodeRuntime;
pub use runtime_port::PodRuntime;
pub use source::SourceError;
pub use status_sink::{ApiStatusSink, MemoryStatusSink, StatusSink};

use pull_secrets::{ApiPullSecrets, NoPullSecrets};
use referenced_objects::{ApiObjects, NoObjects};
use worker::WorkerContext;

use crate::events::EventRecorder;

/// How often `nodelet run` looks at its manifest directory again.
pub const STATIC_RESCAN: Duration = Duration::from_secs(5);

/// Agent mode: run the pods the API server binds to `cfg.node_name` and the static pods of
/// `static_pod_dir` (kubelet's --pod-manifest-path, with their mirror pods on the API server),
/// report their status and finish their deletions, until `shutdown`. Containers keep running
/// after shutdown. The statuses reported update `metrics`.
pub async fn run_api_pods(
    client: kube::Client,
    cfg: PodConfig,
    static_pod_dir: Option<PathBuf>,
    runtime: Arc<dyn PodRuntime>,
    metrics: &PodMetrics,
    events: EventRecorder,
    shutdown: CancellationToken,
) {
    let (mirrors_tx, mirrors) = watch::channel(None);
    let sink = metrics.observe(Arc::new(ApiStatusSink::with_mirror_pods(client.clone(), mirrors.clone())));
    let node_name = cfg.node_name.clone();
    let context = WorkerContext {
        cfg: Arc::new(cfg),
        runtime,
        sink,
        probe_metrics: metrics.probes(),
        events,
        pull_secrets: Arc::new(ApiPullSecrets::new(client.clone())),
        objects: Arc::new(ApiObjects::new(client.clone())),
    };
    let manager = PodManager::new(context, shutdown.clone());
    let (api_tx, api_rx) = mpsc::channel(64);
    let (files_tx, files_rx) = mpsc::channel(4);
    let (tx, rx) = mpsc::channel(64);
    // The sources stop with the manager, whatever stopped it.
    let shutdown_sources = shutdown.child_token();
    let shutdown = &shutdown_sources;
    let tasks = [
        tokio::spawn({
            let (client, node_name, shutdown) = (client.clone(), node_name.clone(), shutdown.clone());
            async move { source::watch_api_pods(client, &node_name, api_tx, shutdown).await }
        }),
        tokio::spawn(static_pods_of_agent(static_pod_dir, node_name.clone(), files_tx, shutdown.clone())),
        tokio::spawn(source_merge::merge_sources(api_rx, files_rx, tx, mirrors_tx, shutdown.clone())),
        tokio::spawn(mirror::run_mirror_pods(client, node_name, mirrors, shutdown.clone())),
    ];
    manager.run(rx).await;
    shutdown_sources.cancel();
    for task in tasks {
        let _ = task.await;
    }
}

/// The agent's static pods: the directory's, or none.
async fn static_pods_of_agent(
    dir: Option<PathBuf>,
    node_name: String,
    events: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) {
    let Some(dir) = dir else {
        let _ = events.send(SourceEvent::Snapshot(Vec::new())).await;
        return shutdown.cancelled().await;
    };
    // Unreadable counts as empty here, so this never fails.
    let _ = source::watch_static_pods(dir, node_name, STATIC_RESCAN, true, events, shutdown).await;
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
        objects: Arc::new(NoObjects),
    };
    let manager = PodManager::new(context, shutdown.clone());
    let (tx, rx) = mpsc::channel(64);
    let watch = tokio::spawn(source::watch_static_pods(dir, node_name, STATIC_RESCAN, false, tx, shutdown.clone()));
    manager.run(rx).await;
    match watch.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
