//! `nodelet run DIR`: standalone mode. The static pods of a manifest directory run as in
//! agent mode, with their status kept in memory; its Services are load-balanced to the
//! EndpointSlices of the directory plus those nodelet derives from its own pods. In the
//! foreground, like `docker compose up`: on shutdown the pods, their network and the
//! container monitor are released.

mod endpoints;
mod services;

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::host_runtime::{self, HostRuntimeError};
use crate::local::LocalConfig;
use crate::pod::{self, MemoryStatusSink, PodManager, SourceEvent, StatusSink};
use crate::serve::{self, AgentMetrics, ServeError};

pub use endpoints::slices_for_pods;

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("standalone mode needs a pod CIDR (--pod-cidr)")]
    NoPodCidr,
    #[error("reading manifests")]
    Manifests(#[source] pod::SourceError),
    #[error(transparent)]
    HostRuntime(#[from] HostRuntimeError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

pub async fn run_standalone(dir: &Path, cfg: LocalConfig, shutdown: CancellationToken) -> Result<(), StandaloneError> {
    let pod_cidr = cfg.pod_cidr.ok_or(StandaloneError::NoPodCidr)?;
    // Fail before touching the host when the directory is unusable.
    pod::source::load_static_pods(dir, &cfg.node_name).map_err(StandaloneError::Manifests)?;
    let metrics = AgentMetrics::register();
    metrics.node.set_node_name(&cfg.node_name);
    // Held until the pods stop: /healthz answers only while they run.
    let endpoint = serve::start(cfg.healthz_bind_address, metrics.registry.clone(), &shutdown).await?;
    let host = host_runtime::open(&cfg, pod_cidr).await?;
    let pod_config = host_runtime::pod_config(&cfg, None);
    let sink = Arc::new(MemoryStatusSink::new());

    let running = CancellationToken::new();
    let pods = pod::run_static_pods(
        dir.to_path_buf(),
        pod_config.clone(),
        host.node_runtime.clone(),
        sink.clone(),
        &metrics.pods,
        running.clone(),
    );
    let proxy = services::run(dir, &cfg, sink.clone(), running.clone());
    let stop = async {
        shutdown.cancelled().await;
        running.cancel();
    };
    let (pods_result, (), ()) = tokio::join!(pods, proxy, stop);
    drop(endpoint);
    if let Err(err) = pods_result {
        tracing::error!(error = %nodelet_runtime::error_chain(&err), "static pods");
    }

    release_everything(pod_config, host, sink).await;
    Ok(())
}

/// Releases every pod the runtime holds (an empty set of desired pods makes them all
/// orphans), then the bridge and the monitor, which has nothing left to parent.
async fn release_everything(pod_config: pod::PodConfig, host: host_runtime::HostRuntime, sink: Arc<MemoryStatusSink>) {
    tracing::info!("releasing pods, pod network and container monitor");
    let sink: Arc<dyn StatusSink> = sink;
    let context = pod::worker::WorkerContext {
        cfg: Arc::new(pod_config),
        runtime: host.node_runtime.clone(),
        sink,
        probe_metrics: Default::default(),
        events: crate::events::EventRecorder::log_only(),
        pull_secrets: Arc::new(pod::pull_secrets::NoPullSecrets),
        objects: Arc::new(pod::referenced_objects::NoObjects),
    };
    let manager = PodManager::new(context, CancellationToken::new());
    let (events, receiver) = tokio::sync::mpsc::channel(1);
    let _ = events.send(SourceEvent::Snapshot(Vec::new())).await;
    drop(events);
    manager.run(receiver).await;
    if let Err(err) = host.network.remove_bridge().await {
        tracing::warn!(error = %nodelet_runtime::error_chain(&err), "removing the pod bridge");
    }
    if let Err(err) = host.network.release_netns_dir() {
        tracing::warn!(error = %nodelet_runtime::error_chain(&err), "releasing the netns directory");
    }
    host_runtime::stop_idle_monitor(&host.monitor).await;
}
