//! Pod admission, as kubelet's predicate admit handler does it before a pod's first sync: the
//! pod must fit the node's allocatable resources beside the pods already admitted (pods,
//! cpu, memory, ephemeral-storage requests) and its host ports must be free. A rejected pod
//! fails at once with kubelet's reason (OutOfpods, OutOfcpu, OutOfmemory,
//! OutOfephemeral-storage, NodePorts) and message.
//!
//! Not checked here: required node affinity and nodeSelector (the scheduler's job; kubelet
//! re-checks them against its Node labels), NoExecute taints, and extended resources.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::{milli_value, value};

/// The node's allocatable resources, as its status reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub ephemeral_storage_bytes: i128,
    pub pods: i128,
}

impl Allocatable {
    /// From the node status' `allocatable` map; a resource it lacks or cannot read is 0.
    pub fn from_quantities(quantities: &BTreeMap<String, Quantity>) -> Allocatable {
        let get = |name: &str, read: fn(&Quantity) -> Result<i128, super::quantity::QuantityError>| {
            quantities.get(name).and_then(|q| read(q).ok()).unwrap_or(0)
        };
        Allocatable {
            cpu_millis: get("cpu", milli_value),
            memory_bytes: get("memory", value),
            ephemeral_storage_bytes: get("ephemeral-storage", value),
            pods: get("pods", value),
        }
    }
}

/// Why a pod was not admitted: the status reason and kubelet's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    fn insufficient(resource: &str, requested: i128, used: i128, capacity: i128) -> Rejection {
        Rejection {
            reason: format!("OutOf{resource}"),
            message: format!(
                "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
            ),
        }
    }
}

/// A pod's effective requests: the larger of its app containers' sum and its largest init
/// container, as the scheduler computes them; a limit stands for a missing request (the API
/// server's defaulting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    cpu_millis: i128,
    memory_bytes: i128,
    ephemeral_storage_bytes: i128,
}

fn container_requests(container: &Container) -> Requests {
    let resources = container.resources.as_ref();
    let amount = |name: &str, read: fn(&Quantity) -> Result<i128, super::quantity::QuantityError>| {
        let requests = resources.and_then(|r| r.requests.as_ref()).and_then(|r| r.get(name));
        let limits = resources.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(name));
        requests.or(limits).and_then(|q| read(q).ok()).unwrap_or(0)
    };
    Requests {
        cpu_millis: amount("cpu", milli_value),
        memory_bytes: amount("memory", value),
        ephemeral_storage_bytes: amount("ephemeral-storage", value),
    }
}

impl Requests {
    fn plus(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_bytes: self.memory_bytes + other.memory_bytes,
            ephemeral_storage_bytes: self.ephemeral_storage_bytes + other.ephemeral_storage_bytes,
        }
    }

    fn max(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.max(other.ephemeral_storage_bytes),
        }
    }
}

/// The pod's requests as the scheduler's PodRequests computes them: the app containers plus
/// every sidecar (they run side by side), or, if larger, the peak of the init phase (each
/// init container beside the sidecars started before it), plus the pod overhead.
fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let apps = spec.containers.iter().map(container_requests).fold(Requests::default(), Requests::plus);
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.plus(requests);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars.plus(requests));
        }
    }
    let overhead = spec.overhead.as_ref().map_or_else(Requests::default, |overhead| {
        container_requests(&Container {
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(overhead.clone()),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    apps.plus(sidecars).max(init_peak).plus(overhead)
}

/// (protocol, host IP, host port) of every container port with a host port.
fn host_ports(pod: &Pod) -> BTreeSet<(String, String, i32)> {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    containers
        .into_iter()
        .flatten()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|port| *port > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            Some((protocol, ip, host_port))
        })
        .collect()
}

/// Two host ports clash on the same protocol and port when either binds every address.
fn ports_clash(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// Admit `pod` beside the `admitted` ones on a node with `allocatable` (`None`: resources
/// unknown, only host ports checked). The first failure is the answer, in kubelet's order:
/// pods, cpu, memory, ephemeral-storage, then host ports.
pub fn admit(pod: &Pod, admitted: &[&Pod], allocatable: Option<&Allocatable>) -> Result<(), Rejection> {
    if let Some(node) = allocatable {
        let used_pods = admitted.len() as i128;
        if used_pods + 1 > node.pods {
            return Err(Rejection::insufficient("pods", 1, used_pods, node.pods));
        }
        let wanted = pod_requests(pod);
        let used = admitted.iter().map(|p| pod_requests(p)).fold(Requests::default(), Requests::plus);
        let checks = [
            ("cpu", wanted.cpu_millis, used.cpu_millis, node.cpu_millis),
            ("memory", wanted.memory_bytes, used.memory_bytes, node.memory_bytes),
            (
                "ephemeral-storage",
                wanted.ephemeral_storage_bytes,
                used.ephemeral_storage_bytes,
                node.ephemeral_storage_bytes,
            ),
        ];
        for (resource, requested, used, capacity) in checks {
            if requested > 0 && requested > capacity - used {
                return Err(Rejection::insufficient(resource, requested, used, capacity));
            }
        }
    }
    let taken: Vec<_> = admitted.iter().flat_map(|p| host_ports(p)).collect();
    if host_ports(pod).iter().any(|wanted| taken.iter().any(|t| ports_clash(wanted, t))) {
        return Err(Rejection {
            reason: "NodePorts".into(),
            message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, ResourceRequirements};

    fn pod(cpu: Option<&str>, memory_limit: Option<&str>, host_port: Option<i32>) -> Pod {
        let mut requests = BTreeMap::new();
        if let Some(cpu) = cpu {
            requests.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        let mut limits = BTreeMap::new();
        if let Some(memory) = memory_limit {
            limits.insert("memory".to_string(), Quantity(memory.into()));
        }
        let container = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(requests),
                limits: Some(limits),
                ..Default::default()
            }),
            ports: host_port
                .map(|port| vec![ContainerPort { container_port: 80, host_port: Some(port), ..Default::default() }]),
            ..Default::default()
        };
        Pod { spec: Some(PodSpec { containers: vec![container], ..Default::default() }), ..Default::default() }
    }

    fn node() -> Allocatable {
        Allocatable { cpu_millis: 2000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 10 << 30, pods: 3 }
    }

    #[test]
    fn reads_the_node_status_quantities() {
        let quantities = [("cpu", "1950m"), ("memory", "3Gi"), ("pods", "110"), ("ephemeral-storage", "100Gi")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.into())))
            .collect();
        let allocatable = Allocatable::from_quantities(&quantities);
        assert_eq!((allocatable.cpu_millis, allocatable.pods), (1950, 110));
        assert_eq!(allocatable.memory_bytes, 3 << 30);
    }

    #[test]
    fn pods_that_fit_are_admitted() {
        let (a, b) = (pod(Some("500m"), Some("256Mi"), None), pod(Some("1"), None, None));
        assert_eq!(admit(&pod(Some("500m"), Some("512Mi"), None), &[&a, &b], Some(&node())), Ok(()));
        assert_eq!(admit(&pod(None, None, None), &[&a, &b], Some(&node())), Ok(()), "BestEffort fits anywhere");
    }

    #[test]
    fn too_many_pods_or_too_much_cpu_or_memory_is_rejected_with_kubelets_reason() {
        let (a, b, c) = (pod(None, None, None), pod(None, None, None), pod(None, None, None));
        let rejection = admit(&pod(None, None, None), &[&a, &b, &c], Some(&node())).expect_err("full");
        assert_eq!(rejection.reason, "OutOfpods");
        assert_eq!(rejection.message, "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3");
        let busy = pod(Some("1500m"), None, None);
        let rejection = admit(&pod(Some("600m"), None, None), &[&busy], Some(&node())).expect_err("cpu");
        assert_eq!(rejection.reason, "OutOfcpu");
        assert_eq!(
            rejection.message,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let rejection = admit(&pod(None, Some("2Gi"), None), &[], Some(&node())).expect_err("memory");
        assert_eq!(rejection.reason, "OutOfmemory");
    }

    #[test]
    fn host_ports_must_be_free() {
        let holder = pod(None, None, Some(8080));
        let rejection = admit(&pod(None, None, Some(8080)), &[&holder], None).expect_err("clash");
        assert_eq!(rejection.reason, "NodePorts");
        assert_eq!(admit(&pod(None, None, Some(8081)), &[&holder], None), Ok(()));
    }

    #[test]
    fn init_containers_count_by_their_largest_request() {
        let mut p = pod(Some("100m"), None, None);
        let init = pod(Some("1800m"), None, None).spec.unwrap().containers.remove(0);
        p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
        let other = pod(Some("300m"), None, None);
        assert_eq!(admit(&p, &[&other], Some(&node())).expect_err("init too big").reason, "OutOfcpu");
    }

    #[test]
    fn sidecars_add_to_the_app_containers() {
        // app 600m + sidecar 600m = 1200m: beside another 1000m it does not fit 2000m.
        let mut p = pod(Some("600m"), None, None);
        let mut sidecar = pod(Some("600m"), None, None).spec.unwrap().containers.remove(0);
        sidecar.restart_policy = Some("Always".into());
        p.spec.as_mut().unwrap().init_containers = Some(vec![sidecar]);
        assert_eq!(pod_requests(&p).cpu_millis, 1200);
        let other = pod(Some("1000m"), None, None);
        assert_eq!(admit(&p, &[&other], Some(&node())).expect_err("too big").reason, "OutOfcpu");
    }
}
