//! `nodelet agent`: the node against an API server. Registers the Node, opens the runtime
//! parts once the pod CIDR is known, then runs the heartbeats, the pods and the Service proxy
//! side by side until shutdown. Containers keep running after the agent stops.

mod pod_cidr;
pub mod proxy_only;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::{node_reference, ApiEventSink, EventRecorder, EventType};
use crate::host_runtime::{self, HostRuntimeError};
use crate::image_gc;
use crate::kubelet_config::KubeletConfigFile;
use crate::local::{LocalConfig, LocalConfigError};
use crate::node::{self, FactSources, KubeNodeApi, NodeConfig, NodeError, NodeFacts, NodeReadiness};
use crate::pod;
use crate::pod::admission::Allocatable;
use crate::serve::{self, AgentMetrics, ServeError};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub kubeconfig: PathBuf,
    /// kubelet's --node-ip.
    pub node_ip: Option<IpAddr>,
    /// Run the eBPF Service proxy beside the kubelet.
    pub proxy_enabled: bool,
    /// Static pod manifests (kubelet's --pod-manifest-path), mirrored on the API server.
    pub static_pod_dir: Option<PathBuf>,
    pub local: LocalConfig,
    /// The node settings of a KubeletConfiguration file (the local ones are in `local`).
    pub kubelet_config: KubeletConfigFile,
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), LocalConfigError> {
        if let Some(dir) = self.static_pod_dir.as_ref().filter(|dir| !dir.is_absolute()) {
            return Err(LocalConfigError::StaticPodPath(dir.clone()));
        }
        self.local.validate()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building an API client from kubeconfig {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("creating the root directory {path}")]
    RootDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the machine's facts")]
    Facts(#[source] node::FactsError),
    #[error("registering the node")]
    Register(#[source] NodeError),
    #[error(transparent)]
    HostRuntime(#[from] HostRuntimeError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("the Service proxy")]
    Proxy(#[source] nodelet_proxy::ProxyError),
}

pub async fn run_agent(cfg: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let client = client_from_kubeconfig(&cfg.kubeconfig).await?;
    let local = &cfg.local;
    let metrics = AgentMetrics::register();
    // Bound before anything touches the host; held to the end, so /healthz answers only
    // while the loops below run.
    let endpoint = serve::start(local.healthz_bind_address, metrics.registry.clone(), &shutdown).await?;
    std::fs::create_dir_all(&local.root_dir)
        .map_err(|source| AgentError::RootDir { path: local.root_dir.clone(), source })?;
    let facts = NodeFacts::gather(&FactSources::host(&local.root_dir)).map_err(AgentError::Facts)?;
    let mut node_config = NodeConfig {
        node_name: local.node_name.clone(),
        node_ip: cfg.node_ip,
        pod_cidr: local.pod_cidr,
        ..NodeConfig::default()
    };
    cfg.kubelet_config.apply_to_node(&mut node_config);

    // NotReady until the pod network is up, as kubelet reports a runtime network not ready.
    let (readiness_tx, readiness) = watch::channel(NodeReadiness::not_ready(
        "container runtime network not ready",
        "pod network is not configured yet",
    ));
    let events = EventRecorder::start_with(
        Arc::new(ApiEventSink::new(client.clone())),
        &local.node_name,
        cfg.kubelet_config.event_limits(),
        shutdown.clone(),
    );
    let node_ref = node_reference(&local.node_name);
    events.record(node_ref.clone(), EventType::Normal, "Starting", "Starting kubelet.");
    let (images_tx, images) = watch::channel(Vec::new());
    let heartbeats = tokio::spawn({
        let (api, node_metrics, shutdown) = (KubeNodeApi::new(client.clone()), metrics.node.clone(), shutdown.clone());
        let (node_config, facts) = (node_config.clone(), facts.clone());
        async move { node::run_node_with(&api, node_config, facts, readiness, Some(images), &node_metrics, &shutdown).await }
    });

    let Some(pod_cidr) = pod_cidr::resolve(&client, &local.node_name, local.pod_cidr, &shutdown).await else {
        return finish(heartbeats).await; // shut down before a pod CIDR was known
    };
    let host = match host_runtime::open(local, pod_cidr).await {
        Ok(host) => host,
        Err(err) => {
            shutdown.cancel();
            let _ = heartbeats.await;
            return Err(err.into());
        }
    };
    tracing::info!(node = %local.node_name, %pod_cidr, "runtime and pod network ready");
    tokio::spawn(host_runtime::refresh_node_images(host.images.clone(), images_tx, shutdown.clone()));
    tokio::spawn(image_gc::run_image_gc(
        host.images.clone(),
        cfg.kubelet_config.image_gc_policy(),
        events.clone(),
        local.node_name.clone(),
        shutdown.clone(),
    ));
    let _ = readiness_tx.send(NodeReadiness::ready());
    events.record(
        node_ref,
        EventType::Normal,
        "NodeReady",
        format!("Node {} status is now: NodeReady", local.node_name),
    );

    let host_ip = cfg.node_ip.or(facts.internal_ip).map(|ip| ip.to_string());
    let pods = pod::run_api_pods(
        client.clone(),
        pod::PodConfig {
            allocatable: Some(Allocatable::from_quantities(&node::allocatable(&node_config, &facts))),
            seccomp_default: cfg.kubelet_config.seccomp_default.unwrap_or(true),
            ..host_runtime::pod_config(local, host_ip)
        },
        cfg.static_pod_dir.clone(),
        host.node_runtime.clone(),
        &metrics.pods,
        events.clone(),
        shutdown.clone(),
    );
    let proxy = run_proxy(cfg.proxy_enabled, client.clone(), local, shutdown.clone());
    tokio::join!(pods, proxy);
    drop(endpoint);
    finish(heartbeats).await
}

async fn finish(heartbeats: tokio::task::JoinHandle<Result<(), NodeError>>) -> Result<(), AgentError> {
    match heartbeats.await {
        Ok(result) => result.map_err(AgentError::Register),
        Err(join) => {
            tracing::error!(error = %join, "node heartbeat task failed");
            Ok(())
        }
    }
}

/// The proxy failing to load its programs does not stop the kubelet side: it is logged, as
/// a kube-proxy crash would not take the node's pods down.
async fn run_proxy(enabled: bool, client: kube::Client, local: &LocalConfig, shutdown: CancellationToken) {
    if !enabled {
        return;
    }
    let config = host_runtime::proxy_config(local);
    if let Err(err) = nodelet_proxy::run(client, config, shutdown).await {
        tracing::error!(error = %nodelet_runtime::error_chain(&err), "the Service proxy stopped; Services are not load-balanced on this node");
    }
}

pub(crate) async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, AgentError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|source| AgentError::Kubeconfig { path: path.into(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| AgentError::Kubeconfig { path: path.into(), source })?;
    kube::Client::try_from(config).map_err(|source| AgentError::Client { path: path.into(), source })
}
