//! Settings of the pod side of the agent.

use std::path::PathBuf;
use std::time::Duration;

use super::admission::Allocatable;
use super::dns::{default_host_resolv_conf, DnsSettings};
use super::downward::NodeAllocatable;
use super::security_context::SeccompSettings;

#[derive(Clone, Debug)]
pub struct PodConfig {
    pub node_name: String,
    /// The agent's root; pods live under `<root_dir>/pods/<uid>`.
    pub root_dir: PathBuf,
    /// Parent cgroup of all pods, like "/nodelet" ("/nodelet-e2e-xxxx" in tests).
    pub cgroup_root: String,
    /// Reported as hostIP/hostIPs.
    pub host_ip: Option<String>,
    /// How pods resolve names: the cluster's DNS service and domain, the host's resolver.
    pub dns: DnsSettings,
    /// The node's allocatable resources pods are admitted against; `None`: only host ports
    /// are checked.
    pub allocatable: Option<Allocatable>,
    /// How often a worker looks at its containers when nothing else wakes it.
    pub sync_interval: Duration,
    /// The same when the runtime pushes every container change to the worker: only a
    /// safety net then.
    pub resync_interval: Duration,
    /// How often configMap, secret, downwardAPI and projected volumes are rewritten from their
    /// sources (kubelet's sync frequency, 1 minute).
    pub volume_resync: Duration,
    /// The machine's CPUs, memory and disk, for [`PodConfig::node_allocatable`] when
    /// `allocatable` is unknown.
    pub machine: NodeAllocatable,
    /// KubeletConfiguration's seccompDefault: containers without a seccompProfile run with
    /// RuntimeDefault rather than Unconfined. On by default in nodelet (kubelet's default is
    /// off): a container is confined unless its pod asks for Unconfined.
    pub seccomp_default: bool,
}

impl PodConfig {
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> PodConfig {
        let root_dir = root_dir.into();
        PodConfig {
            node_name: node_name.into(),
            machine: NodeAllocatable::detect(&root_dir),
            root_dir,
            cgroup_root: "/nodelet".to_string(),
            host_ip: None,
            dns: DnsSettings { resolv_conf: Some(default_host_resolv_conf()), ..DnsSettings::default() },
            allocatable: None,
            sync_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            volume_resync: Duration::from_secs(60),
            seccomp_default: true,
        }
    }
}

impl PodConfig {
    /// kubelet's seccomp root, `<root-dir>/seccomp`, and the default profile.
    pub fn seccomp(&self) -> SeccompSettings {
        SeccompSettings { root: self.root_dir.join("seccomp"), default_runtime: self.seccomp_default }
    }

    /// What the node offers pods: the default of a resourceFieldRef on a limit the container
    /// does not set, and the size of memory-backed volumes without a sizeLimit.
    pub fn node_allocatable(&self) -> NodeAllocatable {
        match &self.allocatable {
            Some(a) => NodeAllocatable {
                cpu_millis: a.cpu_millis,
                memory_bytes: a.memory_bytes,
                ephemeral_storage_bytes: a.ephemeral_storage_bytes,
            },
            None => self.machine,
        }
    }
}
