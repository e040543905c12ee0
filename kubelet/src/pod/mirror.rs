//! Mirror pods, as kubelet keeps them: for each static pod (from the manifest directory) a
//! copy on the API server, annotated `kubernetes.io/config.mirror: <hash>` and owned by the
//! Node, so that the cluster sees the pod and its status. A mirror pod that is being deleted
//! or no longer matches its static pod is deleted and created again; one whose static pod is
//! gone is deleted. Deleting a mirror pod never stops the static pod.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::runtime_port::error_chain;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// How long a failed create or delete waits before the next try.
const RETRY: Duration = Duration::from_secs(5);

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The API server's copy of a static pod.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    annotation(pod, MIRROR_ANNOTATION).is_some()
}

/// A pod of the manifest directory (never one read from the API server).
pub fn is_static_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE_ANNOTATION) == Some("file") && !is_mirror_pod(pod)
}

/// The static pods, and the mirror pods the API server has for this node.
#[derive(Clone, Debug, Default)]
pub struct MirrorInput {
    pub static_pods: Vec<Pod>,
    pub mirror_pods: Vec<Pod>,
}

type Key = (String, String);

fn key(pod: &Pod) -> Key {
    (pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()), pod.metadata.name.clone().unwrap_or_default())
}

impl MirrorInput {
    /// The uid of the current mirror pod of `static_pod`: same name, its hash, not being
    /// deleted. Its status goes there.
    pub fn mirror_uid_of(&self, static_pod: &Pod) -> Option<String> {
        let hash = annotation(static_pod, CONFIG_HASH_ANNOTATION)?;
        self.mirror_pods
            .iter()
            .find(|m| key(m) == key(static_pod) && is_current_mirror(m, hash))
            .and_then(|m| m.metadata.uid.clone())
    }
}

fn is_current_mirror(mirror: &Pod, hash: &str) -> bool {
    annotation(mirror, MIRROR_ANNOTATION) == Some(hash) && mirror.metadata.deletion_timestamp.is_none()
}

/// One step toward the mirror pods matching the static pods.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorAction {
    /// Create the mirror pod of this static pod.
    Create(Box<Pod>),
    /// Delete this mirror pod (grace period 0, uid precondition).
    Delete { namespace: String, name: String, uid: String },
}

/// What to do, in order: stale and orphaned mirror pods deleted, missing ones created.
pub fn plan(input: &MirrorInput) -> Vec<MirrorAction> {
    let mirrors: BTreeMap<Key, &Pod> = input.mirror_pods.iter().map(|m| (key(m), m)).collect();
    let statics: BTreeMap<Key, &Pod> = input.static_pods.iter().map(|s| (key(s), s)).collect();
    let delete = |m: &Pod| {
        let (namespace, name) = key(m);
        MirrorAction::Delete { namespace, name, uid: m.metadata.uid.clone().unwrap_or_default() }
    };
    let mut actions = Vec::new();
    for (k, mirror) in &mirrors {
        let current = statics
            .get(k)
            .and_then(|s| annotation(s, CONFIG_HASH_ANNOTATION))
            .is_some_and(|hash| is_current_mirror(mirror, hash));
        if !current {
            actions.push(delete(mirror));
        }
    }
    for (k, static_pod) in &statics {
        let hash = annotation(static_pod, CONFIG_HASH_ANNOTATION).unwrap_or_default();
        if !mirrors.get(k).is_some_and(|m| is_current_mirror(m, hash)) {
            actions.push(MirrorAction::Create(Box::new((*static_pod).clone())));
        }
    }
    actions
}

/// The mirror pod of `static_pod`: its copy with the mirror annotation and the Node as its
/// controlling owner (NodeRestriction admits nothing else from a node).
pub fn mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let hash = annotation(static_pod, CONFIG_HASH_ANNOTATION).unwrap_or_default().to_string();
    let mut annotations = static_pod.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(MIRROR_ANNOTATION.to_string(), hash);
    Pod {
        metadata: ObjectMeta {
            name: static_pod.metadata.name.clone(),
            namespace: static_pod.metadata.namespace.clone(),
            labels: static_pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node_name.into(),
                uid: node_uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: static_pod.spec.clone(),
        status: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("get node {node} (the owner of mirror pods)")]
    Node {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("create mirror pod {namespace}/{name}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("delete mirror pod {namespace}/{name}")]
    Delete {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Keep the mirror pods matching `input` until shutdown; failures are logged and retried.
pub async fn run_mirror_pods(
    client: kube::Client,
    node_name: String,
    mut input: watch::Receiver<Option<MirrorInput>>,
    shutdown: CancellationToken,
) {
    let mut mirrors = MirrorClient { client, node_name, node_uid: None };
    loop {
        let current = input.borrow_and_update().clone();
        let mut failed = false;
        for action in current.as_ref().map(plan).unwrap_or_default() {
            if let Err(error) = mirrors.execute(action).await {
                tracing::warn!("{}", error_chain(&error));
                failed = true;
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = input.changed() => if changed.is_err() { return },
            _ = retry => {}
        }
    }
}

struct MirrorClient {
    client: kube::Client,
    node_name: String,
    node_uid: Option<String>,
}

impl MirrorClient {
    async fn execute(&mut self, action: MirrorAction) -> Result<(), MirrorError> {
        match action {
            MirrorAction::Create(static_pod) => self.create(&static_pod).await,
            MirrorAction::Delete { namespace, name, uid } => self.delete(namespace, name, uid).await,
        }
    }

    async fn node_uid(&mut self) -> Result<String, MirrorError> {
        if let Some(uid) = &self.node_uid {
            return Ok(uid.clone());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get(&self.node_name)
            .await
            .map_err(|source| MirrorError::Node { node: self.node_name.clone(), source })?;
        let uid = node.metadata.uid.unwrap_or_default();
        self.node_uid = Some(uid.clone());
        Ok(uid)
    }

    async fn create(&mut self, static_pod: &Pod) -> Result<(), MirrorError> {
        let (namespace, name) = key(static_pod);
        let node_uid = self.node_uid().await?;
        let mirror = mirror_pod(static_pod, &self.node_name, &node_uid);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "mirror pod created");
                Ok(())
            }
            Err(source) => {
                if matches!(&source, kube::Error::Api(e) if e.code == 409) {
                    // Our own earlier create, not seen by the watch yet, or a pod of that name
                    // that is not ours: the next reading of the watch tells.
                    tracing::debug!(pod = %format!("{namespace}/{name}"), "mirror pod already exists");
                    return Ok(());
                }
                // The Node's uid may be stale after the Node was recreated.
                self.node_uid = None;
                Err(MirrorError::Create { namespace, name, source })
            }
        }
    }

    async fn delete(&self, namespace: String, name: String, uid: String) -> Result<(), MirrorError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "mirror pod deleted");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(MirrorError::Delete { namespace, name, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn static_pod(name: &str, hash: &str) -> Pod {
        let annotations = [(CONFIG_HASH_ANNOTATION, hash), (CONFIG_SOURCE_ANNOTATION, "file")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("kube-system".into()),
                uid: Some(hash.into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn mirror(name: &str, hash: &str, uid: &str) -> Pod {
        let mut pod = mirror_pod(&static_pod(name, hash), "node-1", "node-uid");
        pod.metadata.uid = Some(uid.into());
        pod
    }

    fn delete(name: &str, uid: &str) -> MirrorAction {
        MirrorAction::Delete { namespace: "kube-system".into(), name: name.into(), uid: uid.into() }
    }

    #[test]
    fn a_mirror_pod_is_the_static_pod_owned_by_the_node() {
        let pod = mirror_pod(&static_pod("etcd-node-1", "h1"), "node-1", "node-uid");
        assert!(is_mirror_pod(&pod) && !is_static_pod(&pod));
        assert!(is_static_pod(&static_pod("etcd-node-1", "h1")));
        assert_eq!(annotation(&pod, MIRROR_ANNOTATION), Some("h1"));
        assert_eq!(pod.metadata.uid, None, "the API server gives the mirror its own uid");
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Node", "node-1", "node-uid"));
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn missing_mirrors_are_created_and_current_ones_kept() {
        let input = MirrorInput {
            static_pods: vec![static_pod("a", "h1"), static_pod("b", "h2")],
            mirror_pods: vec![mirror("a", "h1", "m-a")],
        };
        assert_eq!(plan(&input), [MirrorAction::Create(Box::new(static_pod("b", "h2")))]);
        assert_eq!(input.mirror_uid_of(&static_pod("a", "h1")).as_deref(), Some("m-a"));
        assert_eq!(input.mirror_uid_of(&static_pod("b", "h2")), None);
    }

    #[test]
    fn stale_deleting_and_orphaned_mirrors_are_deleted() {
        let mut deleting = mirror("c", "h3", "m-c");
        deleting.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        let input = MirrorInput {
            static_pods: vec![static_pod("a", "h1-new"), static_pod("c", "h3")],
            mirror_pods: vec![mirror("a", "h1", "m-a"), mirror("gone", "h9", "m-gone"), deleting],
        };
        assert_eq!(
            plan(&input),
            [
                delete("a", "m-a"),
                delete("c", "m-c"),
                delete("gone", "m-gone"),
                MirrorAction::Create(Box::new(static_pod("a", "h1-new"))),
                MirrorAction::Create(Box::new(static_pod("c", "h3"))),
            ]
        );
        assert_eq!(input.mirror_uid_of(&static_pod("c", "h3")), None, "a mirror being deleted takes no status");
    }
}
