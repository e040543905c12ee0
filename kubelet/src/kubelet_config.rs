//! The KubeletConfiguration file (`--config FILE`, kubelet.config.k8s.io/v1beta1), for the
//! settings nodelet has. Every field in the file must be one nodelet applies: a field kubelet
//! knows that nodelet does not implement, or a field nobody knows, is an error naming the field
//! and the file. A node that silently ignores a setting is worse than one that refuses to start.
//! Flags given on the command line win over the file, as with kubelet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use nodelet_runtime::go_duration::parse_go_duration;
use serde_json::Value;

use crate::events::EventLimits;
use crate::image_gc::ImageGcPolicy;
use crate::node::{NodeConfig, ResourceReservation};

pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KIND: &str = "KubeletConfiguration";

/// kubelet's healthz defaults.
const DEFAULT_HEALTHZ_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const DEFAULT_HEALTHZ_PORT: u16 = 10248;

#[derive(Debug, thiserror::Error)]
pub enum KubeletConfigError {
    #[error("reading kubelet config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet config {path} is not a YAML or JSON object: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("kubelet config {path}: {problems}")]
    Invalid { path: PathBuf, problems: String },
}

/// What a KubeletConfiguration file sets; `None`: not in the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubeletConfigFile {
    pub pod_cidr: Option<Ipv4Net>,
    pub cgroup_root: Option<String>,
    /// `Some(None)`: healthz turned off (`healthzPort: 0`).
    pub healthz_bind_address: Option<Option<SocketAddr>>,
    pub max_pods: Option<u32>,
    pub system_reserved: Option<ResourceReservation>,
    pub kube_reserved: Option<ResourceReservation>,
    pub node_status_update_frequency: Option<Duration>,
    pub node_status_report_frequency: Option<Duration>,
    pub node_lease_duration_seconds: Option<i32>,
    pub cluster_dns: Option<Vec<IpAddr>>,
    pub cluster_domain: Option<String>,
    /// `""` (no host resolver for pods) is kept as an empty path.
    pub resolv_conf: Option<PathBuf>,
    pub static_pod_path: Option<PathBuf>,
    /// RuntimeDefault seccomp for containers that set no profile.
    pub seccomp_default: Option<bool>,
    pub image_gc_high_threshold_percent: Option<u8>,
    pub image_gc_low_threshold_percent: Option<u8>,
    pub image_minimum_gc_age: Option<Duration>,
    pub event_record_qps: Option<f64>,
    pub event_burst: Option<u32>,
}

/// The fields of kubelet's KubeletConfiguration that nodelet does not implement: named as
/// "not supported" rather than "unknown".
const KNOWN_UNSUPPORTED: &[&str] = &[
    "enableServer",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication",
    "authorization",
    "registryPullQPS",
    "registryBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "oomScoreAdj",
    "streamingConnectionIdleTimeout",
    "imageMaximumGCAge",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "podPidsLimit",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "memoryThrottlingFactor",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
    "mergeDefaultEvictionSettings",
    "singleProcessOOMKill",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
];

/// Read and check `path`.
pub fn load(path: &Path) -> Result<KubeletConfigFile, KubeletConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| KubeletConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Check a file's text (`path` names it in errors). Every problem is reported at once.
pub fn parse(text: &str, path: &Path) -> Result<KubeletConfigFile, KubeletConfigError> {
    let value: Value = serde_yaml::from_str(text)
        .map_err(|e| KubeletConfigError::Syntax { path: path.to_path_buf(), reason: e.to_string() })?;
    let Value::Object(fields) = value else {
        return Err(KubeletConfigError::Syntax { path: path.to_path_buf(), reason: "not a mapping".to_string() });
    };
    let mut problems: Vec<String> = Vec::new();
    let mut file = KubeletConfigFile::default();
    let (mut healthz_address, mut healthz_port) = (None, None);
    for (name, value) in &fields {
        let mut problem = |text: String| problems.push(format!("{name}: {text}"));
        match name.as_str() {
            "apiVersion" if value.as_str() == Some(API_VERSION) => {}
            "apiVersion" => problem(format!("must be {API_VERSION}, not {value}")),
            "kind" if value.as_str() == Some(KIND) => {}
            "kind" => problem(format!("must be {KIND}, not {value}")),
            "podCIDR" => match value.as_str().map(str::parse::<Ipv4Net>) {
                Some(Ok(cidr)) => file.pod_cidr = Some(cidr),
                _ => problem(format!("{value} is not an IPv4 CIDR")),
            },
            "cgroupRoot" => match value.as_str() {
                Some(root) if root.starts_with('/') => file.cgroup_root = Some(root.to_string()),
                _ => problem(format!("{value} is not an absolute cgroup path")),
            },
            "healthzBindAddress" => match value.as_str().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => healthz_address = Some(ip),
                _ => problem(format!("{value} is not an IP address")),
            },
            "healthzPort" => match value.as_u64().and_then(|port| u16::try_from(port).ok()) {
                Some(port) => healthz_port = Some(port),
                None => problem(format!("{value} is not a port")),
            },
            "maxPods" => match value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
                Some(n) => file.max_pods = Some(n),
                None => problem(format!("{value} is not a positive number")),
            },
            "systemReserved" | "kubeReserved" => match reservation(value) {
                Ok(reserved) if name == "systemReserved" => file.system_reserved = Some(reserved),
                Ok(reserved) => file.kube_reserved = Some(reserved),
                Err(text) => problem(text),
            },
            "nodeStatusUpdateFrequency" | "nodeStatusReportFrequency" => match value.as_str().map(parse_go_duration) {
                Some(Ok(duration)) if name == "nodeStatusUpdateFrequency" => {
                    file.node_status_update_frequency = Some(duration)
                }
                Some(Ok(duration)) => file.node_status_report_frequency = Some(duration),
                Some(Err(text)) => problem(text),
                None => problem(format!("{value} is not a duration")),
            },
            "nodeLeaseDurationSeconds" => match value.as_i64().and_then(|n| i32::try_from(n).ok()).filter(|n| *n > 0) {
                Some(n) => file.node_lease_duration_seconds = Some(n),
                None => problem(format!("{value} is not a positive number of seconds")),
            },
            "clusterDNS" => match ip_list(value) {
                Some(ips) => file.cluster_dns = Some(ips),
                None => problem(format!("{value} is not a list of IP addresses")),
            },
            "clusterDomain" => match value.as_str() {
                Some(domain) => file.cluster_domain = Some(domain.trim_end_matches('.').to_string()),
                None => problem(format!("{value} is not a domain")),
            },
            "imageGCHighThresholdPercent" | "imageGCLowThresholdPercent" => {
                match value.as_u64().and_then(|n| u8::try_from(n).ok()).filter(|n| *n <= 100) {
                    Some(n) if name == "imageGCHighThresholdPercent" => file.image_gc_high_threshold_percent = Some(n),
                    Some(n) => file.image_gc_low_threshold_percent = Some(n),
                    None => problem(format!("{value} is not a percentage from 0 to 100")),
                }
            }
            "imageMinimumGCAge" => match value.as_str().map(parse_go_duration) {
                Some(Ok(age)) => file.image_minimum_gc_age = Some(age),
                Some(Err(text)) => problem(text),
                None => problem(format!("{value} is not a duration")),
            },
            "eventRecordQPS" => match value.as_f64().filter(|qps| *qps >= 0.0 && qps.is_finite()) {
                Some(qps) => file.event_record_qps = Some(qps),
                None => problem(format!("{value} is not a number of events per second (0: no limit)")),
            },
            "eventBurst" => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => file.event_burst = Some(n),
                None => problem(format!("{value} is not a number of events")),
            },
            "staticPodPath" => match value.as_str() {
                Some(path) if path.starts_with('/') => file.static_pod_path = Some(PathBuf::from(path)),
                _ => problem(format!("{value} is not an absolute path")),
            },
            "resolvConf" => match value.as_str() {
                Some(path) if path.is_empty() || path.starts_with('/') => file.resolv_conf = Some(PathBuf::from(path)),
                _ => problem(format!("{value} is not an absolute path or \"\"")),
            },
            "seccompDefault" => match value.as_bool() {
                Some(on) => file.seccomp_default = Some(on),
                None => problem(format!("{value} is not a boolean")),
            },
            known if KNOWN_UNSUPPORTED.contains(&known) => problem("not supported by nodelet".to_string()),
            _ => problem("unknown field".to_string()),
        }
    }
    for required in ["apiVersion", "kind"] {
        if !fields.contains_key(required) {
            problems.push(format!("{required}: missing"));
        }
    }
    if healthz_address.is_some() || healthz_port.is_some() {
        let port = healthz_port.unwrap_or(DEFAULT_HEALTHZ_PORT);
        file.healthz_bind_address =
            Some((port != 0).then(|| SocketAddr::new(healthz_address.unwrap_or(DEFAULT_HEALTHZ_ADDRESS), port)));
    }
    let policy = file.image_gc_policy();
    if policy.low_threshold_percent > policy.high_threshold_percent {
        problems.push(format!(
            "imageGCLowThresholdPercent ({}) must not be above imageGCHighThresholdPercent ({})",
            policy.low_threshold_percent, policy.high_threshold_percent
        ));
    }
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(KubeletConfigError::Invalid { path: path.to_path_buf(), problems: problems.join("; ") })
    }
}

impl KubeletConfigFile {
    /// The image garbage collection policy: kubelet's defaults where the file sets nothing.
    pub fn image_gc_policy(&self) -> ImageGcPolicy {
        let defaults = ImageGcPolicy::default();
        ImageGcPolicy {
            high_threshold_percent: self.image_gc_high_threshold_percent.unwrap_or(defaults.high_threshold_percent),
            low_threshold_percent: self.image_gc_low_threshold_percent.unwrap_or(defaults.low_threshold_percent),
            minimum_age: self.image_minimum_gc_age.unwrap_or(defaults.minimum_age),
            ..defaults
        }
    }

    /// How fast events may be written: kubelet's defaults where the file sets nothing.
    pub fn event_limits(&self) -> EventLimits {
        let defaults = EventLimits::default();
        EventLimits {
            qps: self.event_record_qps.unwrap_or(defaults.qps),
            burst: self.event_burst.unwrap_or(defaults.burst),
        }
    }

    /// Set what the file gives on the node's settings.
    pub fn apply_to_node(&self, cfg: &mut NodeConfig) {
        if let Some(max_pods) = self.max_pods {
            cfg.max_pods = max_pods;
        }
        if let Some(reserved) = self.system_reserved {
            cfg.system_reserved = Some(reserved);
        }
        if let Some(reserved) = self.kube_reserved {
            cfg.kube_reserved = Some(reserved);
        }
        if let Some(frequency) = self.node_status_update_frequency {
            cfg.node_status_update_frequency = frequency;
        }
        if let Some(frequency) = self.node_status_report_frequency {
            cfg.node_status_report_frequency = frequency;
        }
        if let Some(seconds) = self.node_lease_duration_seconds {
            cfg.lease_duration_seconds = seconds;
            // kubelet renews at a quarter of the duration.
            cfg.node_lease_renew_interval = Duration::from_secs_f64(f64::from(seconds) / 4.0);
        }
    }
}

/// `[10.96.0.10, fd00::10]`.
fn ip_list(value: &Value) -> Option<Vec<IpAddr>> {
    value.as_array()?.iter().map(|ip| ip.as_str()?.parse().ok()).collect()
}

/// `{cpu: 100m, memory: 1Gi, ephemeral-storage: 1Gi}` as kubelet's reservation flag reads it.
fn reservation(value: &Value) -> Result<ResourceReservation, String> {
    let Some(map) = value.as_object() else {
        return Err(format!("{value} is not a map of resource quantities"));
    };
    let items: BTreeMap<&str, String> =
        map.iter().map(|(k, v)| (k.as_str(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect();
    let flag = items.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    ResourceReservation::parse(&flag).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<KubeletConfigFile, KubeletConfigError> {
        parse(text, Path::new("/etc/nodelet/kubelet.yaml"))
    }

    #[test]
    fn reads_the_settings_nodelet_has() {
        let file = parse_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodCIDR: 10.88.0.0/24\n\
             cgroupRoot: /kubepods\nhealthzPort: 10249\nmaxPods: 50\nsystemReserved: {cpu: 500m, memory: 1Gi}\n\
             nodeStatusUpdateFrequency: 20s\nnodeStatusReportFrequency: 1m30s\nnodeLeaseDurationSeconds: 60\n\
             clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\nresolvConf: /run/systemd/resolve/resolv.conf\n\
             staticPodPath: /etc/kubernetes/manifests\nseccompDefault: true\n",
        )
        .expect("valid");
        assert_eq!(file.seccomp_default, Some(true));
        assert_eq!(file.cluster_dns, Some(vec!["10.96.0.10".parse().unwrap()]));
        assert_eq!(file.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(file.resolv_conf, Some(PathBuf::from("/run/systemd/resolve/resolv.conf")));
        assert_eq!(file.static_pod_path, Some(PathBuf::from("/etc/kubernetes/manifests")));
        let gc = parse_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: 90\n\
             imageGCLowThresholdPercent: 70\nimageMinimumGCAge: 5m\neventRecordQPS: 0\neventBurst: 10\n",
        )
        .expect("valid");
        let policy = gc.image_gc_policy();
        assert_eq!((policy.high_threshold_percent, policy.low_threshold_percent), (90, 70));
        assert_eq!(policy.minimum_age, Duration::from_secs(300));
        assert_eq!(gc.event_limits(), EventLimits { qps: 0.0, burst: 10 });
        let inverted = parse_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCLowThresholdPercent: 90\n",
        )
        .expect_err("low above the default high");
        assert!(inverted.to_string().contains("must not be above imageGCHighThresholdPercent (85)"), "{inverted}");
        assert_eq!(file.pod_cidr, Some("10.88.0.0/24".parse().unwrap()));
        assert_eq!(file.healthz_bind_address, Some(Some("127.0.0.1:10249".parse().unwrap())));
        assert_eq!(file.system_reserved.unwrap().cpu_millis, 500);
        assert_eq!(file.node_status_report_frequency, Some(Duration::from_secs(90)));
        let mut node = NodeConfig::default();
        file.apply_to_node(&mut node);
        assert_eq!((node.max_pods, node.lease_duration_seconds), (50, 60));
        assert_eq!(node.node_lease_renew_interval, Duration::from_secs(15));
        assert_eq!(node.node_status_update_frequency, Duration::from_secs(20));
    }

    #[test]
    fn names_every_unsupported_or_unknown_field_and_the_file() {
        let error = parse_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS: [x]\n\
             enableServer: true\nmaxPod: 3\nmaxPods: -1\n",
        )
        .expect_err("invalid")
        .to_string();
        assert!(error.contains("/etc/nodelet/kubelet.yaml"), "{error}");
        assert!(error.contains("clusterDNS: [\"x\"] is not a list of IP addresses"), "{error}");
        assert!(error.contains("enableServer: not supported by nodelet"), "{error}");
        assert!(error.contains("maxPod: unknown field"), "{error}");
        assert!(error.contains("maxPods: -1 is not a positive number"), "{error}");
        let wrong_kind = parse_text("apiVersion: v1\nkind: Pod\n").expect_err("not a kubelet config").to_string();
        assert!(wrong_kind.contains("apiVersion: must be kubelet.config.k8s.io/v1beta1"), "{wrong_kind}");
        assert!(parse_text("[1, 2]").is_err());
        assert!(parse_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n")
            .expect("off")
            .healthz_bind_address
            .is_some_and(|address| address.is_none()));
    }
}
