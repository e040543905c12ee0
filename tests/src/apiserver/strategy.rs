//! Per-resource create/update rules, as the API server's registry strategies apply them:
//! server-set metadata, defaults, validation, status-subresource separation, and optimistic
//! concurrency on resourceVersion.

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::resources::{self, ResourceType};

/// RFC 3339 timestamp with seconds, as metav1.Time serializes.
pub fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 timestamp `seconds` from now.
pub fn timestamp_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::thread_rng().gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// The 5-character suffix of generateName.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

pub fn name_of(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

pub fn namespace_of(object: &Value) -> &str {
    object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
}

pub fn resource_version_of(object: &Value) -> &str {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default()
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| is_dns_label(label) && label.len() <= 63)
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is(resource: &ResourceType, other: &ResourceType) -> bool {
    std::ptr::eq(resource, other)
}

/// Check the body of a create or update names the kind served at this URL.
pub fn check_type(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or(resource.kind);
    let api_version =
        object.get("apiVersion").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| resource.api_version());
    if kind != resource.kind || api_version != resource.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    Ok(())
}

/// Validate the object itself (name and the few required fields this server checks).
fn validate(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let name = name_of(object);
    let mut causes: Vec<(String, String)> = Vec::new();
    let name_ok = if is(resource, &resources::NAMESPACES) || is(resource, &resources::SERVICES) {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if name.is_empty() {
        causes.push(("metadata.name".into(), "Required value: name or generateName is required".into()));
    } else if !name_ok {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if is(resource, &resources::PODS) {
        let containers = object.pointer("/spec/containers").and_then(Value::as_array);
        match containers {
            None => causes.push(("spec.containers".into(), "Required value".into())),
            Some(list) if list.is_empty() => causes.push(("spec.containers".into(), "Required value".into())),
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    if c.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() {
                        causes.push((format!("spec.containers[{i}].name"), "Required value".into()));
                    }
                    if c.get("image").and_then(Value::as_str).unwrap_or_default().is_empty() {
                        causes.push((format!("spec.containers[{i}].image"), "Required value".into()));
                    }
                }
            }
        }
    }
    if is(resource, &resources::ENDPOINT_SLICES) && object.get("addressType").and_then(Value::as_str).is_none() {
        causes.push(("addressType".into(), "Required value".into()));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, name, &causes))
    }
}

/// As the API server stores a Secret: `type` defaults to Opaque, `stringData` is merged into
/// `data` (base64) and dropped, every `data` value must be base64, and a dockerconfigjson
/// secret must hold `.dockerconfigjson`.
fn normalize_secret(secret: &mut Value) -> Result<(), ApiError> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let name = name_of(secret).to_string();
    let invalid = |field: String, why: String| ApiError::invalid(&resources::SECRETS, &name, &[(field, why)]);
    set_default(secret, "type", json!("Opaque"));
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    if let Some(Value::Object(plain)) = secret.as_object_mut().and_then(|s| s.remove("stringData")) {
        for (key, value) in plain {
            let text =
                value.as_str().ok_or_else(|| invalid(format!("stringData[{key}]"), "must be a string".into()))?;
            secret["data"][key] = json!(engine.encode(text));
        }
    }
    let mut decoded = std::collections::BTreeMap::new();
    for (key, value) in secret["data"].as_object().into_iter().flatten() {
        let bytes = value
            .as_str()
            .and_then(|text| engine.decode(text).ok())
            .ok_or_else(|| invalid(format!("data[{key}]"), "Invalid value: not base64".into()))?;
        decoded.insert(key.clone(), bytes);
    }
    if secret["type"] == json!("kubernetes.io/dockerconfigjson") {
        let config = decoded
            .get(".dockerconfigjson")
            .ok_or_else(|| invalid("data[.dockerconfigjson]".into(), "Required value".into()))?;
        if serde_json::from_slice::<Value>(config).is_err() {
            return Err(invalid("data[.dockerconfigjson]".into(), "Invalid value: not valid JSON".into()));
        }
    }
    Ok(())
}

fn set_default(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(key.to_string()).or_insert(value);
    }
}

fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last_segment.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) if image.contains('@') => "IfNotPresent",
        Some(_) => "IfNotPresent",
    }
}

fn default_pod(pod: &mut Value) {
    let spec = &mut pod["spec"];
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
                set_default(container, "imagePullPolicy", json!(default_pull_policy(&image)));
                set_default(container, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(container, "terminationMessagePolicy", json!("File"));
                set_default(container, "resources", json!({}));
                if let Some(Value::Array(ports)) = container.get_mut("ports") {
                    for port in ports {
                        set_default(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Pod spec fields an update may change: container images, activeDeadlineSeconds,
/// tolerations (additions), terminationGracePeriodSeconds.
fn mutable_pod_spec_removed(spec: &Value) -> Value {
    let mut spec = spec.clone();
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers {
                if let Some(m) = c.as_object_mut() {
                    m.remove("image");
                }
            }
        }
    }
    if let Some(m) = spec.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
    }
    spec
}

/// Fill what the server sets on create; `allocate_cluster_ip` gives a free service IP.
pub fn prepare_create(
    resource: &ResourceType,
    mut object: Value,
    url_namespace: &str,
    allocate_cluster_ip: &mut dyn FnMut() -> String,
) -> Result<Value, ApiError> {
    check_type(resource, &object)?;
    if is(resource, &resources::SECRETS) {
        normalize_secret(&mut object)?;
    }
    object["kind"] = json!(resource.kind);
    object["apiVersion"] = json!(resource.api_version());
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if resource.namespaced {
        let body_namespace = namespace_of(&object);
        if !body_namespace.is_empty() && body_namespace != url_namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        object["metadata"]["namespace"] = json!(url_namespace);
    } else if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    validate(resource, &object)?;
    let metadata = &mut object["metadata"];
    if let Some(m) = metadata.as_object_mut() {
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(field);
        }
    }
    metadata["uid"] = json!(new_uid());
    metadata["creationTimestamp"] = json!(now_timestamp());
    if object.get("spec").is_some() || resource.has_status() {
        object["metadata"]["generation"] = json!(1);
    }
    if is(resource, &resources::PODS) {
        default_pod(&mut object);
        object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        if let Some(qos) = pod_qos_class(&object) {
            object["status"]["qosClass"] = json!(qos);
        }
    } else if is(resource, &resources::NAMESPACES) {
        set_default(&mut object, "spec", json!({}));
        object["spec"]["finalizers"] = json!(["kubernetes"]);
        object["status"] = json!({"phase": "Active"});
        let name = name_of(&object).to_string();
        let labels = &mut object["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        labels["kubernetes.io/metadata.name"] = json!(name);
    } else if is(resource, &resources::SERVICES) {
        default_service(&mut object, allocate_cluster_ip);
        object["status"] = json!({"loadBalancer": {}});
    } else if is(resource, &resources::NODES) {
        set_default(&mut object, "spec", json!({}));
    }
    Ok(object)
}

fn default_service(service: &mut Value, allocate_cluster_ip: &mut dyn FnMut() -> String) {
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless && spec.get("clusterIP").and_then(Value::as_str).unwrap_or_default().is_empty() {
        spec["clusterIP"] = json!(allocate_cluster_ip());
    }
    let cluster_ip = spec["clusterIP"].clone();
    set_default(spec, "clusterIPs", json!([cluster_ip]));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            set_default(port, "targetPort", number);
        }
    }
}

/// The QoS class from requests and limits (BestEffort / Burstable / Guaranteed).
fn pod_qos_class(pod: &Value) -> Option<&'static str> {
    let containers = pod.pointer("/spec/containers")?.as_array()?;
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let limited = |name: &str| limits.is_some_and(|l| l.contains_key(name));
        let requests_match = requests.is_none_or(|r| r.iter().all(|(k, v)| limits.and_then(|l| l.get(k)) == Some(v)));
        if !(limited("cpu") && limited("memory") && requests_match) {
            guaranteed = false;
        }
    }
    Some(if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    })
}

/// Metadata fields a client may not change on update.
const SERVER_OWNED_METADATA: &[&str] =
    &["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace", "name"];

/// Turn a client's new version of an object into what is stored: optimistic concurrency,
/// server-owned metadata, status separation, generation, immutability.
pub fn prepare_update(
    resource: &ResourceType,
    subresource: &str,
    old: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    check_type(resource, &new)?;
    if is(resource, &resources::SECRETS) {
        normalize_secret(&mut new)?;
        if new.get("type") != old.get("type") {
            return Err(ApiError::invalid(
                resource,
                name_of(old),
                &[("type".into(), "Invalid value: field is immutable".into())],
            ));
        }
    }
    let name = name_of(old).to_string();
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let new_name = name_of(&new);
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let wanted_version = resource_version_of(&new);
    if !wanted_version.is_empty() && wanted_version != resource_version_of(old) {
        return Err(ApiError::conflict(
            resource,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    new["kind"] = json!(resource.kind);
    new["apiVersion"] = json!(resource.api_version());
    if subresource == "status" {
        // A status write changes .status only.
        let mut stored = old.clone();
        stored["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
        return Ok(stored);
    }
    for field in SERVER_OWNED_METADATA {
        match old["metadata"].get(*field) {
            Some(value) => new["metadata"][*field] = value.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(*field);
                }
            }
        }
    }
    if resource.has_status() {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if is(resource, &resources::PODS) {
        let old_spec = mutable_pod_spec_removed(&old["spec"]);
        let mut defaulted = new.clone();
        default_pod(&mut defaulted);
        let new_spec = mutable_pod_spec_removed(&defaulted["spec"]);
        if old_spec != new_spec {
            return Err(ApiError::invalid(
                resource,
                &name,
                &[("spec".into(), "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into())],
            ));
        }
        new = defaulted;
    }
    if is(resource, &resources::SERVICES) {
        let old_ip = old.pointer("/spec/clusterIP").cloned();
        if let Some(ip) = old_ip {
            let requested = new.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
            if requested.is_empty() {
                new["spec"]["clusterIP"] = ip.clone();
                new["spec"]["clusterIPs"] = json!([ip]);
            } else if Some(requested) != ip.as_str() {
                return Err(ApiError::invalid(
                    resource,
                    &name,
                    &[("spec.clusterIPs[0]".into(), "Invalid value: field is immutable".into())],
                ));
            }
        }
        default_service(&mut new, &mut || String::new());
    }
    if old.get("spec") != new.get("spec") {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    Ok(new)
}

/// Whether an object marked for deletion may now be removed: no finalizers left and the
/// grace period is over (0), as the generic registry decides on update.
pub fn ready_to_remove(object: &Value) -> bool {
    let marked = object.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
    let grace_over = object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0;
    marked && no_finalizers && grace_over
}
