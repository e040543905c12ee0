//! Settings for the host side of the agent, shared by `nodelet agent` and `nodelet run`:
//! where state lives, how pods get cgroups and network, where the Service hook attaches.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::pod::dns::DnsSettings;

/// The pod CIDR `nodelet run` uses when none is given (there is no Node to take it from).
pub const DEFAULT_STANDALONE_POD_CIDR: &str = "10.88.0.0/16";

#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub node_name: String,
    /// State: images, container state, pod directories.
    pub root_dir: PathBuf,
    /// Registry hosts (containerd's certs.d layout), read at each pull.
    pub registry_config_dir: PathBuf,
    /// Parent cgroup of the pods' cgroups, as kubelet's --cgroup-root ("/" by default).
    pub cgroup_root: String,
    /// Pod IPs come from here; in agent mode `None` means the Node's spec.podCIDR.
    pub pod_cidr: Option<Ipv4Net>,
    pub bridge: String,
    pub netns_dir: PathBuf,
    /// Masquerade pod egress and turn IPv4 forwarding on.
    pub masquerade: bool,
    /// Not masqueraded; `None` = the pod CIDR.
    pub cluster_cidr: Option<Ipv4Net>,
    /// cgroup2 directory for the Service connect hook; `None` = the cgroup2 root.
    pub proxy_attach_cgroup: Option<PathBuf>,
    /// bpffs directory the Service datapath is pinned in, so that it keeps serving while
    /// nodelet restarts; `None` = not pinned, released on exit (always so for `nodelet run`).
    pub proxy_pin_dir: Option<PathBuf>,
    /// kube-proxy's `--nodeport-addresses`: the CIDRs (IPv4 and IPv6) NodePorts are served
    /// in, or `primary`; no CIDR = all the Node's addresses and 127.0.0.1.
    pub nodeport_addresses: nodelet_proxy::NodePortAddresses,
    /// The external interfaces the Service proxy's tc datapath attaches to, for NodePort,
    /// externalIP and LoadBalancer traffic entering the node (cilium's `--devices`); empty
    /// = that datapath is off.
    pub nodeport_devices: Vec<String>,
    /// This executable, re-run as `nodelet monitor` for the container monitor.
    pub self_exe: PathBuf,
    /// Where /healthz and /metrics are served; `None` = not at all.
    pub healthz_bind_address: Option<SocketAddr>,
    /// How pods resolve names (kubelet's --cluster-dns, --cluster-domain, --resolv-conf).
    pub dns: DnsSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("invalid node name {0:?}: must be a lowercase RFC 1123 subdomain")]
    NodeName(String),
    #[error("--cgroup-root {0:?} must be an absolute cgroup path")]
    CgroupRoot(String),
    #[error("--root-dir {0} must be an absolute path")]
    RootDir(PathBuf),
    #[error("--bridge {0:?} must be 1 to 15 characters")]
    Bridge(String),
    #[error("--pod-cidr {0} leaves no address for pods")]
    PodCidr(Ipv4Net),
    #[error("--pod-manifest-path {0} must be an absolute path")]
    StaticPodPath(PathBuf),
    #[error("--cluster-domain {0:?} must be a DNS domain like cluster.local")]
    ClusterDomain(String),
    #[error("invalid --nodeport-devices")]
    NodePortDevices(#[source] nodelet_proxy::ProxyError),
}

impl LocalConfig {
    pub fn validate(&self) -> Result<(), LocalConfigError> {
        if !is_dns_subdomain(&self.node_name) {
            return Err(LocalConfigError::NodeName(self.node_name.clone()));
        }
        if !self.cgroup_root.starts_with('/') || self.cgroup_root.contains("..") {
            return Err(LocalConfigError::CgroupRoot(self.cgroup_root.clone()));
        }
        if !self.root_dir.is_absolute() {
            return Err(LocalConfigError::RootDir(self.root_dir.clone()));
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(LocalConfigError::Bridge(self.bridge.clone()));
        }
        crate::host_runtime::proxy_config(self).validate_devices().map_err(LocalConfigError::NodePortDevices)?;
        if let Some(domain) = &self.dns.cluster_domain {
            if !is_dns_subdomain(domain) {
                return Err(LocalConfigError::ClusterDomain(domain.clone()));
            }
        }
        if let Some(cidr) = self.pod_cidr {
            // Network, gateway and broadcast addresses are not for pods.
            if cidr.prefix_len() > 29 {
                return Err(LocalConfigError::PodCidr(cidr));
            }
        }
        Ok(())
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root_dir.join("runtime")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }

    pub fn network_state_dir(&self) -> PathBuf {
        self.root_dir.join("network")
    }
}

/// The host name, lowercased, as kubelet's default node name.
pub fn default_node_name() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim().to_lowercase())
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LocalConfig {
        LocalConfig {
            node_name: "worker-1".into(),
            root_dir: "/var/lib/nodelet".into(),
            registry_config_dir: "/etc/nodelet/certs.d".into(),
            cgroup_root: "/".into(),
            pod_cidr: Some("10.88.0.0/24".parse().unwrap()),
            bridge: "nodelet0".into(),
            netns_dir: "/run/nodelet/netns".into(),
            masquerade: true,
            cluster_cidr: None,
            proxy_attach_cgroup: None,
            proxy_pin_dir: None,
            nodeport_addresses: nodelet_proxy::NodePortAddresses::default(),
            nodeport_devices: Vec::new(),
            self_exe: "/usr/bin/nodelet".into(),
            healthz_bind_address: None,
            dns: DnsSettings::default(),
        }
    }

    #[test]
    fn accepts_defaults() {
        config().validate().unwrap();
    }

    #[test]
    fn names_the_bad_setting() {
        let mut c = config();
        c.node_name = "Worker_1".into();
        assert!(c.validate().unwrap_err().to_string().contains("Worker_1"));
        let mut c = config();
        c.cgroup_root = "kubepods".into();
        assert!(c.validate().unwrap_err().to_string().contains("--cgroup-root"));
        let mut c = config();
        c.pod_cidr = Some("10.0.0.0/31".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("--pod-cidr"));
        let mut c = config();
        c.bridge = "a-very-long-bridge-name".into();
        assert!(c.validate().is_err());
    }
}
