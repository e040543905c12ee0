//! Settings of the pod side of the agent.

use std::path::PathBuf;
use std::time::Duration;

use super::dns::{default_host_resolv_conf, DnsSettings};

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
    /// How often a worker looks at its containers when nothing else wakes it.
    pub sync_interval: Duration,
    /// The same when the runtime pushes every container change to the worker: only a
    /// safety net then.
    pub resync_interval: Duration,
}

impl PodConfig {
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> PodConfig {
        PodConfig {
            node_name: node_name.into(),
            root_dir: root_dir.into(),
            cgroup_root: "/nodelet".to_string(),
            host_ip: None,
            dns: DnsSettings { resolv_conf: Some(default_host_resolv_conf()), ..DnsSettings::default() },
            sync_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
        }
    }
}
