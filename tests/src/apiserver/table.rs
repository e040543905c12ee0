//! Server-side printing: meta.k8s.io/v1 Table answers for `Accept: application/json;as=Table`,
//! with the columns kubectl shows for each kind (priority 1 columns appear with -o wide).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::ResourceType;

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") && params.contains(&"v=v1")
    })
}

/// The media type a Table answer carries.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// How rows carry their object (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

fn text(object: &Value, pointer: &str) -> String {
    match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn or_none(value: String) -> String {
    if value.is_empty() {
        "<none>".into()
    } else {
        value
    }
}

/// kubectl-style short age ("42s", "5m", "3h", "2d").
fn age(object: &Value) -> String {
    let Some(created) = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return "<unknown>".into();
    };
    let seconds = (Utc::now() - created.with_timezone(&Utc)).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(resource: &ResourceType) -> Vec<Value> {
    let name = column("Name", "string", 0, "Name must be unique within a namespace.");
    let age_column = column(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match resource.kind {
        "Pod" => vec![
            name,
            column("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            column("Status", "string", 0, "The aggregate status of the containers in this pod."),
            column("Restarts", "string", 0, "The number of times the containers in this pod have been restarted."),
            age_column,
            column("IP", "string", 1, "IP address allocated to the pod."),
            column("Node", "string", 1, "Name of the node this pod is assigned to."),
            column("Nominated Node", "string", 1, "Name of the node the pod is nominated to."),
            column("Readiness Gates", "string", 1, "Readiness gates of the pod."),
        ],
        "Node" => vec![
            name,
            column("Status", "string", 0, "The status of the node"),
            column("Roles", "string", 0, "The roles of the node"),
            age_column,
            column("Version", "string", 0, "Kubelet Version reported by the node."),
            column("Internal-IP", "string", 1, "List of internal IPs."),
            column("External-IP", "string", 1, "List of external IPs."),
            column("OS-Image", "string", 1, "OS Image reported by the node."),
            column("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            column("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        "Namespace" => vec![name, column("Status", "string", 0, "The status of the namespace"), age_column],
        "Service" => vec![
            name,
            column("Type", "string", 0, "The type of the service."),
            column("Cluster-IP", "string", 0, "The cluster IP of the service."),
            column("External-IP", "string", 0, "The external IPs of the service."),
            column("Port(s)", "string", 0, "The ports of the service."),
            age_column,
            column("Selector", "string", 1, "The selector of the service."),
        ],
        "Lease" => vec![name, column("Holder", "string", 0, "The holder of the lease."), age_column],
        "EndpointSlice" => vec![
            name,
            column("AddressType", "string", 0, "The address type of the slice."),
            column("Ports", "string", 0, "The ports of the slice."),
            column("Endpoints", "string", 0, "The addresses of the slice."),
            age_column,
        ],
        "Event" => vec![
            column("Last Seen", "string", 0, "Time of the last occurrence."),
            column("Type", "string", 0, "Type of the event."),
            column("Reason", "string", 0, "Reason of the event."),
            column("Object", "string", 0, "The object the event is about."),
            column("Message", "string", 0, "The message of the event."),
            name,
        ],
        _ => vec![name, age_column],
    }
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let total = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == json!(true)).count());
    let restarts: i64 = statuses.map_or(0, |s| s.iter().filter_map(|c| c["restartCount"].as_i64()).sum());
    let mut status = text(pod, "/status/reason");
    if status.is_empty() {
        status = text(pod, "/status/phase");
        if let Some(waiting) =
            statuses.and_then(|s| s.iter().find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str)))
        {
            status = waiting.to_string();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(pod["metadata"]["name"]),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(pod)),
        json!(or_none(text(pod, "/status/podIP"))),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

fn node_cells(node: &Value) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string)).collect()
        })
        .unwrap_or_default();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|a| a["type"] == kind))
            .map(|a| text(a, "/address"))
            .unwrap_or_default()
    };
    vec![
        json!(node["metadata"]["name"]),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(node)),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(or_none(text(node, "/status/nodeInfo/osImage"))),
        json!(or_none(text(node, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(text(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn service_cells(service: &Value) -> Vec<Value> {
    let ports: Vec<String> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let node_port = p.get("nodePort").map(|n| format!(":{n}")).unwrap_or_default();
                    format!("{}{}/{}", p["port"], node_port, text(p, "/protocol"))
                })
                .collect()
        })
        .unwrap_or_default();
    let selector: Vec<String> = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|s| s.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    vec![
        json!(service["metadata"]["name"]),
        json!(text(service, "/spec/type")),
        json!(or_none(text(service, "/spec/clusterIP"))),
        json!("<none>"),
        json!(or_none(ports.join(","))),
        json!(age(service)),
        json!(or_none(selector.join(","))),
    ]
}

fn endpoint_slice_cells(slice: &Value) -> Vec<Value> {
    let ports: Vec<String> =
        slice["ports"].as_array().map(|p| p.iter().map(|p| p["port"].to_string()).collect()).unwrap_or_default();
    let addresses: Vec<String> = slice["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(slice["metadata"]["name"]),
        json!(text(slice, "/addressType")),
        json!(or_none(ports.join(","))),
        json!(or_none(addresses.join(","))),
        json!(age(slice)),
    ]
}

fn event_cells(event: &Value) -> Vec<Value> {
    let (kind, name) = if event.get("regarding").is_some() {
        (text(event, "/regarding/kind"), text(event, "/regarding/name"))
    } else {
        (text(event, "/involvedObject/kind"), text(event, "/involvedObject/name"))
    };
    let message = if event.get("note").is_some() { text(event, "/note") } else { text(event, "/message") };
    vec![
        json!(age(event)),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(format!("{}/{}", kind.to_lowercase(), name)),
        json!(message),
        json!(event["metadata"]["name"]),
    ]
}

fn cells(resource: &ResourceType, object: &Value) -> Vec<Value> {
    match resource.kind {
        "Pod" => pod_cells(object),
        "Node" => node_cells(object),
        "Namespace" => {
            vec![json!(object["metadata"]["name"]), json!(text(object, "/status/phase")), json!(age(object))]
        }
        "Service" => service_cells(object),
        "Lease" => vec![
            json!(object["metadata"]["name"]),
            json!(or_none(text(object, "/spec/holderIdentity"))),
            json!(age(object)),
        ],
        "EndpointSlice" => endpoint_slice_cells(object),
        "Event" => event_cells(object),
        _ => vec![json!(object["metadata"]["name"]), json!(age(object))],
    }
}

fn row_object(object: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(object.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        })),
    }
}

/// A Table of `objects` (one for a get, many for a list).
pub fn table(
    resource: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": cells(resource, object)});
            if let Some(o) = row_object(object, include) {
                row["object"] = o;
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(resource),
        "rows": rows,
    })
}
