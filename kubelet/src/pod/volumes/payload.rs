//! What a configMap, secret, downwardAPI or projected volume holds, as kubelet's MakePayload
//! functions compute it: all keys or the listed `items` (key, path, mode), `defaultMode` for
//! the rest (0644), `optional` objects and keys left out. Pure once the objects are read.

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod};

use super::atomic_writer::{FileProjection, Payload};
use crate::pod::downward::{container_named, field_value, resource_value, DownwardError, NodeAllocatable, PodFacts};
use crate::pod::referenced_objects::{ObjectData, ObjectError, ObjectKind};

/// kubelet's default file mode for these volumes.
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigKey(String),
    #[error("references non-existent secret key: {0}")]
    MissingSecretKey(String),
    #[error("downward API file {path}")]
    Downward {
        path: String,
        #[source]
        source: DownwardError,
    },
    #[error("downward API file {0} names neither a fieldRef nor a resourceFieldRef")]
    EmptyDownwardItem(String),
}

/// A reference to one ConfigMap or Secret and what to take from it.
pub struct KeySource<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
    pub items: Option<&'a [KeyToPath]>,
    pub optional: bool,
    pub default_mode: i32,
}

/// The files of `source`; `data` is None when the object does not exist.
pub fn key_payload(source: &KeySource<'_>, data: Option<&ObjectData>) -> Result<Payload, PayloadError> {
    let Some(data) = data else {
        if source.optional {
            return Ok(Payload::new());
        }
        return Err(ObjectError::NotFound { kind: source.kind, name: source.name.to_string() }.into());
    };
    let mode = |m: Option<i32>| u32::try_from(m.unwrap_or(source.default_mode)).unwrap_or(0o644);
    let mut payload = Payload::new();
    match source.items.filter(|items| !items.is_empty()) {
        None => {
            for (key, bytes) in data.volume_entries() {
                payload.insert(key.clone(), FileProjection { data: bytes.clone(), mode: mode(None) });
            }
        }
        Some(items) => {
            for item in items {
                let Some(bytes) = data.volume_value(&item.key) else {
                    if source.optional {
                        continue;
                    }
                    return Err(match source.kind {
                        ObjectKind::ConfigMap => PayloadError::MissingConfigKey(item.key.clone()),
                        ObjectKind::Secret => PayloadError::MissingSecretKey(item.key.clone()),
                    });
                };
                payload.insert(item.path.clone(), FileProjection { data: bytes.clone(), mode: mode(item.mode) });
            }
        }
    }
    Ok(payload)
}

/// The files of a downwardAPI volume (or projection).
pub fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    facts: &PodFacts,
    allocatable: &NodeAllocatable,
) -> Result<Payload, PayloadError> {
    let empty = Container::default();
    let mut payload = Payload::new();
    for item in items {
        let downward = |source| PayloadError::Downward { path: item.path.clone(), source };
        let text = if let Some(field) = &item.field_ref {
            field_value(pod, &field.field_path, facts).map_err(downward)?
        } else if let Some(resource) = &item.resource_field_ref {
            let container = container_named(pod, resource.container_name.as_deref(), &empty).map_err(downward)?;
            resource_value(container, &resource.resource, resource.divisor.as_ref(), allocatable).map_err(downward)?
        } else {
            return Err(PayloadError::EmptyDownwardItem(item.path.clone()));
        };
        let mode = u32::try_from(item.mode.unwrap_or(default_mode)).unwrap_or(0o644);
        payload.insert(item.path.clone(), FileProjection { data: text.into_bytes(), mode });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectFieldSelector;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// "b" is binaryData: volumes show it like any other key.
    fn data() -> ObjectData {
        ObjectData {
            data: [("a".to_string(), b"1".to_vec())].into_iter().collect(),
            binary_data: [("b".to_string(), b"2".to_vec())].into_iter().collect(),
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath { key: key.into(), path: path.into(), mode }
    }

    fn source<'a>(kind: ObjectKind, items: Option<&'a [KeyToPath]>, optional: bool) -> KeySource<'a> {
        KeySource { kind, name: "obj", items, optional, default_mode: 0o440 }
    }

    #[test]
    fn all_keys_with_default_mode() {
        let payload = key_payload(&source(ObjectKind::ConfigMap, None, false), Some(&data())).unwrap();
        assert_eq!(payload.len(), 2);
        assert_eq!(payload["a"], FileProjection { data: b"1".to_vec(), mode: 0o440 });
    }

    #[test]
    fn items_choose_paths_and_modes() {
        let items = [item("b", "dir/bee", Some(0o600)), item("a", "ay", None)];
        let payload = key_payload(&source(ObjectKind::Secret, Some(&items), false), Some(&data())).unwrap();
        assert_eq!(payload.keys().collect::<Vec<_>>(), ["ay", "dir/bee"]);
        assert_eq!(payload["dir/bee"].mode, 0o600);
        assert_eq!(payload["ay"].mode, 0o440);
    }

    #[test]
    fn missing_objects_and_keys() {
        let items = [item("zzz", "z", None)];
        let error = key_payload(&source(ObjectKind::ConfigMap, Some(&items), false), Some(&data())).unwrap_err();
        assert_eq!(error.to_string(), "configmap references non-existent config key: zzz");
        let error = key_payload(&source(ObjectKind::Secret, Some(&items), false), Some(&data())).unwrap_err();
        assert_eq!(error.to_string(), "references non-existent secret key: zzz");
        assert!(key_payload(&source(ObjectKind::Secret, Some(&items), true), Some(&data())).unwrap().is_empty());
        let error = key_payload(&source(ObjectKind::Secret, None, false), None).unwrap_err();
        assert_eq!(error.to_string(), "secret \"obj\" not found");
        assert!(key_payload(&source(ObjectKind::ConfigMap, None, true), None).unwrap().is_empty());
    }

    #[test]
    fn downward_files() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some([("k".to_string(), "v".to_string())].into_iter().collect()),
                ..Default::default()
            },
            ..Default::default()
        };
        let field = |path: &str| ObjectFieldSelector { field_path: path.into(), api_version: None };
        let items = vec![
            DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(field("metadata.labels")),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "name".into(),
                field_ref: Some(field("metadata.name")),
                mode: Some(0o400),
                ..Default::default()
            },
        ];
        let node = NodeAllocatable { cpu_millis: 1000, memory_bytes: 1, ephemeral_storage_bytes: 1 };
        let payload = downward_payload(&pod, &items, DEFAULT_MODE, &PodFacts::default(), &node).unwrap();
        assert_eq!(payload["labels"].data, b"k=\"v\"");
        assert_eq!(payload["labels"].mode, 0o644);
        assert_eq!(payload["name"], FileProjection { data: b"p".to_vec(), mode: 0o400 });
    }
}
