//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes), read with a GET in the
//! pod's namespace as kubelet's configmap and secret managers do. The Node authorizer lets a
//! node read exactly the objects its pods reference. Errors are worded as kubelet words them
//! (`configmap "x" not found`), since they reach the pod's status and events.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use super::service_account_token::{ApiTokens, IssuedToken, TokenError, TokenWanted};

/// The two kinds of object a pod can take data from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
}

impl ObjectKind {
    /// "ConfigMap" or "Secret", as kubelet's key errors and events name the kind.
    pub fn title(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Secret => "Secret",
        }
    }
}

impl fmt::Display for ObjectKind {
    /// "configmap" or "secret", as kubelet's not-found errors name the resource.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
        })
    }
}

/// An object's keys and their bytes. A ConfigMap's `binaryData` is kept apart: volumes show
/// it, env does not (kubelet reads only `data` for envFrom and configMapKeyRef).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectData {
    /// A ConfigMap's `data`, a Secret's `data` and `stringData`.
    pub data: BTreeMap<String, Vec<u8>>,
    /// A ConfigMap's `binaryData`.
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

impl ObjectData {
    /// Every key a volume shows, with its bytes.
    pub fn volume_entries(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.data.iter().chain(self.binary_data.iter())
    }

    /// One key as a volume sees it.
    pub fn volume_value(&self, key: &str) -> Option<&Vec<u8>> {
        self.data.get(key).or_else(|| self.binary_data.get(key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: ObjectKind, name: String },
    #[error("get {kind} {namespace}/{name}")]
    Api {
        kind: ObjectKind,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot read {kind} {namespace}/{name}: static pods may not refer to API objects")]
    NoApiServer { kind: ObjectKind, namespace: String, name: String },
}

#[async_trait::async_trait]
pub trait PodObjects: Send + Sync {
    /// The object's data, or None when it does not exist.
    async fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Result<Option<ObjectData>, ObjectError>;

    /// A token of a service account for a projected volume (kubelet's token manager).
    async fn service_account_token(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError>;

    /// The pod is gone from the node: drop what was kept for it (its tokens).
    fn forget_pod(&self, _pod_uid: &str) {}

    /// The object's data; a missing object is [`ObjectError::NotFound`].
    async fn require(&self, kind: ObjectKind, namespace: &str, name: &str) -> Result<ObjectData, ObjectError> {
        self.get(kind, namespace, name).await?.ok_or_else(|| ObjectError::NotFound { kind, name: name.to_string() })
    }
}

/// Objects and tokens from the API server.
pub struct ApiObjects {
    client: kube::Client,
    tokens: ApiTokens,
}

impl ApiObjects {
    pub fn new(client: kube::Client) -> ApiObjects {
        ApiObjects { tokens: ApiTokens::new(client.clone()), client }
    }
}

#[async_trait::async_trait]
impl PodObjects for ApiObjects {
    async fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Result<Option<ObjectData>, ObjectError> {
        let fail = |source| ObjectError::Api {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        };
        match kind {
            ObjectKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                Ok(api.get_opt(name).await.map_err(fail)?.map(config_map_data))
            }
            ObjectKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                Ok(api.get_opt(name).await.map_err(fail)?.map(secret_data))
            }
        }
    }

    async fn service_account_token(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError> {
        self.tokens.token(wanted).await
    }

    fn forget_pod(&self, pod_uid: &str) {
        self.tokens.forget_pod(pod_uid);
    }
}

/// No API server (standalone mode): every reference fails, as static pods may not have any.
pub struct NoObjects;

#[async_trait::async_trait]
impl PodObjects for NoObjects {
    async fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Result<Option<ObjectData>, ObjectError> {
        Err(ObjectError::NoApiServer { kind, namespace: namespace.to_string(), name: name.to_string() })
    }

    async fn service_account_token(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError> {
        Err(TokenError::NoApiServer { namespace: wanted.namespace.clone(), name: wanted.service_account.clone() })
    }
}

pub fn config_map_data(config_map: ConfigMap) -> ObjectData {
    ObjectData {
        data: config_map.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        binary_data: config_map.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
    }
}

pub fn secret_data(secret: Secret) -> ObjectData {
    let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0));
    // stringData is write-only in the API; a manifest may still carry it.
    let strings = secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes()));
    ObjectData { data: data.chain(strings).collect(), binary_data: BTreeMap::new() }
}

/// In-memory objects for tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryObjects {
    pub objects: std::sync::Mutex<BTreeMap<(ObjectKind, String, String), ObjectData>>,
    /// The pods [`PodObjects::forget_pod`] was called for.
    pub forgotten: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl MemoryObjects {
    pub fn insert(&self, kind: ObjectKind, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let data = data.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        self.insert_data(kind, namespace, name, ObjectData { data, binary_data: BTreeMap::new() });
    }

    pub fn insert_data(&self, kind: ObjectKind, namespace: &str, name: &str, data: ObjectData) {
        self.objects.lock().unwrap().insert((kind, namespace.to_string(), name.to_string()), data);
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl PodObjects for MemoryObjects {
    async fn get(&self, kind: ObjectKind, namespace: &str, name: &str) -> Result<Option<ObjectData>, ObjectError> {
        Ok(self.objects.lock().unwrap().get(&(kind, namespace.to_string(), name.to_string())).cloned())
    }

    async fn service_account_token(&self, wanted: &TokenWanted) -> Result<IssuedToken, TokenError> {
        Ok(IssuedToken {
            token: format!("token-of-{}-for-{}", wanted.service_account, wanted.pod_name),
            expires: chrono::Utc::now() + chrono::Duration::seconds(wanted.expiration_seconds),
            lifetime_seconds: wanted.expiration_seconds,
        })
    }

    fn forget_pod(&self, pod_uid: &str) {
        self.forgotten.lock().unwrap().push(pod_uid.to_string());
    }
}
