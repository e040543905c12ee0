//! Opens the node's runtime parts from the local settings, for both `nodelet agent` and
//! `nodelet run`: the image store, the container monitor (spawned when none runs) and the
//! pod network (the bridge, ready for sandboxes).

use std::ffi::OsString;
use std::sync::Arc;

use ipnet::Ipv4Net;
use nodelet_runtime::image::{DockerConfig, ImageError, ImageStore};
use nodelet_runtime::monitor::{Runtime, RuntimeError};
use nodelet_runtime::network::{NetworkConfig, NetworkError, PodNetwork};

use crate::local::LocalConfig;
use crate::pod::{NodeRuntime, PodConfig};

#[derive(Debug, thiserror::Error)]
pub enum HostRuntimeError {
    #[error("creating state directory {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the image store")]
    Images(#[source] ImageError),
    #[error("starting the container monitor")]
    Monitor(#[source] RuntimeError),
    #[error("setting up the pod network on bridge {bridge} for {cidr}")]
    Network {
        bridge: String,
        cidr: Ipv4Net,
        #[source]
        source: NetworkError,
    },
}

/// The runtime parts, opened.
pub struct HostRuntime {
    pub node_runtime: Arc<NodeRuntime>,
    pub images: Arc<ImageStore>,
    pub network: Arc<PodNetwork>,
    pub monitor: Runtime,
}

pub async fn open(cfg: &LocalConfig, pod_cidr: Ipv4Net) -> Result<HostRuntime, HostRuntimeError> {
    for dir in [cfg.root_dir.clone(), cfg.runtime_dir(), cfg.pods_dir()] {
        std::fs::create_dir_all(&dir).map_err(|source| HostRuntimeError::StateDir { path: dir.clone(), source })?;
    }
    let images = ImageStore::open(cfg.images_dir()).map_err(HostRuntimeError::Images)?;
    let images = with_node_credentials(images.with_registry_hosts_dir(&cfg.registry_config_dir), cfg);
    let runtime_dir = cfg.runtime_dir();
    let monitor_args: Vec<OsString> = vec!["monitor".into(), "--root".into(), runtime_dir.clone().into()];
    let monitor = Runtime::connect_or_spawn(&runtime_dir, &cfg.self_exe, &monitor_args)
        .await
        .map_err(HostRuntimeError::Monitor)?;
    let network_config = NetworkConfig {
        bridge: cfg.bridge.clone(),
        netns_dir: cfg.netns_dir.clone(),
        masquerade: cfg.masquerade,
        cluster_cidr: cfg.cluster_cidr,
        ..NetworkConfig::new(pod_cidr, cfg.network_state_dir())
    };
    let network = PodNetwork::new(network_config).await.map_err(|source| HostRuntimeError::Network {
        bridge: cfg.bridge.clone(),
        cidr: pod_cidr,
        source,
    })?;
    let network = Arc::new(network);
    let images = Arc::new(images);
    let node_runtime = NodeRuntime::new(images.clone(), monitor.clone(), network.clone());
    Ok(HostRuntime { node_runtime: Arc::new(node_runtime), images, network, monitor })
}

/// The node's registry credentials, where kubelet looks for them: `<root-dir>/config.json`,
/// then `$HOME/.docker/config.json` (the first that exists). A broken file is logged, naming
/// it, and pulls go on without it, as kubelet does.
fn with_node_credentials(store: ImageStore, cfg: &LocalConfig) -> ImageStore {
    let home = std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".docker/config.json"));
    let Some(path) = std::iter::once(cfg.root_dir.join("config.json")).chain(home).find(|path| path.is_file()) else {
        return store;
    };
    match DockerConfig::load(&path) {
        Ok(config) => {
            tracing::info!(path = %path.display(), "registry credentials for the node");
            store.with_credentials(config)
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), "ignoring registry credentials: {}", nodelet_runtime::error_chain(&error));
            store
        }
    }
}

/// How often the node's image list is re-read for `status.images`: as often as the node
/// status is computed (reading the store's index is cheap).
const NODE_IMAGES_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Keep `images` current with the store's images until `shutdown`.
pub async fn refresh_node_images(
    store: Arc<ImageStore>,
    images: tokio::sync::watch::Sender<Vec<crate::node::NodeImage>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let listed = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.summaries()
        })
        .await;
        match listed {
            Ok(Ok(list)) => {
                let list: Vec<crate::node::NodeImage> = list
                    .into_iter()
                    .map(|image| crate::node::NodeImage {
                        names: vec![image.repo_digest, image.reference],
                        size_bytes: image.size,
                    })
                    .collect();
                images.send_if_modified(|current| {
                    let changed = *current != list;
                    *current = list;
                    changed
                });
            }
            Ok(Err(error)) => {
                tracing::warn!("listing images for the node status: {}", nodelet_runtime::error_chain(&error))
            }
            Err(error) => tracing::warn!(%error, "listing images for the node status"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(NODE_IMAGES_REFRESH) => {}
        }
    }
}

/// The pod side's settings from the local ones.
pub fn pod_config(cfg: &LocalConfig, host_ip: Option<String>) -> PodConfig {
    PodConfig {
        cgroup_root: cfg.cgroup_root.clone(),
        host_ip,
        dns: cfg.dns.clone(),
        ..PodConfig::new(cfg.node_name.clone(), cfg.root_dir.clone())
    }
}

/// The Service proxy's settings from the local ones.
pub fn proxy_config(cfg: &LocalConfig) -> nodelet_proxy::ProxyConfig {
    let defaults = nodelet_proxy::ProxyConfig::default();
    nodelet_proxy::ProxyConfig {
        attach_cgroup: cfg.proxy_attach_cgroup.clone().unwrap_or(defaults.attach_cgroup),
        pin_dir: cfg.proxy_pin_dir.clone(),
        node_name: Some(cfg.node_name.clone()),
        nodeport_addresses: cfg.nodeport_addresses.clone(),
        nodeport_devices: cfg.nodeport_devices.clone(),
        pod_bridge: cfg.bridge.clone(),
        ..defaults
    }
}

/// How long `stop_idle_monitor` waits for the monitor to exit: 100 polls of 50 ms.
const MONITOR_STOP_POLLS: u32 = 100;
const MONITOR_STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Ends the container monitor this process relies on, once it parents no container
/// (standalone mode on exit). SIGTERM by the pid the monitor recorded.
pub async fn stop_idle_monitor(monitor: &Runtime) {
    match monitor.list().await {
        Ok(containers) if containers.is_empty() => {}
        Ok(containers) => {
            tracing::warn!(count = containers.len(), "container monitor left running: it still parents containers");
            return;
        }
        Err(err) => {
            tracing::warn!(error = %nodelet_runtime::error_chain(&err), "asking the container monitor for its containers");
            return;
        }
    }
    match monitor.monitor_pid() {
        Ok(pid) => {
            let pid = nix::unistd::Pid::from_raw(pid);
            if let Err(errno) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                tracing::warn!(%pid, %errno, "stopping the container monitor");
                return;
            }
            // Return only once it is gone, so nothing of ours outlives `nodelet run`.
            for _ in 0..MONITOR_STOP_POLLS {
                if nix::sys::signal::kill(pid, None).is_err() {
                    return;
                }
                tokio::time::sleep(MONITOR_STOP_POLL).await;
            }
            tracing::warn!(%pid, "the container monitor did not exit after SIGTERM");
        }
        Err(err) => {
            tracing::warn!(error = %nodelet_runtime::error_chain(&err), "finding the container monitor's pid")
        }
    }
}
