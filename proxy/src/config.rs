//! Where the proxy attaches its load-balancer, and for which node it builds the table.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use nodelet_ebpf::MapSizes;

use crate::error::ProxyError;
use crate::table::NodePortAddresses;

/// The pin directory of `nodelet agent` and `nodelet proxy` (cilium pins under /sys/fs/bpf too).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/nodelet";

/// The pod bridge of `nodelet agent` and `nodelet run` (`--bridge`).
pub const DEFAULT_POD_BRIDGE: &str = "nodelet0";
/// The longest interface name Linux takes (IFNAMSIZ less the NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// The default cgroup mount point.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where systemd mounts cgroup2 on hybrid hosts (v1 controllers beside it).
const HYBRID_UNIFIED_DIR: &str = "unified";
/// A file only cgroup2 directories have.
const CGROUP2_MARKER: &str = "cgroup.controllers";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The cgroup2 directory the load-balancer's hooks (connect, sendmsg, recvmsg and
    /// getpeername, each for IPv4 and IPv6) are attached to: every process in it or below is
    /// load-balanced (the node: the cgroup2 root).
    pub attach_cgroup: PathBuf,
    /// A bpffs directory to pin the maps and the cgroup links in: the datapath then keeps
    /// serving after the proxy exits, and the next start reuses it. `None`: everything is
    /// released when the proxy stops.
    pub pin_dir: Option<PathBuf>,
    /// Capacity of the load-balancer's maps, fixed when they are created (maps reused
    /// from `pin_dir` keep the size they were created with).
    pub map_sizes: MapSizes,
    /// The node this proxy runs on, as kube-proxy's `--hostname-override`: endpoints whose
    /// `nodeName` is this one are local (`internalTrafficPolicy: Local`), and, when watching
    /// the API, this Node's `topology.kubernetes.io/zone` label selects the endpoints hinted
    /// for its zone. `None`: no endpoint is local and no topology hint applies.
    pub node_name: Option<String>,
    /// kube-proxy's `--nodeport-addresses`, CIDRs of both families or `primary`: NodePorts
    /// are served on the Node's InternalIP and ExternalIP addresses within the CIDRs of their
    /// family (all of that family's addresses when none is given for it), and on 127.0.0.1
    /// when the IPv4 CIDRs allow it (never on `::1`). No CIDR: on all of the Node's
    /// addresses and 127.0.0.1.
    pub nodeport_addresses: NodePortAddresses,
    /// The address the health check servers of LoadBalancer Services with
    /// `externalTrafficPolicy: Local` listen on, each on its `healthCheckNodePort`
    /// (kube-proxy: all addresses).
    pub health_check_bind_address: IpAddr,
    /// The node's external interfaces (cilium's `--devices`): traffic entering through them
    /// to a NodePort on the node's addresses, an externalIP or a LoadBalancer IP (IPv4, TCP
    /// and UDP) is load-balanced by the tc datapath, to this node's pods with the client's
    /// address kept, or to other nodes' pods behind the node's address
    /// (`externalTrafficPolicy: Cluster`). Empty (the default): the ingress datapath is off,
    /// since attaching to the node's interfaces must be an explicit choice.
    pub nodeport_devices: Vec<String>,
    /// The pods' bridge (`--bridge`): their replies to load-balanced traffic are translated
    /// back there. Used only with `nodeport_devices`.
    pub pod_bridge: String,
}

impl Default for ProxyConfig {
    /// The cgroup2 root: `/sys/fs/cgroup` when pure v2,
    /// `/sys/fs/cgroup/unified` on hybrid hosts.
    fn default() -> Self {
        ProxyConfig {
            attach_cgroup: cgroup2_root_under(Path::new(CGROUP_ROOT)),
            pin_dir: None,
            map_sizes: MapSizes::default(),
            node_name: None,
            nodeport_addresses: NodePortAddresses::default(),
            health_check_bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            nodeport_devices: Vec::new(),
            pod_bridge: String::from(DEFAULT_POD_BRIDGE),
        }
    }
}

impl ProxyConfig {
    /// Check that `attach_cgroup` is a cgroup2 directory.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let path = &self.attach_cgroup;
        if !path.is_dir() {
            return Err(ProxyError::Config { path: path.clone(), reason: "attach_cgroup is not a directory" });
        }
        if !path.join(CGROUP2_MARKER).exists() {
            return Err(ProxyError::Config {
                path: path.clone(),
                reason: "attach_cgroup is not a cgroup2 directory (no cgroup.controllers)",
            });
        }
        Ok(())
    }
}

impl ProxyConfig {
    /// Check that `nodeport_devices` and `pod_bridge` are interface names, the bridge not
    /// among the devices.
    pub fn validate_devices(&self) -> Result<(), ProxyError> {
        for device in &self.nodeport_devices {
            check_interface_name(device, "--nodeport-devices entry")?;
        }
        check_interface_name(&self.pod_bridge, "pod bridge")?;
        if self.nodeport_devices.contains(&self.pod_bridge) {
            let (what, reason) = ("--nodeport-devices entry", "the pod bridge is not an external device");
            return Err(ProxyError::Device { what, device: self.pod_bridge.clone(), reason });
        }
        Ok(())
    }
}

/// What Linux accepts as an interface name (`dev_valid_name`); `what` names it in the error.
fn check_interface_name(name: &str, what: &'static str) -> Result<(), ProxyError> {
    let invalid = |reason| Err(ProxyError::Device { what, device: name.to_owned(), reason });
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return invalid("an interface name is 1 to 15 bytes");
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return invalid("not an interface name");
    }
    Ok(())
}

/// The cgroup2 root under a cgroup mount point: the mount point itself when it
/// is cgroup2, else its `unified` directory (hybrid hosts).
pub fn cgroup2_root_under(cgroup_root: &Path) -> PathBuf {
    if cgroup_root.join(CGROUP2_MARKER).exists() {
        cgroup_root.to_path_buf()
    } else {
        cgroup_root.join(HYBRID_UNIFIED_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn pure_v2_uses_the_mount_point() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join(CGROUP2_MARKER), "cpu io\n").expect("marker");
        assert_eq!(cgroup2_root_under(root.path()), root.path());
    }

    #[test]
    fn hybrid_uses_unified() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(cgroup2_root_under(root.path()), root.path().join("unified"));
    }

    #[test]
    fn default_map_sizes_hold_ten_thousand_services_of_ten_endpoints() {
        let sizes = ProxyConfig::default().map_sizes;
        assert_eq!(sizes, MapSizes::default());
        assert!(sizes.services >= MapSizes::services_needed(10_000, 10), "{sizes:?}");
    }

    #[test]
    fn devices_must_be_interface_names_other_than_the_bridge() {
        let with = |devices: &[&str]| ProxyConfig {
            nodeport_devices: devices.iter().map(|d| d.to_string()).collect(),
            ..ProxyConfig::default()
        };
        with(&["eth0", "ens3.100"]).validate_devices().expect("valid");
        for (devices, reason) in [
            (&["eth0", ""][..], "1 to 15 bytes"),
            (&["a-very-long-interface"][..], "1 to 15 bytes"),
            (&["eth 0"][..], "not an interface name"),
            (&["nodelet0"][..], "the pod bridge is not an external device"),
        ] {
            let error = with(devices).validate_devices().expect_err("invalid").to_string();
            assert!(error.contains(reason), "{devices:?}: {error}");
        }
    }

    #[test]
    fn validate_rejects_non_cgroup2_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = ProxyConfig { attach_cgroup: dir.path().join("absent"), ..ProxyConfig::default() };
        assert!(missing.validate().is_err());
        let plain = ProxyConfig { attach_cgroup: dir.path().to_path_buf(), ..ProxyConfig::default() };
        let error = plain.validate().expect_err("not cgroup2");
        assert!(error.to_string().contains("not a cgroup2 directory"), "{error}");
        fs::write(dir.path().join(CGROUP2_MARKER), "").expect("marker");
        plain.validate().expect("cgroup2");
    }
}
