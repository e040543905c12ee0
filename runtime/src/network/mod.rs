//! Pod sandbox networks: one Linux bridge per node holding the gateway address of the pod
//! CIDR, and per sandbox a network namespace bind-mounted at `<netns_dir>/<id>` (no pause
//! process), a veth pair from the bridge to `eth0` inside it, an address from the pod CIDR
//! and a default route via the bridge.
//!
//! - `netns`: namespaces kept alive by a bind mount, created on throwaway threads;
//! - `netlink`: rtnetlink connections on the host and inside a namespace;
//! - `bridge`, `veth`, `address`: the links, addresses and routes;
//! - `ipam`: address allocations, one file per address in `state_dir`;
//! - `egress`: IP forwarding and masquerade of pod traffic leaving the node;
//! - `sandbox`: setup and teardown of a sandbox, with rollback.

mod address;
mod bridge;
mod egress;
mod error;
mod ipam;
mod netlink;
mod netns;
mod sandbox;
mod veth;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

pub use error::NetworkError;
pub use veth::host_veth_name;

use ipam::AddressPool;
use netlink::Netlink;

pub const DEFAULT_BRIDGE: &str = "nodelet0";
pub const DEFAULT_NETNS_DIR: &str = "/run/nodelet/netns";
pub const DEFAULT_MTU: u32 = 1500;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bridge name, default [`DEFAULT_BRIDGE`].
    pub bridge: String,
    /// Gateway = first host address, given to the bridge; pods get the following ones.
    pub pod_cidr: Ipv4Net,
    /// Where sandbox namespaces are bind-mounted, default [`DEFAULT_NETNS_DIR`].
    pub netns_dir: PathBuf,
    /// IP allocations, one file per address; survive restarts.
    pub state_dir: PathBuf,
    /// MTU of both veth ends, default [`DEFAULT_MTU`].
    pub mtu: u32,
    /// Masquerade pod traffic that leaves the cluster (and turn IPv4 forwarding on), as the
    /// bridge CNI plugin's `ipMasq`. Default on.
    pub masquerade: bool,
    /// Destinations not masqueraded (kube-proxy's `--cluster-cidr`); the pod CIDR when unset.
    pub cluster_cidr: Option<Ipv4Net>,
}

impl NetworkConfig {
    /// A config with the default bridge, netns directory and MTU.
    pub fn new(pod_cidr: Ipv4Net, state_dir: impl Into<PathBuf>) -> NetworkConfig {
        NetworkConfig {
            bridge: DEFAULT_BRIDGE.to_string(),
            pod_cidr,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            state_dir: state_dir.into(),
            mtu: DEFAULT_MTU,
            masquerade: true,
            cluster_cidr: None,
        }
    }

    fn validate(&self) -> Result<(), NetworkError> {
        let invalid = |reason: String| Err(NetworkError::InvalidConfig { reason });
        let name = &self.bridge;
        if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
            return invalid(format!("bridge name {name:?} must have 1 to {MAX_INTERFACE_NAME} bytes"));
        }
        if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return invalid(format!("bridge name {name:?} contains '/', ':' or whitespace"));
        }
        // Ethernet's minimum for IPv4 and veth's maximum.
        if !(68..=65535).contains(&self.mtu) {
            return invalid(format!("mtu {} is outside 68..=65535", self.mtu));
        }
        if let Some(cluster) = self.cluster_cidr {
            if !cluster.contains(&self.pod_cidr) {
                return invalid(format!("cluster CIDR {cluster} does not contain the pod CIDR {}", self.pod_cidr));
            }
        }
        Ok(())
    }
}

/// Run `f` (it spawns iptables) off the async threads. The blocking pool's threads are
/// created by the runtime's threads, so they are in the same network namespace.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetworkError::HelperThread { what: format!("pod egress rules ({e})"), source: None })?
}

/// A sandbox's network as set up on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxNetwork {
    pub id: String,
    /// The bind-mounted namespace, for `setns` by the container runtime.
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Host end of the veth pair (see [`host_veth_name`]).
    pub host_veth: String,
}

/// The node's pod network. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (mounts), and a tokio
/// runtime (it keeps a netlink connection driven by a task).
pub struct PodNetwork {
    cfg: NetworkConfig,
    pool: AddressPool,
    host: Netlink,
    /// Serializes setup and teardown in this process, so that concurrent calls for the same
    /// id cannot interleave (address allocation alone is also safe across processes).
    busy: tokio::sync::Mutex<()>,
}

impl PodNetwork {
    /// Ensure the bridge exists, has the gateway address and is up; prepare the netns and
    /// state directories. Idempotent.
    pub async fn new(cfg: NetworkConfig) -> Result<PodNetwork, NetworkError> {
        cfg.validate()?;
        let pool = AddressPool::open(cfg.pod_cidr, &cfg.state_dir)?;
        netns::prepare_dir(&cfg.netns_dir)?;
        let host = Netlink::connect_host()?;
        let network = PodNetwork { cfg, pool, host, busy: tokio::sync::Mutex::new(()) };
        network.ensure_bridge().await?;
        if network.cfg.masquerade {
            let (pod_cidr, cluster_cidr) = (network.cfg.pod_cidr, network.cfg.cluster_cidr);
            blocking(move || egress::ensure(pod_cidr, cluster_cidr)).await?;
        }
        Ok(network)
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The gateway address (on the bridge) of every sandbox.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pool.gateway()
    }

    /// Sandboxes known on disk (for adoption and garbage collection after a restart), sorted
    /// by address. A listed sandbox may be half torn down; `teardown` copes with that.
    pub fn list(&self) -> Result<Vec<SandboxNetwork>, NetworkError> {
        Ok(self.pool.allocations()?.into_iter().map(|(ip, id)| self.sandbox(&id, ip)).collect())
    }

    /// Remove the bridge and the egress rules (used by tests and `nodelet run` cleanup; the
    /// agent keeps them).
    pub async fn remove_bridge(&self) -> Result<(), NetworkError> {
        if self.cfg.masquerade {
            blocking(egress::remove).await?;
        }
        if bridge::remove(&self.host, &self.cfg.bridge).await? {
            tracing::info!(bridge = %self.cfg.bridge, "removed pod bridge");
        }
        Ok(())
    }

    /// Release the netns directory's own bind mount once it holds no sandbox (`nodelet run`
    /// cleanup; the agent keeps it, as iproute2 keeps /run/netns).
    pub fn release_netns_dir(&self) -> Result<(), NetworkError> {
        netns::release_dir(&self.cfg.netns_dir)
    }

    /// Ensure the bridge and return its index. Also run before each setup, so a bridge
    /// deleted behind our back comes back.
    async fn ensure_bridge(&self) -> Result<u32, NetworkError> {
        let gateway = Ipv4Net::new(self.pool.gateway(), self.pool.prefix_len())
            .map_err(|e| NetworkError::InvalidConfig { reason: format!("gateway of {}: {e}", self.cfg.pod_cidr) })?;
        bridge::ensure(&self.host, &self.cfg.bridge, gateway).await
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.netns_dir.join(id)
    }

    fn sandbox(&self, id: &str, ip: Ipv4Addr) -> SandboxNetwork {
        SandboxNetwork {
            id: id.to_string(),
            netns_path: self.netns_path(id),
            ip,
            prefix_len: self.pool.prefix_len(),
            gateway: self.pool.gateway(),
            host_veth: host_veth_name(id),
        }
    }
}
