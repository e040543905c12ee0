//! What the node part needs to know from flags and config files, with kubelet's defaults.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

use super::quantity::{parse_millis, parse_units, QuantityError};

/// kubelet's `--node-status-update-frequency` default.
pub const DEFAULT_STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
/// kubelet's `nodeStatusReportFrequency` default: report at least this often even when nothing changed.
pub const DEFAULT_STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(5 * 60);
/// kubelet's `nodeLeaseDurationSeconds` default.
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 40;
/// kubelet renews its lease at a quarter of the lease duration.
const LEASE_RENEW_FRACTION: f64 = 0.25;
/// kubelet's `--max-pods` default.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// kubelet's `--port` default, published as daemonEndpoints.kubeletEndpoint.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node name must not be empty")]
    EmptyNodeName,
    #[error("node name {0:?} is not a valid DNS subdomain")]
    InvalidNodeName(String),
    #[error("node ip {0} is not a usable unicast address")]
    InvalidNodeIp(IpAddr),
    #[error("{field} must be positive")]
    NotPositive { field: &'static str },
    #[error("node status report frequency must not be shorter than the update frequency")]
    ReportFasterThanUpdate,
    #[error("label key {0:?} is invalid")]
    InvalidLabel(String),
    #[error("invalid reservation {text:?}")]
    InvalidReservation {
        text: String,
        #[source]
        source: Option<QuantityError>,
    },
}

/// Resources held back from pods (`--system-reserved`, `--kube-reserved`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceReservation {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl ResourceReservation {
    /// Parse kubelet's flag form: `cpu=100m,memory=256Mi,ephemeral-storage=1Gi`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut reservation = ResourceReservation::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let invalid = |source| ConfigError::InvalidReservation { text: item.to_string(), source };
            let (name, value) = item.split_once('=').ok_or_else(|| invalid(None))?;
            match name.trim() {
                "cpu" => {
                    let millis = parse_millis(value).map_err(|e| invalid(Some(e)))?;
                    reservation.cpu_millis = u64::try_from(millis).map_err(|_| invalid(None))?;
                }
                "memory" => reservation.memory_bytes = parse_units(value).map_err(|e| invalid(Some(e)))?,
                "ephemeral-storage" => {
                    reservation.ephemeral_storage_bytes = parse_units(value).map_err(|e| invalid(Some(e)))?
                }
                _ => return Err(invalid(None)),
            }
        }
        Ok(reservation)
    }

    fn plus(self, other: ResourceReservation) -> ResourceReservation {
        ResourceReservation {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.saturating_add(other.ephemeral_storage_bytes),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub node_name: String,
    /// kubelet's `--hostname-override`: the `kubernetes.io/hostname` label and Hostname address.
    /// None uses the machine's hostname.
    pub hostname_override: Option<String>,
    /// kubelet's `--node-ip`; None picks the first global IPv4 of the default-route interface.
    pub node_ip: Option<IpAddr>,
    /// Local pod network range (kubelet's `--pod-cidr`); never written to the Node.
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    /// kubelet's `--node-labels`, applied when the Node is created.
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    pub lease_duration_seconds: i32,
    pub node_lease_renew_interval: Duration,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub system_reserved: Option<ResourceReservation>,
    pub kube_reserved: Option<ResourceReservation>,
    pub kubelet_port: u16,
    /// Reported as nodeInfo.kubeletVersion (and kubeProxyVersion: nodelet is the proxy too).
    pub kubelet_version: String,
    /// Reported as nodeInfo.containerRuntimeVersion.
    pub container_runtime_version: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_name: String::new(),
            hostname_override: None,
            node_ip: None,
            pod_cidr: None,
            labels: BTreeMap::new(),
            max_pods: DEFAULT_MAX_PODS,
            lease_duration_seconds: DEFAULT_LEASE_DURATION_SECONDS,
            node_lease_renew_interval: Duration::from_secs_f64(
                f64::from(DEFAULT_LEASE_DURATION_SECONDS) * LEASE_RENEW_FRACTION,
            ),
            node_status_update_frequency: DEFAULT_STATUS_UPDATE_FREQUENCY,
            node_status_report_frequency: DEFAULT_STATUS_REPORT_FREQUENCY,
            system_reserved: None,
            kube_reserved: None,
            kubelet_port: DEFAULT_KUBELET_PORT,
            kubelet_version: default_kubelet_version(),
            container_runtime_version: format!("nodelet://{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The Kubernetes version nodelet speaks, tagged with nodelet's own version.
pub fn default_kubelet_version() -> String {
    format!("v1.32.0-nodelet.{}", env!("CARGO_PKG_VERSION"))
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() {
            return Err(ConfigError::EmptyNodeName);
        }
        if !is_dns_subdomain(&self.node_name) {
            return Err(ConfigError::InvalidNodeName(self.node_name.clone()));
        }
        if let Some(ip) = self.node_ip {
            if !is_usable_node_ip(ip) {
                return Err(ConfigError::InvalidNodeIp(ip));
            }
        }
        let positive = [
            ("max pods", self.max_pods > 0),
            ("lease duration", self.lease_duration_seconds > 0),
            ("lease renew interval", !self.node_lease_renew_interval.is_zero()),
            ("node status update frequency", !self.node_status_update_frequency.is_zero()),
            ("node status report frequency", !self.node_status_report_frequency.is_zero()),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(ConfigError::NotPositive { field });
        }
        if self.node_status_report_frequency < self.node_status_update_frequency {
            return Err(ConfigError::ReportFasterThanUpdate);
        }
        if let Some(key) = self.labels.keys().find(|k| !is_label_key(k)) {
            return Err(ConfigError::InvalidLabel(key.clone()));
        }
        Ok(())
    }

    /// system-reserved plus kube-reserved.
    pub fn total_reserved(&self) -> ResourceReservation {
        self.system_reserved.unwrap_or_default().plus(self.kube_reserved.unwrap_or_default())
    }
}

/// kubelet refuses loopback, link-local, multicast and unspecified node IPs.
fn is_usable_node_ip(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || link_local)
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A label key: optional DNS-subdomain prefix, `/`, a name of up to 63 alphanumerics, `-_.`.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NodeConfig {
        NodeConfig { node_name: "worker-1".into(), ..NodeConfig::default() }
    }

    #[test]
    fn defaults_match_kubelet() {
        let cfg = NodeConfig::default();
        assert_eq!(cfg.max_pods, 110);
        assert_eq!(cfg.lease_duration_seconds, 40);
        assert_eq!(cfg.node_lease_renew_interval, Duration::from_secs(10));
        assert_eq!(cfg.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(cfg.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(cfg.kubelet_port, 10250);
        assert!(cfg.kubelet_version.starts_with("v1.32.0-nodelet."));
        assert!(cfg.container_runtime_version.starts_with("nodelet://"));
    }

    #[test]
    fn validate_accepts_a_sane_config_and_rejects_bad_fields() {
        assert_eq!(valid().validate(), Ok(()));
        assert_eq!(NodeConfig::default().validate(), Err(ConfigError::EmptyNodeName));
        let bad_name = NodeConfig { node_name: "Worker_1".into(), ..valid() };
        assert!(matches!(bad_name.validate(), Err(ConfigError::InvalidNodeName(_))));
        let loopback = NodeConfig { node_ip: Some("127.0.0.1".parse().expect("ip")), ..valid() };
        assert!(matches!(loopback.validate(), Err(ConfigError::InvalidNodeIp(_))));
        let zero_pods = NodeConfig { max_pods: 0, ..valid() };
        assert!(matches!(zero_pods.validate(), Err(ConfigError::NotPositive { .. })));
        let fast_report = NodeConfig { node_status_report_frequency: Duration::from_secs(1), ..valid() };
        assert_eq!(fast_report.validate(), Err(ConfigError::ReportFasterThanUpdate));
        let mut bad_label = valid();
        bad_label.labels.insert("-nope".into(), "x".into());
        assert!(matches!(bad_label.validate(), Err(ConfigError::InvalidLabel(_))));
        let mut good_label = valid();
        good_label.labels.insert("node-role.kubernetes.io/worker".into(), String::new());
        assert_eq!(good_label.validate(), Ok(()));
    }

    #[test]
    fn parses_reservations_and_sums_them() {
        let system = ResourceReservation::parse("cpu=100m, memory=256Mi").expect("parse");
        assert_eq!(system.cpu_millis, 100);
        assert_eq!(system.memory_bytes, 256 << 20);
        let kube = ResourceReservation::parse("cpu=1,ephemeral-storage=1Gi").expect("parse");
        let cfg = NodeConfig { system_reserved: Some(system), kube_reserved: Some(kube), ..valid() };
        let total = cfg.total_reserved();
        assert_eq!(total.cpu_millis, 1100);
        assert_eq!(total.ephemeral_storage_bytes, 1 << 30);
        assert!(ResourceReservation::parse("gpu=1").is_err());
        assert!(ResourceReservation::parse("cpu").is_err());
    }
}
