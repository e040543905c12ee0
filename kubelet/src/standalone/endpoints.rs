//! Standalone mode has no EndpointSlice controller, so nodelet plays its part for the pods it
//! runs: a Service with a selector gets one EndpointSlice listing the static pods whose labels
//! match, with the port numbers its targetPorts resolve to (by number, or by the name of a
//! container port), as the controller would write it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// EndpointSlices for the `services` that have a selector, from the running `pods`.
pub fn slices_for_pods(services: &[Service], pods: &[Pod]) -> Vec<EndpointSlice> {
    services.iter().filter_map(|service| slice_for_service(service, pods)).collect()
}

fn slice_for_service(service: &Service, pods: &[Pod]) -> Option<EndpointSlice> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let namespace = service.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = service.metadata.name.clone()?;
    let service_ports = spec.ports.clone().unwrap_or_default();

    let members: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.namespace.as_deref().unwrap_or("default") == namespace)
        .filter(|pod| labels_match(selector, pod.metadata.labels.as_ref()))
        .filter(|pod| pod_ip(pod).is_some())
        .collect();

    let endpoints = members.iter().filter_map(|pod| endpoint_for(pod)).collect();
    // Resolve each Service port against the first member; the controller splits slices when
    // pods disagree on a named port's number, which static pods of one kind do not.
    let ports = service_ports.iter().map(|port| endpoint_port(port, members.first().copied())).collect();

    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), name),
                (MANAGED_BY_LABEL.to_string(), "nodelet.standalone".to_string()),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    })
}

fn labels_match(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(labels) = labels else { return false };
    selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

fn pod_is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn endpoint_for(pod: &Pod) -> Option<Endpoint> {
    let ready = pod_is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Some(Endpoint {
        addresses: vec![pod_ip(pod)?],
        conditions: Some(EndpointConditions {
            ready: Some(ready && !terminating),
            serving: Some(ready),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ..Default::default()
    })
}

fn endpoint_port(port: &ServicePort, pod: Option<&Pod>) -> EndpointPort {
    let number = match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod.and_then(|pod| container_port_named(pod, name)),
    };
    EndpointPort {
        name: port.name.clone(),
        port: number,
        protocol: port.protocol.clone().or_else(|| Some("TCP".into())),
        app_protocol: port.app_protocol.clone(),
    }
}

fn container_port_named(pod: &Pod, name: &str) -> Option<i32> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).unwrap()
    }

    fn web_pod(name: &str, ip: &str, ready: &str) -> Pod {
        yaml(&format!(
            r#"
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: n1
  containers: [{{name: httpd, image: web, ports: [{{name: http, containerPort: 8080}}]}}]
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{ready}"}}]
"#
        ))
    }

    fn service(target_port: &str) -> Service {
        yaml(&format!(
            r#"
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: 10.96.0.80
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {target_port}}}]
"#
        ))
    }

    #[test]
    fn named_target_port_resolves_to_the_container_port() {
        let slices = slices_for_pods(&[service("http")], &[web_pod("web-a", "10.88.0.2", "True")]);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL], "web");
        let ports = slice.ports.as_ref().unwrap();
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(slice.endpoints[0].addresses, vec!["10.88.0.2".to_string()]);
        assert_eq!(slice.endpoints[0].conditions.as_ref().unwrap().ready, Some(true));
    }

    #[test]
    fn numeric_target_port_and_readiness_carry_over() {
        let pods = [web_pod("web-a", "10.88.0.2", "True"), web_pod("web-b", "10.88.0.3", "False")];
        let slice = &slices_for_pods(&[service("9000")], &pods)[0];
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(9000));
        let ready: Vec<_> = slice.endpoints.iter().map(|e| e.conditions.as_ref().unwrap().ready).collect();
        assert_eq!(ready, vec![Some(true), Some(false)]);
    }

    #[test]
    fn pods_without_ip_or_other_labels_are_not_members() {
        let mut no_ip = web_pod("web-a", "10.88.0.2", "True");
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let mut other: Pod = web_pod("db", "10.88.0.4", "True");
        other.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        let slice = &slices_for_pods(&[service("http")], &[no_ip, other])[0];
        assert!(slice.endpoints.is_empty());
    }

    #[test]
    fn services_without_selector_get_no_slice() {
        let mut svc = service("http");
        svc.spec.as_mut().unwrap().selector = None;
        assert!(slices_for_pods(&[svc], &[web_pod("web-a", "10.88.0.2", "True")]).is_empty());
    }
}
