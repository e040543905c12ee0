//! The Node object as kubelet builds it: default labels, capacity and allocatable, addresses,
//! nodeInfo, daemon endpoints and conditions. Pure functions of config, facts and time.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::conditions::{conditions_changed, update_conditions, NodeReadiness};
use super::config::NodeConfig;
use super::facts::NodeFacts;
use super::quantity::{format_binary, format_cpu_millis};

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS_BETA: &str = "beta.kubernetes.io/os";
pub const LABEL_ARCH_BETA: &str = "beta.kubernetes.io/arch";
/// kubelet marks nodes whose volumes the attach/detach controller manages (its default).
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

const OPERATING_SYSTEM: &str = "linux";
/// kubelet's default hard eviction thresholds, held back from allocatable.
const EVICTION_HARD_MEMORY_AVAILABLE_BYTES: u64 = 100 * 1024 * 1024;
const EVICTION_HARD_NODEFS_AVAILABLE_FRACTION: f64 = 0.10;

/// The hostname kubelet reports: the override, else the machine's, lowercased.
pub fn effective_hostname(cfg: &NodeConfig, facts: &NodeFacts) -> String {
    cfg.hostname_override.as_deref().unwrap_or(&facts.hostname).trim().to_lowercase()
}

/// Labels kubelet always sets and re-asserts on an existing Node.
pub fn default_labels(cfg: &NodeConfig, facts: &NodeFacts) -> BTreeMap<String, String> {
    [
        (LABEL_HOSTNAME, effective_hostname(cfg, facts)),
        (LABEL_OS, OPERATING_SYSTEM.to_string()),
        (LABEL_ARCH, facts.architecture.clone()),
        (LABEL_OS_BETA, OPERATING_SYSTEM.to_string()),
        (LABEL_ARCH_BETA, facts.architecture.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The Node kubelet creates: default labels overlaid by `--node-labels`, the attach/detach
/// annotation, and a full status. No spec.podCIDR: that is the controller manager's to set.
pub fn initial_node(cfg: &NodeConfig, facts: &NodeFacts, readiness: &NodeReadiness, now: DateTime<Utc>) -> Node {
    let mut labels = default_labels(cfg, facts);
    labels.extend(cfg.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(desired_status(cfg, facts, None, readiness, now)),
    }
}

/// The four core resources plus one `hugepages-<size>` entry per supported page size, as
/// kubelet lists them (zero when none are allocated).
fn quantities(facts: &NodeFacts, entries: [(&str, String); 4]) -> BTreeMap<String, Quantity> {
    let hugepages = facts.hugepages.iter().map(|pages| {
        (
            format!("hugepages-{}", format_binary(pages.page_size_bytes)),
            format_binary(pages.page_size_bytes.saturating_mul(pages.count)),
        )
    });
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).chain(hugepages).map(|(k, v)| (k, Quantity(v))).collect()
}

fn hugepages_bytes(facts: &NodeFacts) -> u64 {
    facts.hugepages.iter().map(|p| p.page_size_bytes.saturating_mul(p.count)).fold(0, u64::saturating_add)
}

pub fn capacity(cfg: &NodeConfig, facts: &NodeFacts) -> BTreeMap<String, Quantity> {
    quantities(
        facts,
        [
            ("cpu", format_cpu_millis(u64::from(facts.cpu_count) * 1000)),
            ("ephemeral-storage", format_binary(facts.ephemeral_storage_bytes)),
            ("memory", format_binary(facts.memory_bytes)),
            ("pods", cfg.max_pods.to_string()),
        ],
    )
}

/// Capacity minus system-reserved, kube-reserved and the hard eviction thresholds (memory also
/// minus pre-allocated huge pages), clamped at zero, as kubelet's container manager computes it.
pub fn allocatable(cfg: &NodeConfig, facts: &NodeFacts) -> BTreeMap<String, Quantity> {
    let reserved = cfg.total_reserved();
    let nodefs_eviction = (facts.ephemeral_storage_bytes as f64 * EVICTION_HARD_NODEFS_AVAILABLE_FRACTION) as u64;
    let cpu = (u64::from(facts.cpu_count) * 1000).saturating_sub(reserved.cpu_millis);
    let memory = facts
        .memory_bytes
        .saturating_sub(reserved.memory_bytes)
        .saturating_sub(EVICTION_HARD_MEMORY_AVAILABLE_BYTES)
        .saturating_sub(hugepages_bytes(facts));
    let storage =
        facts.ephemeral_storage_bytes.saturating_sub(reserved.ephemeral_storage_bytes).saturating_sub(nodefs_eviction);
    quantities(
        facts,
        [
            ("cpu", format_cpu_millis(cpu)),
            ("ephemeral-storage", format_binary(storage)),
            ("memory", format_binary(memory)),
            ("pods", cfg.max_pods.to_string()),
        ],
    )
}

/// InternalIP (the `--node-ip` override, else the detected one) then Hostname, kubelet's order.
pub fn addresses(cfg: &NodeConfig, facts: &NodeFacts) -> Vec<NodeAddress> {
    let internal: Option<IpAddr> = cfg.node_ip.or(facts.internal_ip);
    internal
        .map(|ip| NodeAddress { type_: "InternalIP".to_string(), address: ip.to_string() })
        .into_iter()
        .chain(std::iter::once(NodeAddress { type_: "Hostname".to_string(), address: effective_hostname(cfg, facts) }))
        .collect()
}

pub fn node_info(cfg: &NodeConfig, facts: &NodeFacts) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: facts.architecture.clone(),
        boot_id: facts.boot_id.clone(),
        container_runtime_version: cfg.container_runtime_version.clone(),
        kernel_version: facts.kernel_version.clone(),
        // nodelet is the node's service proxy as well, so it reports its own version here.
        kube_proxy_version: cfg.kubelet_version.clone(),
        kubelet_version: cfg.kubelet_version.clone(),
        machine_id: facts.machine_id.clone(),
        operating_system: OPERATING_SYSTEM.to_string(),
        os_image: facts.os_image.clone(),
        system_uuid: facts.system_uuid.clone(),
    }
}

/// The status to report: every field kubelet owns recomputed, conditions updated on top of
/// `current` (which keeps conditions and fields owned by others, like images).
pub fn desired_status(
    cfg: &NodeConfig,
    facts: &NodeFacts,
    current: Option<&NodeStatus>,
    readiness: &NodeReadiness,
    now: DateTime<Utc>,
) -> NodeStatus {
    let current_conditions = current.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    NodeStatus {
        addresses: Some(addresses(cfg, facts)),
        allocatable: Some(allocatable(cfg, facts)),
        capacity: Some(capacity(cfg, facts)),
        conditions: Some(update_conditions(current_conditions, readiness, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(cfg.kubelet_port) }),
        }),
        node_info: Some(node_info(cfg, facts)),
        ..NodeStatus::default()
    }
}

/// Whether `desired` would change anything kubelet owns in `current`; heartbeat times alone
/// are not a change. Images count only when `desired` reports them (an empty list and an
/// absent field are the same: the API server drops empty lists).
pub fn status_changed(current: &NodeStatus, desired: &NodeStatus) -> bool {
    desired.images.as_ref().is_some_and(|images| current.images.as_deref().unwrap_or_default() != images.as_slice())
        || current.addresses != desired.addresses
        || current.allocatable != desired.allocatable
        || current.capacity != desired.capacity
        || current.daemon_endpoints != desired.daemon_endpoints
        || current.node_info != desired.node_info
        || conditions_changed(
            current.conditions.as_deref().unwrap_or_default(),
            desired.conditions.as_deref().unwrap_or_default(),
        )
}

/// Labels and annotations to re-assert on a Node that already exists (kubelet's
/// `updateDefaultLabels` and attach/detach annotation reconcile). None when all match.
pub fn metadata_reconcile_patch(cfg: &NodeConfig, facts: &NodeFacts, existing: &Node) -> Option<Node> {
    let existing_labels = existing.metadata.labels.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> =
        default_labels(cfg, facts).into_iter().filter(|(k, v)| existing_labels.get(k) != Some(v)).collect();
    let annotation_set = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH))
        .is_some_and(|v| v == "true");
    if labels.is_empty() && annotation_set {
        return None;
    }
    Some(Node {
        metadata: ObjectMeta {
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotation_set).then(|| {
                BTreeMap::from([(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_string(), "true".to_string())])
            }),
            ..ObjectMeta::default()
        },
        spec: None,
        status: None,
    })
}

/// A patch body carrying only a status.
pub fn status_patch(status: NodeStatus) -> Node {
    Node { metadata: ObjectMeta::default(), spec: None, status: Some(status) }
}
