//! `nodelet agent`: a cluster node against any conforming Kubernetes API server.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use nodelet_kubelet::agent::AgentConfig;

use super::run::{LocalArgs, PinPolicy};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Path to a kubeconfig file (token or client-certificate credentials).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The Node's name (default: the host name, lowercased).
    #[arg(long)]
    node_name: Option<String>,
    /// The IP address to report as the Node's InternalIP (default: the address of the
    /// interface holding the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Do not run the eBPF Service proxy (when kube-proxy or another one runs on this node).
    #[arg(long)]
    disable_proxy: bool,
    /// A directory of static pod manifests, run beside the API server's pods with a mirror pod
    /// each on the API server (kubelet's --pod-manifest-path; rescanned every 5 s; it may
    /// appear later).
    #[arg(long, value_name = "DIR")]
    pod_manifest_path: Option<PathBuf>,
    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1) with the settings nodelet
    /// supports (podCIDR, cgroupRoot, healthzBindAddress, healthzPort, maxPods, systemReserved,
    /// kubeReserved, nodeStatusUpdateFrequency, nodeStatusReportFrequency,
    /// nodeLeaseDurationSeconds, clusterDNS, clusterDomain, resolvConf, staticPodPath, the image
    /// GC thresholds and minimum age, eventRecordQPS, eventBurst); any
    /// other field is an error. Flags win over the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    local: LocalArgs,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let node_name = match args.node_name {
        Some(name) => name,
        None => nodelet_kubelet::local::default_node_name().context("reading the host name for --node-name")?,
    };
    let file = args.config.as_deref().map(nodelet_kubelet::kubelet_config::load).transpose()?;
    let local = args.local.into_config(&node_name, PinPolicy::PinByDefault, file.as_ref())?;
    let config = AgentConfig {
        kubeconfig: args.kubeconfig,
        node_ip: args.node_ip,
        proxy_enabled: !args.disable_proxy,
        static_pod_dir: args.pod_manifest_path.or_else(|| file.as_ref().and_then(|f| f.static_pod_path.clone())),
        local,
        kubelet_config: file.unwrap_or_default(),
    };
    config.validate()?;
    let runtime = super::tokio_runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        super::cancel_on_signals(shutdown.clone());
        nodelet_kubelet::agent::run_agent(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
