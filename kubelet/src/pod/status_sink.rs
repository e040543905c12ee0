//! Where pod statuses go: the API server (status patch, final delete) or, standalone, memory
//! and the log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tokio::sync::watch;

use super::mirror::{is_static_pod, MirrorInput};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("patch status of pod {namespace}/{name}")]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("static pod {namespace}/{name} has no mirror pod yet: its status is reported once it has")]
    NoMirrorPod { namespace: String, name: String },
    #[error("delete pod {namespace}/{name}")]
    Delete {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

#[async_trait::async_trait]
pub trait StatusSink: Send + Sync {
    async fn report(&self, pod: &Pod, status: &PodStatus) -> Result<(), SinkError>;
    /// The uid of the object `report` writes to now: the pod's own, or a static pod's
    /// mirror pod's (a new mirror pod needs the status again).
    fn destination(&self, pod: &Pod) -> Option<String>;
    /// The pod was deleted through the API and everything is released: remove the object.
    async fn finish_deletion(&self, pod: &Pod) -> Result<(), SinkError>;
    /// The worker released everything of the pod and stops: what is kept about it can go.
    async fn released(&self, _pod: &Pod) {}
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Patches `pods/<name>/status` with a merge patch carrying the whole status and
/// metadata.uid (the API server refuses it if the uid no longer matches: a precondition).
/// A static pod's status goes to its mirror pod, as kubelet sends it.
pub struct ApiStatusSink {
    client: kube::Client,
    mirrors: Option<watch::Receiver<Option<MirrorInput>>>,
}

impl ApiStatusSink {
    pub fn new(client: kube::Client) -> ApiStatusSink {
        ApiStatusSink { client, mirrors: None }
    }

    /// Also static pods, whose mirror pods are found in `mirrors`.
    pub fn with_mirror_pods(client: kube::Client, mirrors: watch::Receiver<Option<MirrorInput>>) -> ApiStatusSink {
        ApiStatusSink { client, mirrors: Some(mirrors) }
    }

    /// The uid the status patch must match: the pod's own, or its mirror pod's (`None` while
    /// a static pod has no mirror pod).
    fn target_uid(&self, pod: &Pod) -> Option<String> {
        if !is_static_pod(pod) {
            return pod.metadata.uid.clone();
        }
        self.mirrors.as_ref().and_then(|m| m.borrow().as_ref().and_then(|input| input.mirror_uid_of(pod)))
    }
}

#[async_trait::async_trait]
impl StatusSink for ApiStatusSink {
    fn destination(&self, pod: &Pod) -> Option<String> {
        self.target_uid(pod)
    }

    async fn report(&self, pod: &Pod, status: &PodStatus) -> Result<(), SinkError> {
        let (namespace, name) = key(pod);
        let uid = self.target_uid(pod);
        if uid.is_none() && is_static_pod(pod) {
            return Err(SinkError::NoMirrorPod { namespace, name });
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let patch =
            Pod { metadata: ObjectMeta { uid, ..ObjectMeta::default() }, spec: None, status: Some(status.clone()) };
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| SinkError::Patch { namespace, name, source })
    }

    async fn finish_deletion(&self, pod: &Pod) -> Result<(), SinkError> {
        if is_static_pod(pod) {
            // Its manifest is gone; the mirror pod reconciler deletes the mirror.
            return Ok(());
        }
        let (namespace, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            // Already gone (or replaced by a pod of another uid): nothing left to do.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(SinkError::Delete { namespace, name, source }),
        }
    }
}

/// Standalone mode: keeps the latest status of each pod and logs every change.
#[derive(Clone, Default)]
pub struct MemoryStatusSink {
    statuses: Arc<Mutex<BTreeMap<(String, String), PodStatus>>>,
}

impl MemoryStatusSink {
    pub fn new() -> MemoryStatusSink {
        MemoryStatusSink::default()
    }

    /// (namespace, name) -> latest status.
    pub fn statuses(&self) -> BTreeMap<(String, String), PodStatus> {
        self.statuses.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One line per container: "app running", "app waiting ErrImagePull: ...", "app exited 1".
pub fn summarize(status: &PodStatus) -> String {
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let what = if state.running.is_some() {
                "running".to_string()
            } else if let Some(t) = state.terminated {
                format!("exited {}", t.exit_code)
            } else if let Some(w) = state.waiting {
                let reason = w.reason.unwrap_or_default();
                match w.message {
                    Some(m) => format!("waiting {reason}: {m}"),
                    None => format!("waiting {reason}"),
                }
            } else {
                "unknown".to_string()
            };
            format!("{} {what} (restarts {})", c.name, c.restart_count)
        })
        .collect();
    format!(
        "{} ip={} [{}]",
        status.phase.as_deref().unwrap_or("Unknown"),
        status.pod_ip.as_deref().unwrap_or("-"),
        containers.join(", ")
    )
}

#[async_trait::async_trait]
impl StatusSink for MemoryStatusSink {
    fn destination(&self, pod: &Pod) -> Option<String> {
        pod.metadata.uid.clone()
    }

    async fn report(&self, pod: &Pod, status: &PodStatus) -> Result<(), SinkError> {
        let (namespace, name) = key(pod);
        tracing::info!(pod = %format!("{namespace}/{name}"), "{}", summarize(status));
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.insert((namespace, name), status.clone());
        }
        Ok(())
    }

    async fn finish_deletion(&self, pod: &Pod) -> Result<(), SinkError> {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.remove(&key(pod));
        }
        Ok(())
    }
}
