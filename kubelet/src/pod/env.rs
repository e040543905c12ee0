//! A container's environment as kubelet's makeEnvironmentVariables builds it: `envFrom`
//! (ConfigMaps and Secrets, with their prefix; keys that are not valid variable names are
//! skipped and reported), then `env` in order: literal values expanded against the variables
//! defined so far, `valueFrom` (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef)
//! taken as they are. Later definitions replace earlier ones in place.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, EnvVarSource, Pod};

use super::downward::{container_named, field_value, resource_value, DownwardError, NodeAllocatable, PodFacts};
use super::expand::expand;
use super::referenced_objects::{ObjectData, ObjectError, ObjectKind, PodObjects};

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("couldn't find key {key} in {} {namespace}/{name}", kind.title())]
    MissingKey { kind: ObjectKind, namespace: String, name: String, key: String },
    #[error("env {name}")]
    Downward {
        name: String,
        #[source]
        source: DownwardError,
    },
    #[error("env {0}: valueFrom names no source")]
    EmptySource(String),
}

/// Keys of one envFrom source skipped as invalid names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKeys {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
}

impl SkippedKeys {
    /// kubelet's InvalidEnvironmentVariableNames event message.
    pub fn message(&self) -> String {
        format!(
            "Keys [{}] from the EnvFrom {} {}/{} were skipped since they are considered invalid environment variable names.",
            self.keys.join(", "),
            match self.kind {
                ObjectKind::ConfigMap => "configMap",
                ObjectKind::Secret => "secret",
            },
            self.namespace,
            self.name
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// The container's variables in definition order.
    pub vars: Vec<(String, String)>,
    pub skipped: Vec<SkippedKeys>,
}

impl ResolvedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    pub fn as_map(&self) -> HashMap<String, String> {
        self.vars.iter().cloned().collect()
    }
}

/// Everything env resolution reads besides the referenced objects.
pub struct EnvInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub facts: &'a PodFacts,
    pub allocatable: &'a NodeAllocatable,
}

pub async fn resolve_env(input: &EnvInput<'_>, objects: &dyn PodObjects) -> Result<ResolvedEnv, EnvError> {
    let namespace = input.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut fetched = Fetched { objects, namespace, cache: HashMap::new() };
    let mut env = ResolvedEnv::default();
    for source in input.container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let reference = match (&source.config_map_ref, &source.secret_ref) {
            (Some(r), _) => (ObjectKind::ConfigMap, r.name.clone(), r.optional.unwrap_or(false)),
            (None, Some(r)) => (ObjectKind::Secret, r.name.clone(), r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        let (kind, name, optional) = reference;
        let Some(data) = fetched.get(kind, &name, optional).await? else {
            continue;
        };
        let mut invalid = Vec::new();
        // binaryData is for volumes only, as in kubelet.
        for (key, value) in data.data {
            let var = format!("{prefix}{key}");
            if !is_env_var_name(&var) {
                invalid.push(key);
                continue;
            }
            env.set(var, String::from_utf8_lossy(&value).into_owned());
        }
        if !invalid.is_empty() {
            env.skipped.push(SkippedKeys { kind, namespace: namespace.to_string(), name, keys: invalid });
        }
    }
    for var in input.container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &env.as_map()),
            Some(source) => match value_from(input, &var.name, source, &mut fetched).await? {
                Some(value) => value,
                // An optional key that is missing leaves the variable out.
                None => continue,
            },
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

async fn value_from(
    input: &EnvInput<'_>,
    name: &str,
    source: &EnvVarSource,
    fetched: &mut Fetched<'_>,
) -> Result<Option<String>, EnvError> {
    let downward = |source| EnvError::Downward { name: name.to_string(), source };
    if let Some(field) = &source.field_ref {
        return field_value(input.pod, &field.field_path, input.facts).map(Some).map_err(downward);
    }
    if let Some(resource) = &source.resource_field_ref {
        let container =
            container_named(input.pod, resource.container_name.as_deref(), input.container).map_err(downward)?;
        return resource_value(container, &resource.resource, resource.divisor.as_ref(), input.allocatable)
            .map(Some)
            .map_err(downward);
    }
    let (kind, object, key, optional) = match (&source.config_map_key_ref, &source.secret_key_ref) {
        (Some(r), _) => (ObjectKind::ConfigMap, &r.name, &r.key, r.optional.unwrap_or(false)),
        (None, Some(r)) => (ObjectKind::Secret, &r.name, &r.key, r.optional.unwrap_or(false)),
        (None, None) => return Err(EnvError::EmptySource(name.to_string())),
    };
    let Some(data) = fetched.get(kind, object, optional).await? else {
        return Ok(None);
    };
    match data.data.get(key) {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            kind,
            namespace: fetched.namespace.to_string(),
            name: object.clone(),
            key: key.clone(),
        }),
    }
}

/// Each object read once per resolution.
struct Fetched<'a> {
    objects: &'a dyn PodObjects,
    namespace: &'a str,
    cache: HashMap<(ObjectKind, String), Option<ObjectData>>,
}

impl Fetched<'_> {
    /// The object's data; None when it is missing and `optional`.
    async fn get(&mut self, kind: ObjectKind, name: &str, optional: bool) -> Result<Option<ObjectData>, EnvError> {
        let key = (kind, name.to_string());
        if !self.cache.contains_key(&key) {
            let data = self.objects.get(kind, self.namespace, name).await?;
            self.cache.insert(key.clone(), data);
        }
        match self.cache.get(&key).cloned().flatten() {
            Some(data) => Ok(Some(data)),
            None if optional => Ok(None),
            None => Err(ObjectError::NotFound { kind, name: name.to_string() }.into()),
        }
    }
}

/// Kubernetes' IsEnvVarName: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let valid = |c: char, first: bool| {
        c == '-' || c == '.' || c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit())
    };
    chars.next().is_some_and(|c| valid(c, true)) && chars.all(|c| valid(c, false))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, ObjectFieldSelector, PodSpec,
        ResourceFieldSelector, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::pod::referenced_objects::MemoryObjects;

    const NODE: NodeAllocatable =
        NodeAllocatable { cpu_millis: 2000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 40 };

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                labels: Some([("app".to_string(), "shop".to_string())].into_iter().collect()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar { name: name.into(), value: None, value_from: Some(source) }
    }

    fn cm_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector { name: name.into(), key: key.into(), optional }),
            ..Default::default()
        }
    }

    async fn resolve(container: Container, objects: &MemoryObjects) -> Result<ResolvedEnv, EnvError> {
        let pod = pod();
        let facts =
            PodFacts { node_name: "n1".into(), host_ip: Some("10.0.0.1".into()), pod_ip: Some("10.1.0.9".into()) };
        resolve_env(&EnvInput { pod: &pod, container: &container, facts: &facts, allocatable: &NODE }, objects).await
    }

    fn objects() -> MemoryObjects {
        let objects = MemoryObjects::default();
        objects.insert(ObjectKind::ConfigMap, "ns", "cfg", &[("MODE", "fast"), ("1bad", "x"), ("level", "3")]);
        objects.insert(ObjectKind::Secret, "ns", "creds", &[("password", "s3cret")]);
        objects
    }

    #[tokio::test]
    async fn every_source_in_order_with_expansion() {
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource { name: "cfg".into(), optional: None }),
                    ..Default::default()
                },
                EnvFromSource {
                    prefix: Some("S_".into()),
                    secret_ref: Some(SecretEnvSource { name: "creds".into(), optional: None }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![
                from(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                        ..Default::default()
                    },
                ),
                from(
                    "APP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "CPU",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "PASS",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from("GONE", cm_key("cfg", "absent", Some(true))),
                literal("MODE", "$(MODE)-$(POD)-$(S_password)"),
                from(
                    "IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector { field_path: "status.podIP".into(), api_version: None }),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
        let env = resolve(container, &objects()).await.unwrap();
        let expected: Vec<(String, String)> = [
            ("MODE", "fast-web-s3cret"),
            ("level", "3"),
            ("S_password", "s3cret"),
            ("POD", "web"),
            ("APP", "shop"),
            ("CPU", "2"),
            ("PASS", "s3cret"),
            ("IP", "10.1.0.9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env.vars, expected);
        assert_eq!(env.skipped.len(), 1);
        assert_eq!(
            env.skipped[0].message(),
            "Keys [1bad] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names."
        );
    }

    #[tokio::test]
    async fn missing_objects_and_keys_worded_as_kubelet() {
        let with_env = |env: Vec<EnvVar>| Container { name: "app".into(), env: Some(env), ..Default::default() };
        let error = resolve(with_env(vec![from("A", cm_key("nope", "k", None))]), &objects()).await.unwrap_err();
        assert_eq!(error.to_string(), "configmap \"nope\" not found");
        let error = resolve(with_env(vec![from("A", cm_key("cfg", "k", None))]), &objects()).await.unwrap_err();
        assert_eq!(error.to_string(), "couldn't find key k in ConfigMap ns/cfg");
        let env = resolve(with_env(vec![from("A", cm_key("nope", "k", Some(true)))]), &objects()).await.unwrap();
        assert!(env.vars.is_empty());
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: "absent".into(), optional: None }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve(container, &objects()).await.unwrap_err().to_string(), "secret \"absent\" not found");
    }

    #[tokio::test]
    async fn binary_data_is_for_volumes_not_env() {
        use crate::pod::referenced_objects::ObjectData;
        let objects = MemoryObjects::default();
        let data = ObjectData {
            data: [("TEXT".to_string(), b"t".to_vec())].into_iter().collect(),
            binary_data: [("BLOB".to_string(), b"b".to_vec())].into_iter().collect(),
        };
        objects.insert_data(ObjectKind::ConfigMap, "ns", "mixed", data);
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource { name: "mixed".into(), optional: None }),
                ..Default::default()
            }]),
            env: Some(vec![from("OPT", cm_key("mixed", "BLOB", Some(true)))]),
            ..Default::default()
        };
        let env = resolve(container, &objects).await.unwrap();
        assert_eq!(env.vars, [("TEXT".to_string(), "t".to_string())]);
        let required = Container {
            name: "app".into(),
            env: Some(vec![from("B", cm_key("mixed", "BLOB", None))]),
            ..Default::default()
        };
        let error = resolve(required, &objects).await.unwrap_err();
        assert_eq!(error.to_string(), "couldn't find key BLOB in ConfigMap ns/mixed");
    }

    #[test]
    fn env_var_names() {
        assert!(is_env_var_name("PATH"));
        assert!(is_env_var_name("my.var-1"));
        assert!(is_env_var_name("_x"));
        assert!(!is_env_var_name("1x"));
        assert!(!is_env_var_name("a=b"));
        assert!(!is_env_var_name(""));
    }
}
