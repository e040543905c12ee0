//! Authorization: system:masters may do anything; node identities get what the Node
//! authorizer, the system:node role and the NodeRestriction admission plugin give a kubelet
//! (plus the system:node-proxier role's reads); the user system:kube-proxy gets
//! system:node-proxier; every authenticated user may read discovery and health.

use serde_json::Value;

use super::authn::{UserInfo, GROUP_MASTERS};
use super::errors::ApiError;
use super::resources::{self, ResourceType};

/// What a resource request asks to do.
pub struct ResourceRequest<'a> {
    pub verb: &'a str,
    pub resource: &'static ResourceType,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

const KUBE_NODE_LEASE: &str = "kube-node-lease";
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// The RBAC-style denial message.
fn rbac_denied(user: &UserInfo, request: &ResourceRequest<'_>) -> ApiError {
    let resource = if request.subresource.is_empty() {
        request.resource.plural.to_string()
    } else {
        format!("{}/{}", request.resource.plural, request.subresource)
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", request.namespace)
    };
    ApiError::forbidden(
        request.resource,
        request.name,
        &format!(
            "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {}",
            user.name, request.verb, resource, request.resource.group, scope
        ),
    )
}

/// Non-resource URLs (discovery, version, health): any authenticated user.
pub fn authorize_path(_user: &UserInfo) -> Result<(), ApiError> {
    Ok(())
}

/// The objects a request is judged by: the object as stored now (for reads and writes of
/// existing objects), the object of a create, and the pods of a namespace (the Node
/// authorizer's graph: which pods on which node reference which secrets and configmaps).
pub struct Context<'a> {
    pub stored: Option<&'a Value>,
    pub incoming: Option<&'a Value>,
    pub pods_in_namespace: &'a dyn Fn(&str) -> Vec<Value>,
}

/// Decide a resource request.
pub fn authorize(user: &UserInfo, request: &ResourceRequest<'_>, context: &Context<'_>) -> Result<(), ApiError> {
    if user.in_group(GROUP_MASTERS) {
        return Ok(());
    }
    if let Some(node) = user.node_name() {
        return authorize_node(node, user, request, context);
    }
    if user.name == KUBE_PROXY_USER && node_proxier_allows(request) {
        return Ok(());
    }
    Err(rbac_denied(user, request))
}

/// The system:node-proxier role: list/watch services, endpointslices, nodes; write events.
fn node_proxier_allows(request: &ResourceRequest<'_>) -> bool {
    let r = request.resource;
    let readable = std::ptr::eq(r, &resources::SERVICES)
        || std::ptr::eq(r, &resources::ENDPOINT_SLICES)
        || std::ptr::eq(r, &resources::NODES);
    (readable && request.subresource.is_empty() && is_read(request.verb))
        || (is_event(r) && matches!(request.verb, "create" | "patch" | "update"))
}

fn is_event(r: &ResourceType) -> bool {
    std::ptr::eq(r, &resources::CORE_EVENTS) || std::ptr::eq(r, &resources::EVENTS_V1)
}

fn pod_node(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).unwrap_or_default()
}

fn authorize_node(
    node: &str,
    user: &UserInfo,
    request: &ResourceRequest<'_>,
    context: &Context<'_>,
) -> Result<(), ApiError> {
    let (stored, incoming) = (context.stored, context.incoming);
    let r = request.resource;
    let verb = request.verb;
    let sub = request.subresource;
    let restricted = |why: String| Err(ApiError::forbidden(r, request.name, &why));

    if std::ptr::eq(r, &resources::NODES) {
        if sub.is_empty() && is_read(verb) {
            return Ok(());
        }
        if (sub.is_empty() || sub == "status") && matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
            let target = if verb == "create" {
                incoming.and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or(request.name)
            } else {
                request.name
            };
            if target == node {
                return Ok(());
            }
            return restricted(format!("node \"{node}\" is not allowed to modify node \"{target}\""));
        }
        return Err(rbac_denied(user, request));
    }

    if std::ptr::eq(r, &resources::LEASES) {
        if request.namespace == KUBE_NODE_LEASE && matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
            let target = if verb == "create" {
                incoming.and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or(request.name)
            } else {
                request.name
            };
            if target == node {
                return Ok(());
            }
            return restricted(format!(
                "node \"{node}\" can only access node lease with the same name as the requesting node"
            ));
        }
        return Err(rbac_denied(user, request));
    }

    if std::ptr::eq(r, &resources::PODS) {
        match (sub, verb) {
            ("", "get" | "list" | "watch") => return Ok(()),
            ("status", "get") => return Ok(()),
            ("status", "update" | "patch") => {
                if pod_node(stored) == node {
                    return Ok(());
                }
                return restricted(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            ("", "delete") => {
                if pod_node(stored) == node {
                    return Ok(());
                }
                return restricted(format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"));
            }
            ("", "create") => {
                let is_mirror = incoming
                    .and_then(|o| o.pointer("/metadata/annotations"))
                    .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
                    .is_some();
                if !is_mirror {
                    return restricted(format!("pod does not have \"{MIRROR_POD_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"));
                }
                if pod_node(incoming) != node {
                    return restricted(format!(
                        "node \"{node}\" can only create pods with spec.nodeName set to itself"
                    ));
                }
                return mirror_pod_admitted(node, incoming).or_else(restricted);
            }
            _ => return Err(rbac_denied(user, request)),
        }
    }

    // The Node authorizer: a node may request a token for a service account that a pod bound
    // to it runs as.
    if std::ptr::eq(r, &resources::SERVICE_ACCOUNTS) && verb == "create" && sub == "token" {
        let pods = (context.pods_in_namespace)(request.namespace);
        let service_account = |pod: &Value| {
            pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default").to_string()
        };
        if pods.iter().any(|pod| pod_node(Some(pod)) == node && service_account(pod) == request.name) {
            return Ok(());
        }
        return restricted(format!(
            "no relationship found between node '{node}' and serviceaccount {}/{}",
            request.namespace, request.name
        ));
    }

    // The Node authorizer: a node may get a secret or configmap only when a pod bound to it
    // references it (lists and watches of many are never allowed).
    if std::ptr::eq(r, &resources::SECRETS) || std::ptr::eq(r, &resources::CONFIG_MAPS) {
        if verb == "get" && sub.is_empty() {
            let pods = (context.pods_in_namespace)(request.namespace);
            let related = pods
                .iter()
                .filter(|pod| pod_node(Some(pod)) == node)
                .any(|pod| references(pod, r).contains(request.name));
            if related {
                return Ok(());
            }
            return restricted(format!(
                "User \"{}\" cannot get resource \"{}\" in API group \"\" in the namespace \"{}\": no relationship \
                 found between node '{node}' and this object",
                user.name, r.plural, request.namespace
            ));
        }
        return Err(rbac_denied(user, request));
    }

    if is_event(r) && matches!(verb, "create" | "patch" | "update") {
        return Ok(());
    }
    let node_readable = std::ptr::eq(r, &resources::SERVICES) || std::ptr::eq(r, &resources::ENDPOINT_SLICES);
    if node_readable && sub.is_empty() && is_read(verb) {
        return Ok(());
    }
    Err(rbac_denied(user, request))
}

/// NodeRestriction's further rules for a mirror pod: one controller owner reference, to the
/// node itself, without blockOwnerDeletion (the owner's uid is not checked here), and no
/// reference to a service account, secret or configmap.
fn mirror_pod_admitted(node: &str, pod: Option<&Value>) -> Result<(), String> {
    let pod = pod.unwrap_or(&Value::Null);
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    let [owner] = owners.as_slice() else {
        return Err(match owners.len() {
            0 => format!("node \"{node}\" can only create pods with an owner reference set to itself"),
            _ => format!("node \"{node}\" can only create pods with a single owner reference set to itself"),
        });
    };
    let field = |name: &str| owner.get(name).and_then(Value::as_str).unwrap_or_default();
    if field("apiVersion") != "v1" || field("kind") != "Node" || field("name") != node {
        return Err(format!("node \"{node}\" can only create pods with an owner reference set to itself"));
    }
    if owner.get("controller").and_then(Value::as_bool) != Some(true) {
        return Err(format!("node \"{node}\" can only create pods with a controller owner reference set to itself"));
    }
    if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
        return Err(format!("node \"{node}\" must not set blockOwnerDeletion on an owner reference"));
    }
    if pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        return Err(format!("node \"{node}\" can not create pods that reference a service account"));
    }
    for (resource, kind) in [(&resources::SECRETS, "secrets"), (&resources::CONFIG_MAPS, "configmaps")] {
        if !references(pod, resource).is_empty() {
            return Err(format!("node \"{node}\" can not create pods that reference {kind}"));
        }
    }
    Ok(())
}

/// The names of the secrets (or configmaps) a pod references: image pull secrets, volumes,
/// projected volume sources, env and envFrom of every container.
fn references(pod: &Value, resource: &ResourceType) -> std::collections::BTreeSet<String> {
    let secrets = std::ptr::eq(resource, &resources::SECRETS);
    let mut names = std::collections::BTreeSet::new();
    let mut add = |value: Option<&Value>| {
        if let Some(name) = value.and_then(Value::as_str) {
            names.insert(name.to_string());
        }
    };
    let spec = pod.get("spec");
    let list = |value: Option<&Value>| value.and_then(Value::as_array).cloned().unwrap_or_default();
    if secrets {
        for entry in list(spec.and_then(|s| s.get("imagePullSecrets"))) {
            add(entry.get("name"));
        }
    }
    for volume in list(spec.and_then(|s| s.get("volumes"))) {
        if secrets {
            add(volume.pointer("/secret/secretName"));
        } else {
            add(volume.pointer("/configMap/name"));
        }
        for source in list(volume.pointer("/projected/sources")) {
            add(source.pointer(if secrets { "/secret/name" } else { "/configMap/name" }));
        }
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for container in list(spec.and_then(|s| s.get(kind))) {
            for env in list(container.get("env")) {
                add(env.pointer(if secrets {
                    "/valueFrom/secretKeyRef/name"
                } else {
                    "/valueFrom/configMapKeyRef/name"
                }));
            }
            for from in list(container.get("envFrom")) {
                add(from.pointer(if secrets { "/secretRef/name" } else { "/configMapRef/name" }));
            }
        }
    }
    names
}
