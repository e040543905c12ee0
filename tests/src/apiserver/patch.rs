//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (with the patch merge keys
//! of the fields kubelet and kubectl patch, and the `$patch`, `$retainKeys`,
//! `$setElementOrder/` and `$deleteFromPrimitiveList/` directives) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::errors::ApiError;

/// The patch types of the `Content-Type` of a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// How a list field merges in a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// The patch list replaces the original (atomic lists, and lists without a patch strategy).
    Replace,
    /// Elements are maps merged by this key.
    MergeByKey(&'static str),
    /// A set of scalars: union.
    MergePrimitives,
}

/// The patch strategy of the list at `path` (field names from the object root, list indices
/// left out), as the Kubernetes Go types declare it with `patchStrategy`/`patchMergeKey`.
fn list_strategy(path: &[String]) -> ListStrategy {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    let last = names.last().copied().unwrap_or_default();
    let parent = if names.len() >= 2 { names[names.len() - 2] } else { "" };
    let in_container = matches!(parent, "containers" | "initContainers" | "ephemeralContainers");
    match (parent, last) {
        ("metadata", "ownerReferences") => ListStrategy::MergeByKey("uid"),
        ("metadata", "finalizers") => ListStrategy::MergePrimitives,
        ("spec", "containers" | "initContainers" | "ephemeralContainers") => ListStrategy::MergeByKey("name"),
        ("spec", "volumes" | "imagePullSecrets" | "resourceClaims") => ListStrategy::MergeByKey("name"),
        ("spec", "hostAliases") => ListStrategy::MergeByKey("ip"),
        ("spec", "podCIDRs") => ListStrategy::MergePrimitives,
        // Service ports.
        ("spec", "ports") => ListStrategy::MergeByKey("port"),
        (_, "ports") if in_container => ListStrategy::MergeByKey("containerPort"),
        (_, "env") if in_container => ListStrategy::MergeByKey("name"),
        (_, "volumeMounts") if in_container => ListStrategy::MergeByKey("mountPath"),
        (_, "volumeDevices") if in_container => ListStrategy::MergeByKey("devicePath"),
        ("status", "conditions") => ListStrategy::MergeByKey("type"),
        ("status", "podIPs" | "hostIPs") => ListStrategy::MergeByKey("ip"),
        ("status", "addresses") => ListStrategy::MergeByKey("type"),
        _ => ListStrategy::Replace,
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Apply a patch of `patch_type` to `original`.
pub fn apply_patch(patch_type: PatchType, original: &Value, body: &[u8]) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &patch)
                .map_err(|e| ApiError::internal(format!("the JSON patch could not be applied: {e}")))?;
            Ok(patched)
        }
        PatchType::Merge => {
            let patch = parse_json_object(body)?;
            let mut patched = original.clone();
            json_patch::merge(&mut patched, &patch);
            Ok(patched)
        }
        PatchType::StrategicMerge => {
            let patch = parse_json_object(body)?;
            strategic_merge(original, &patch)
        }
        PatchType::Apply => {
            let patch: Value =
                serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("the apply configuration must be an object"));
            }
            strategic_merge(original, &patch)
        }
    }
}

fn parse_json_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request("the patch must be a JSON object"))
    }
}

/// Strategic merge of `patch` into `original` (both whole objects).
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut path = Vec::new();
    Ok(merge_value(Some(original), patch, &mut path)?.unwrap_or(Value::Null))
}

/// Merge one value; `None` means "delete this field".
fn merge_value(original: Option<&Value>, patch: &Value, path: &mut Vec<String>) -> Result<Option<Value>, ApiError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(patch_map) => {
            let empty = Map::new();
            let original_map = match original {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            merge_map(original_map, patch_map, path)
        }
        Value::Array(patch_list) => {
            let original_list = match original {
                Some(Value::Array(l)) => Some(l.as_slice()),
                _ => None,
            };
            merge_list(original_list, patch_list, path).map(|l| Some(Value::Array(l)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    match patch.get(DIRECTIVE).and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove(DIRECTIVE);
            return Ok(Some(Value::Object(strip_directives(replaced))));
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!("unknown patch directive {other:?} at {}", path.join("."))))
        }
    }
    let mut merged = original.clone();
    for (key, value) in patch {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            continue;
        }
        path.push(key.clone());
        let result = merge_value(original.get(key), value, path);
        path.pop();
        match result? {
            Some(v) => {
                merged.insert(key.clone(), v);
            }
            None => {
                merged.remove(key);
            }
        }
    }
    // Deletions from primitive lists apply after the merge of the same list.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let remove: Vec<&Value> = value.as_array().map(|l| l.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = merged.get_mut(field) {
                list.retain(|item| !remove.contains(&item));
            }
        }
    }
    if let Some(Value::Array(retain)) = patch.get(RETAIN_KEYS) {
        let retain: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        merged.retain(|k, _| retain.contains(&k.as_str()));
    }
    Ok(Some(Value::Object(merged)))
}

/// Remove directive keys from a replacement map (recursively at the top only).
fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    map
}

fn merge_list(original: Option<&[Value]>, patch: &[Value], path: &mut Vec<String>) -> Result<Vec<Value>, ApiError> {
    let replace_directive = patch.iter().any(|item| {
        item.get(DIRECTIVE).and_then(Value::as_str) == Some("replace") && item.as_object().is_some_and(|m| m.len() == 1)
    });
    let patch_items: Vec<&Value> = patch
        .iter()
        .filter(|item| !(item.as_object().is_some_and(|m| m.len() == 1) && item.get(DIRECTIVE).is_some()))
        .collect();
    let strategy = list_strategy(path);
    let Some(original) = original else {
        return Ok(patch_items
            .into_iter()
            .filter(|item| item.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"))
            .map(|item| strip_value_directives(item.clone()))
            .collect());
    };
    if replace_directive {
        return Ok(patch_items.into_iter().map(|item| strip_value_directives(item.clone())).collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch_items.into_iter().cloned().collect()),
        ListStrategy::MergePrimitives => {
            let mut merged: Vec<Value> = original.to_vec();
            for item in patch_items {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(merged)
        }
        ListStrategy::MergeByKey(key) => {
            let mut merged: Vec<Value> = original.to_vec();
            for item in patch_items {
                let Some(wanted) = item.get(key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let position = merged.iter().position(|existing| existing.get(key) == Some(wanted));
                let delete = item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(index), true) => {
                        merged.remove(index);
                    }
                    (None, true) => {}
                    (Some(index), false) => {
                        if let Some(value) = merge_value(Some(&merged[index]), item, path)? {
                            merged[index] = value;
                        }
                    }
                    (None, false) => merged.push(strip_value_directives(item.clone())),
                }
            }
            Ok(merged)
        }
    }
}

fn strip_value_directives(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives(map)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_merge_by_type_and_container_statuses_replace() {
        let original = json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "a", "ready": false}, {"name": "b", "ready": false}],
            "podIPs": [{"ip": "10.0.0.1"}]
        }});
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "a", "ready": true}],
            "podIPs": [{"ip": "fd00::1"}]
        }});
        let merged = strategic_merge(&original, &patch).expect("merge");
        assert_eq!(
            merged["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}])
        );
        assert_eq!(merged["status"]["containerStatuses"], json!([{"name": "a", "ready": true}]));
        assert_eq!(merged["status"]["podIPs"], json!([{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]));
    }

    #[test]
    fn directives() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]},
            "status": {"conditions": [{"type": "A"}, {"type": "B"}], "x": {"k": 1, "j": 2}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
            "status": {"conditions": [{"type": "A", "$patch": "delete"}], "x": {"$retainKeys": ["j"], "j": 3}}});
        let merged = strategic_merge(&original, &patch).expect("merge");
        assert_eq!(merged["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(merged["status"]["conditions"], json!([{"type": "B"}]));
        assert_eq!(merged["status"]["x"], json!({"j": 3}));
    }
}
