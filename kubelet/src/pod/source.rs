//! Where pods come from: the API server (watch of this node's pods) or a directory of static
//! manifests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manager::SourceEvent;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("read manifest directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read manifest {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse manifest {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("manifest {path}: pod has no metadata.name")]
    NoName { path: PathBuf },
}

/// Watch the pods bound to `node_name` and send them to the manager until shutdown. Watch
/// errors are retried with the watcher's default backoff.
pub async fn watch_api_pods(
    client: kube::Client,
    node_name: &str,
    events: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) {
    use kube::runtime::WatchStreamExt;
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut initial: Vec<Pod> = Vec::new();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        let event = match next {
            None => return,
            Some(Err(error)) => {
                tracing::warn!("pod watch: {error}");
                continue;
            }
            Some(Ok(event)) => event,
        };
        let out = match event {
            Event::Init => {
                initial.clear();
                None
            }
            Event::InitApply(pod) => {
                initial.push(from_api(pod));
                None
            }
            Event::InitDone => Some(SourceEvent::Snapshot(std::mem::take(&mut initial))),
            Event::Apply(pod) => Some(SourceEvent::Applied(from_api(pod))),
            Event::Delete(pod) => Some(SourceEvent::Deleted(from_api(pod))),
        };
        if let Some(out) = out {
            if events.send(out).await.is_err() {
                return;
            }
        }
    }
}

/// kubelet stamps every pod with its source: an API pod can never pass for a static one
/// (whose status goes to a mirror pod and whose deletion is not finished through the API).
fn from_api(mut pod: Pod) -> Pod {
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(super::mirror::CONFIG_SOURCE_ANNOTATION.to_string(), "api".to_string());
    pod
}

/// All Pod documents of the `*.yaml`/`*.yml`/`*.json` files in `dir`, made static pods of
/// `node_name`. A broken file is reported and skipped; the others still count.
pub fn load_static_pods(dir: &Path, node_name: &str) -> Result<(Vec<Pod>, Vec<SourceError>), SourceError> {
    let paths = manifest_files(dir)?;
    let mut pods = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match pods_in_file(&path, node_name) {
            Ok(found) => pods.extend(found),
            Err(error) => errors.push(error),
        }
    }
    Ok((pods, errors))
}

/// The `*.yaml`/`*.yml`/`*.json` files of a manifest directory (not recursive), in name order.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir { path: dir.to_path_buf(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    paths.sort();
    Ok(paths)
}

fn pods_in_file(path: &Path, node_name: &str) -> Result<Vec<Pod>, SourceError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SourceError::ReadFile { path: path.to_path_buf(), source })?;
    let parse = |source| SourceError::Parse { path: path.to_path_buf(), source };
    let mut pods = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document).map_err(parse)?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str());
        if kind != Some("Pod") {
            continue;
        }
        let raw = serde_yaml::to_string(&value).map_err(parse)?;
        let pod: Pod = serde_yaml::from_value(value).map_err(parse)?;
        pods.push(make_static(pod, &raw, path, node_name)?);
    }
    Ok(pods)
}

/// kubelet's treatment of file pods: a uid hashed from the content, the node and the file,
/// the name suffixed with the node name, namespace "default" when unset, bound to the node.
fn make_static(mut pod: Pod, raw: &str, path: &Path, node_name: &str) -> Result<Pod, SourceError> {
    let name = pod.metadata.name.clone().ok_or_else(|| SourceError::NoName { path: path.to_path_buf() })?;
    let mut hasher = Sha256::new();
    hasher.update(raw.as_bytes());
    hasher.update(format!("host:{node_name}").as_bytes());
    hasher.update(format!("file:{}", path.display()).as_bytes());
    let hash = hex::encode(&hasher.finalize()[..16]);
    pod.metadata.uid = Some(hash.clone());
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".to_string());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert("kubernetes.io/config.hash".to_string(), hash);
    annotations.insert("kubernetes.io/config.source".to_string(), "file".to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
    }
    Ok(pod)
}

/// Load `dir` now and every `rescan` after, sending a snapshot whenever the set changed.
/// An unreadable directory ends the watch with its error, unless `unreadable_is_empty` (the
/// agent's `--pod-manifest-path`, which, as kubelet's, may appear later): then a missing
/// directory counts as empty, and any other read error keeps the last set (empty before the
/// first read); either is reported once.
pub async fn watch_static_pods(
    dir: PathBuf,
    node_name: String,
    rescan: Duration,
    unreadable_is_empty: bool,
    events: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    let mut last_uids: Option<Vec<String>> = None;
    let mut reported_unreadable = false;
    loop {
        let (pods, errors) = match load_static_pods(&dir, &node_name) {
            Ok(loaded) => {
                reported_unreadable = false;
                loaded
            }
            // As kubelet: a directory that does not exist (yet) holds no pods; any other error
            // keeps the last set, rather than stopping every static pod.
            Err(SourceError::ReadDir { source, .. })
                if unreadable_is_empty && last_uids.is_some() && source.kind() != std::io::ErrorKind::NotFound =>
            {
                if !reported_unreadable {
                    tracing::warn!("static pods: reading {}: {source}; keeping the last set", dir.display());
                    reported_unreadable = true;
                }
                if stopped_while_waiting(&shutdown, rescan).await {
                    return Ok(());
                }
                continue;
            }
            Err(error) if unreadable_is_empty => {
                if !reported_unreadable {
                    tracing::warn!("static pods: {}", super::runtime_port::error_chain(&error));
                    reported_unreadable = true;
                }
                (Vec::new(), Vec::new())
            }
            Err(error) => return Err(error),
        };
        let uids: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        if last_uids.as_ref() != Some(&uids) {
            for error in &errors {
                tracing::error!("{}", super::runtime_port::error_chain(error));
            }
            last_uids = Some(uids);
            if events.send(SourceEvent::Snapshot(pods)).await.is_err() {
                return Ok(());
            }
        }
        if stopped_while_waiting(&shutdown, rescan).await {
            return Ok(());
        }
    }
}

/// Wait for the next rescan; true when shutdown came first.
async fn stopped_while_waiting(shutdown: &CancellationToken, rescan: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(rescan) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_manifests_become_node_pods() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  namespace: data\nspec:\n  containers:\n  - name: db\n    image: busybox\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("broken.yaml"), "kind: Pod\nmetadata: [oops\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
        let (pods, errors) = load_static_pods(dir.path(), "node-1").expect("load");
        let names: Vec<_> = pods
            .iter()
            .map(|p| (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [("default".to_string(), "web-node-1".to_string()), ("data".to_string(), "db-node-1".to_string())]
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("broken.yaml"), "{}", errors[0]);
        let uid = pods[0].metadata.uid.clone().expect("uid");
        assert_eq!(uid.len(), 32);
        let (again, _) = load_static_pods(dir.path(), "node-1").expect("load");
        assert_eq!(again[0].metadata.uid, Some(uid), "uid is stable");
        assert_eq!(pods[0].spec.as_ref().and_then(|s| s.node_name.clone()), Some("node-1".to_string()));
    }
}
