//! `nodelet run DIR`: standalone mode, static pods and Services from manifests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use nodelet_kubelet::local::LocalConfig;
use nodelet_kubelet::serve;

/// Settings shared by `agent` and `run`: where state lives and how pods are wired on this host.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// The agent's state directory (images, container state, pod directories).
    #[arg(long, default_value = "/var/lib/nodelet")]
    root_dir: PathBuf,
    /// The cgroup under which pods' cgroups are created (kubelet's --cgroup-root).
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// The pod CIDR to take pod IPs from (default: the Node's spec.podCIDR in agent mode).
    #[arg(long)]
    pod_cidr: Option<ipnet::Ipv4Net>,
    /// The bridge pods' veths are attached to.
    #[arg(long, default_value = "nodelet0")]
    bridge: String,
    /// Where pods' network namespaces are bind-mounted.
    #[arg(long, default_value = "/run/nodelet/netns")]
    netns_dir: PathBuf,
    /// The cgroup2 directory the eBPF connect hook is attached to (default: the cgroup2 root,
    /// so every process of the node reaches Services).
    #[arg(long)]
    proxy_attach_cgroup: Option<PathBuf>,
    /// Where to serve /healthz and /metrics (ip:port; "" or "0" serves nothing).
    #[arg(long, default_value = serve::DEFAULT_BIND_ADDRESS, value_parser = parse_bind_address)]
    healthz_bind_address: BindAddress,
}

/// `--healthz-bind-address`, wrapped so that clap does not read `Option` as "flag optional".
#[derive(Clone, Debug)]
struct BindAddress(Option<SocketAddr>);

fn parse_bind_address(text: &str) -> Result<BindAddress, std::net::AddrParseError> {
    serve::parse_bind_address(text).map(BindAddress)
}

impl LocalArgs {
    pub fn into_config(self, node_name: &str) -> anyhow::Result<LocalConfig> {
        let self_exe = std::env::current_exe().context("finding the nodelet executable (for the container monitor)")?;
        Ok(LocalConfig {
            node_name: node_name.to_string(),
            root_dir: self.root_dir,
            cgroup_root: self.cgroup_root,
            pod_cidr: self.pod_cidr,
            bridge: self.bridge,
            netns_dir: self.netns_dir,
            proxy_attach_cgroup: self.proxy_attach_cgroup,
            self_exe,
            healthz_bind_address: self.healthz_bind_address.0,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Directory of manifests (YAML): Pods, Services and EndpointSlices.
    manifest_dir: PathBuf,
    /// The node name static pods are suffixed with (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    #[command(flatten)]
    local: LocalArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let node_name = match args.node_name {
        Some(name) => name,
        None => nodelet_kubelet::local::default_node_name().context("reading the host name for --node-name")?,
    };
    let mut local = args.local.into_config(&node_name)?;
    if local.pod_cidr.is_none() {
        local.pod_cidr = Some(nodelet_kubelet::local::DEFAULT_STANDALONE_POD_CIDR.parse()?);
    }
    local.validate()?;
    let runtime = super::tokio_runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        super::cancel_on_signals(shutdown.clone());
        nodelet_kubelet::standalone::run_standalone(&args.manifest_dir, local, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
