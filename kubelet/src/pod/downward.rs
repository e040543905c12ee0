//! The downward API: a pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`) as strings, for env values and downwardAPI volume files, with
//! kubelet's formats (labels as sorted `k="v"` lines, IPs comma-joined, resources divided by
//! the divisor and rounded up, missing limits defaulting to the node's allocatable).

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::{milli_value, value, QuantityError};

#[derive(Debug, thiserror::Error)]
pub enum DownwardError {
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    #[error("unsupported container resource: {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found in the pod")]
    UnknownContainer(String),
    #[error("resource {resource}")]
    Quantity {
        resource: String,
        #[source]
        source: QuantityError,
    },
    #[error("divisor of {resource} must be positive")]
    ZeroDivisor { resource: String },
}

/// What the node offers, the limit of a container that sets none (kubelet's
/// MergeContainerResourceLimits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub ephemeral_storage_bytes: i128,
}

impl NodeAllocatable {
    /// This machine's CPUs, memory (MemTotal) and the size of the filesystem holding `dir`.
    pub fn detect(dir: &Path) -> NodeAllocatable {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| mem_total_bytes(&text)).unwrap_or(0);
        let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        let storage = nix::sys::statvfs::statvfs(existing)
            .map(|s| u128::from(s.blocks()) * u128::from(s.fragment_size()))
            .unwrap_or(0);
        NodeAllocatable {
            cpu_millis: cpus as i128 * 1000,
            memory_bytes: i128::from(memory),
            ephemeral_storage_bytes: i128::try_from(storage).unwrap_or(i128::MAX),
        }
    }
}

/// MemTotal of /proc/meminfo, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a fieldRef may read beyond the pod object itself.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub node_name: String,
    pub host_ip: Option<String>,
    pub pod_ip: Option<String>,
}

/// The value of `fieldRef.fieldPath` for `pod`, as kubelet's podFieldSelectorRuntimeValue.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.iter().flatten()),
        "metadata.annotations" => format_map(meta.annotations.iter().flatten()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        _ => match subscripted(path) {
            Some(("metadata.labels", key)) => {
                meta.labels.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
            }
            Some(("metadata.annotations", key)) => {
                meta.annotations.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
            }
            _ => return Err(DownwardError::UnsupportedField(path.to_string())),
        },
    };
    Ok(value)
}

/// "metadata.labels['app']" -> ("metadata.labels", "app").
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let (base, rest) = path.split_once("['")?;
    Some((base, rest.strip_suffix("']")?))
}

/// kubelet's FormatMap: `key="value"` lines sorted by key, values quoted as Go's %q.
pub fn format_map<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut entries: Vec<_> = entries.collect();
    entries.sort();
    entries.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// Go's strconv.Quote for the characters labels and annotations hold.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

type QuantityParser = fn(&Quantity) -> Result<i128, QuantityError>;

/// The value of a resourceFieldRef on `container`: the quantity divided by `divisor`
/// (default 1), rounded up; a missing limit is the node's allocatable, a missing request 0.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    allocatable: &NodeAllocatable,
) -> Result<String, DownwardError> {
    let requirements = container.resources.clone().unwrap_or_default();
    let (section, name) =
        resource.split_once('.').ok_or_else(|| DownwardError::UnsupportedResource(resource.into()))?;
    let set = match section {
        "limits" => requirements.limits.unwrap_or_default(),
        "requests" => requirements.requests.unwrap_or_default(),
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let quantity_error = |source| DownwardError::Quantity { resource: resource.to_string(), source };
    let cpu = name == "cpu";
    let (default, parse): (i128, QuantityParser) = match name {
        "cpu" => (allocatable.cpu_millis, milli_value),
        "memory" => (allocatable.memory_bytes, value),
        "ephemeral-storage" => (allocatable.ephemeral_storage_bytes, value),
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let amount = match set.get(name) {
        Some(quantity) => parse(quantity).map_err(quantity_error)?,
        None if section == "limits" => default,
        None => 0,
    };
    let divisor = match divisor {
        Some(q) if !q.0.is_empty() => parse(q).map_err(quantity_error)?,
        _ if cpu => 1000,
        _ => 1,
    };
    if divisor <= 0 {
        return Err(DownwardError::ZeroDivisor { resource: resource.to_string() });
    }
    // Ceiling division (amounts are never negative).
    Ok(((amount + divisor - 1) / divisor).to_string())
}

/// The container named `name` (or `default` when no name is given), for a resourceFieldRef.
pub fn container_named<'a>(
    pod: &'a Pod,
    name: Option<&str>,
    default: &'a Container,
) -> Result<&'a Container, DownwardError> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(default),
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .find(|c| c.name == name)
            .ok_or_else(|| DownwardError::UnknownContainer(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        let labels: BTreeMap<String, String> =
            [("app", "web"), ("tier", "a\"b")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec { service_account_name: Some("robot".into()), ..Default::default() }),
            status: None,
        }
    }

    const NODE: NodeAllocatable =
        NodeAllocatable { cpu_millis: 4000, memory_bytes: 8 << 30, ephemeral_storage_bytes: 100 << 30 };

    #[test]
    fn fields_as_kubelet_formats_them() {
        let facts =
            PodFacts { node_name: "n1".into(), host_ip: Some("10.0.0.1".into()), pod_ip: Some("10.1.0.5".into()) };
        let get = |path| field_value(&pod(), path, &facts).unwrap();
        assert_eq!(get("metadata.name"), "web-1");
        assert_eq!(get("metadata.namespace"), "prod");
        assert_eq!(get("metadata.uid"), "u-1");
        assert_eq!(get("metadata.labels"), "app=\"web\"\ntier=\"a\\\"b\"");
        assert_eq!(get("metadata.labels['app']"), "web");
        assert_eq!(get("metadata.labels['missing']"), "");
        assert_eq!(get("metadata.annotations"), "");
        assert_eq!(get("spec.nodeName"), "n1");
        assert_eq!(get("spec.serviceAccountName"), "robot");
        assert_eq!(get("status.hostIP"), "10.0.0.1");
        assert_eq!(get("status.podIPs"), "10.1.0.5");
        let error = field_value(&pod(), "spec.bogus", &facts).unwrap_err();
        assert_eq!(error.to_string(), "unsupported fieldPath: spec.bogus");
    }

    #[test]
    fn resources_divided_and_rounded_up() {
        let quantities = |pairs: &[(&str, &str)]| {
            Some(pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect())
        };
        let container = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: quantities(&[("cpu", "1500m"), ("memory", "64Mi")]),
                requests: quantities(&[("cpu", "250m")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let get = |resource, divisor: Option<&str>| {
            let divisor = divisor.map(|d| Quantity(d.to_string()));
            resource_value(&container, resource, divisor.as_ref(), &NODE).unwrap()
        };
        assert_eq!(get("limits.cpu", None), "2");
        assert_eq!(get("limits.cpu", Some("1m")), "1500");
        assert_eq!(get("requests.cpu", Some("1m")), "250");
        assert_eq!(get("limits.memory", None), (64 << 20).to_string());
        assert_eq!(get("limits.memory", Some("1Mi")), "64");
        assert_eq!(get("requests.memory", None), "0");
        // No limit: the node's allocatable.
        assert_eq!(get("limits.ephemeral-storage", Some("1Gi")), "100");
        let bare = Container { name: "bare".into(), ..Default::default() };
        assert_eq!(resource_value(&bare, "limits.cpu", None, &NODE).unwrap(), "4");
        assert!(resource_value(&bare, "limits.gpu", None, &NODE).is_err());
    }
}
