//! A pod's image pull secrets (`spec.imagePullSecrets`), read as kubelet reads them: each named
//! Secret of the pod's namespace, of type `kubernetes.io/dockerconfigjson` (its
//! `.dockerconfigjson`) or the legacy `kubernetes.io/dockercfg` (its `.dockercfg`, the `auths`
//! map alone). A secret that is missing or unreadable is skipped with a warning, and the pull is
//! tried without it, as kubelet does.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use nodelet_runtime::image::DockerConfig;

/// The credentials of a pod's pull secrets, and the problems met reading them.
#[derive(Debug, Default)]
pub struct PodCredentials {
    pub configs: Vec<DockerConfig>,
    /// One line per secret that could not be used: "name: why".
    pub problems: Vec<String>,
}

#[async_trait::async_trait]
pub trait PullSecrets: Send + Sync {
    async fn for_pod(&self, pod: &Pod) -> PodCredentials;
}

/// Secrets from the API server (a node may read those its pods reference).
pub struct ApiPullSecrets {
    client: kube::Client,
}

impl ApiPullSecrets {
    pub fn new(client: kube::Client) -> ApiPullSecrets {
        ApiPullSecrets { client }
    }
}

#[async_trait::async_trait]
impl PullSecrets for ApiPullSecrets {
    async fn for_pod(&self, pod: &Pod) -> PodCredentials {
        let names = secret_names(pod);
        let mut credentials = PodCredentials::default();
        if names.is_empty() {
            return credentials;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for name in names {
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => match docker_config(&secret) {
                    Ok(config) => credentials.configs.push(config),
                    Err(why) => credentials.problems.push(format!("{name}: {why}")),
                },
                Ok(None) => credentials.problems.push(format!("{name}: not found")),
                Err(error) => credentials.problems.push(format!("{name}: {error}")),
            }
        }
        credentials
    }
}

/// No API server (standalone mode): a pod that names pull secrets gets none, said once per pull.
pub struct NoPullSecrets;

#[async_trait::async_trait]
impl PullSecrets for NoPullSecrets {
    async fn for_pod(&self, pod: &Pod) -> PodCredentials {
        let problems =
            secret_names(pod).into_iter().map(|name| format!("{name}: no API server to read it from")).collect();
        PodCredentials { configs: Vec::new(), problems }
    }
}

fn secret_names(pod: &Pod) -> Vec<String> {
    let refs = pod.spec.as_ref().and_then(|spec| spec.image_pull_secrets.as_ref());
    refs.into_iter().flatten().map(|r| r.name.clone()).filter(|name| !name.is_empty()).collect()
}

/// The Docker config a pull secret holds.
pub fn docker_config(secret: &Secret) -> Result<DockerConfig, String> {
    let data = secret.data.as_ref();
    let field = |key: &str| data.and_then(|d| d.get(key)).map(|bytes| bytes.0.as_slice());
    match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => {
            let bytes = field(".dockerconfigjson").ok_or("no .dockerconfigjson key")?;
            DockerConfig::parse(bytes)
        }
        Some("kubernetes.io/dockercfg") => {
            let bytes = field(".dockercfg").ok_or("no .dockercfg key")?;
            // The legacy format is the `auths` map alone.
            let auths: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| format!(".dockercfg is not JSON: {e}"))?;
            DockerConfig::parse(&serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap_or_default())
        }
        other => Err(format!(
            "type {} is not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg",
            other.unwrap_or("Opaque")
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, key: &str, value: &str) -> Secret {
        Secret {
            type_: Some(type_.to_string()),
            data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Secret::default()
        }
    }

    #[test]
    fn reads_both_secret_formats_and_names_the_wrong_ones() {
        let json = r#"{"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}"#;
        let config = docker_config(&secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", json)).unwrap();
        assert_eq!(config.matching("127.0.0.1:5000", "web").len(), 1);
        let legacy = r#"{"127.0.0.1:5000": {"auth": "dTpw"}}"#;
        let config = docker_config(&secret("kubernetes.io/dockercfg", ".dockercfg", legacy)).unwrap();
        assert_eq!(config.matching("127.0.0.1:5000", "web")[0].username, "u");
        let opaque = docker_config(&secret("Opaque", "x", "y")).unwrap_err();
        assert!(opaque.contains("type Opaque"), "{opaque}");
        let missing = docker_config(&secret("kubernetes.io/dockerconfigjson", "other", "{}")).unwrap_err();
        assert!(missing.contains(".dockerconfigjson"), "{missing}");
    }
}
