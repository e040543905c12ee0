//! Agent mode with a static pod directory: the API server's pods and the manifest
//! directory's pods, merged into one stream for the pod manager, as kubelet's pod config
//! merges its sources. Mirror pods (the API server's copies of static pods) are never run:
//! they go to the mirror pod reconciler instead, with the current static pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::manager::SourceEvent;
use super::mirror::{is_mirror_pod, MirrorInput};

/// Holds each source's current pods; the first snapshot goes out only once both sources have
/// given theirs, so that adoption after a restart sees every pod that should keep running.
#[derive(Default)]
pub struct SourceMerger {
    /// The API server's pods (mirror pods excluded) by uid; `None` until its first list.
    api: Option<BTreeMap<String, Pod>>,
    /// The API server's mirror pods by uid.
    mirrors: BTreeMap<String, Pod>,
    /// The static pods; `None` until the directory was read.
    files: Option<Vec<Pod>>,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl SourceMerger {
    /// An event of the API server's watch, and what the manager gets for it.
    pub fn api_event(&mut self, event: SourceEvent) -> Vec<SourceEvent> {
        match event {
            SourceEvent::Snapshot(pods) => {
                let (mirrors, pods): (Vec<Pod>, Vec<Pod>) = pods.into_iter().partition(is_mirror_pod);
                self.mirrors = mirrors.into_iter().map(|p| (uid(&p), p)).collect();
                self.api = Some(pods.into_iter().map(|p| (uid(&p), p)).collect());
                self.snapshot()
            }
            SourceEvent::Applied(pod) if is_mirror_pod(&pod) => {
                self.mirrors.insert(uid(&pod), pod);
                Vec::new()
            }
            SourceEvent::Deleted(pod) if is_mirror_pod(&pod) => {
                self.mirrors.remove(&uid(&pod));
                Vec::new()
            }
            SourceEvent::Applied(pod) => {
                if let Some(api) = self.api.as_mut() {
                    api.insert(uid(&pod), pod.clone());
                }
                self.pass(SourceEvent::Applied(pod))
            }
            SourceEvent::Deleted(pod) => {
                if let Some(api) = self.api.as_mut() {
                    api.remove(&uid(&pod));
                }
                self.pass(SourceEvent::Deleted(pod))
            }
        }
    }

    /// A change goes to the manager once it has had the first snapshot.
    fn pass(&self, event: SourceEvent) -> Vec<SourceEvent> {
        if self.api.is_some() && self.files.is_some() {
            vec![event]
        } else {
            Vec::new()
        }
    }

    /// A new reading of the manifest directory.
    pub fn files(&mut self, pods: Vec<Pod>) -> Vec<SourceEvent> {
        self.files = Some(pods);
        self.snapshot()
    }

    /// Every pod of both sources, once both have spoken.
    fn snapshot(&self) -> Vec<SourceEvent> {
        match (&self.api, &self.files) {
            (Some(api), Some(files)) => {
                vec![SourceEvent::Snapshot(api.values().cloned().chain(files.iter().cloned()).collect())]
            }
            _ => Vec::new(),
        }
    }

    /// What the mirror pod reconciler works from; `None` until both sources have spoken.
    pub fn mirror_input(&self) -> Option<MirrorInput> {
        let files = self.files.as_ref()?;
        self.api.as_ref()?;
        Some(MirrorInput { static_pods: files.clone(), mirror_pods: self.mirrors.values().cloned().collect() })
    }
}

/// Merge `api` and `files` into `out` until shutdown or until a side closes, publishing the
/// mirror pod reconciler's input on `mirrors` after every change.
pub async fn merge_sources(
    mut api: mpsc::Receiver<SourceEvent>,
    mut files: mpsc::Receiver<SourceEvent>,
    out: mpsc::Sender<SourceEvent>,
    mirrors: watch::Sender<Option<MirrorInput>>,
    shutdown: CancellationToken,
) {
    let mut merger = SourceMerger::default();
    loop {
        let merged = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = api.recv() => match event {
                Some(event) => merger.api_event(event),
                None => return,
            },
            event = files.recv() => match event {
                Some(SourceEvent::Snapshot(pods)) => merger.files(pods),
                Some(other) => {
                    tracing::warn!(?other, "unexpected event from the static pod source");
                    Vec::new()
                }
                None => return,
            },
        };
        mirrors.send_replace(merger.mirror_input());
        for event in merged {
            if out.send(event).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, mirror: bool) -> Pod {
        let mut annotations = BTreeMap::new();
        if mirror {
            annotations.insert("kubernetes.io/config.mirror".to_string(), "hash".to_string());
        }
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(uid.into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn uids(events: &[SourceEvent]) -> Vec<String> {
        match events {
            [SourceEvent::Snapshot(pods)] => pods.iter().map(uid).collect(),
            other => panic!("one snapshot expected, got {other:?}"),
        }
    }

    #[test]
    fn the_first_snapshot_waits_for_both_sources_and_leaves_mirror_pods_out() {
        let mut merger = SourceMerger::default();
        assert!(merger.files(vec![pod("static", false)]).is_empty());
        assert!(merger.mirror_input().is_none());
        let merged = merger.api_event(SourceEvent::Snapshot(vec![pod("api", false), pod("mirror", true)]));
        assert_eq!(uids(&merged), ["api", "static"]);
        let input = merger.mirror_input().expect("both sources spoke");
        assert_eq!(input.mirror_pods.len(), 1);
        assert_eq!(input.static_pods.len(), 1);
    }

    #[test]
    fn api_changes_pass_through_and_mirror_changes_do_not() {
        let mut merger = SourceMerger::default();
        merger.api_event(SourceEvent::Snapshot(Vec::new()));
        assert!(merger.api_event(SourceEvent::Applied(pod("early", false))).is_empty(), "files not read yet");
        assert_eq!(uids(&merger.files(Vec::new())), ["early"]);
        assert!(merger.api_event(SourceEvent::Applied(pod("m", true))).is_empty());
        assert_eq!(merger.mirror_input().expect("input").mirror_pods.len(), 1);
        let applied = merger.api_event(SourceEvent::Applied(pod("a", false)));
        assert!(matches!(applied.as_slice(), [SourceEvent::Applied(p)] if uid(p) == "a"));
        let deleted = merger.api_event(SourceEvent::Deleted(pod("a", false)));
        assert!(matches!(deleted.as_slice(), [SourceEvent::Deleted(p)] if uid(p) == "a"));
        assert!(merger.api_event(SourceEvent::Deleted(pod("m", true))).is_empty());
        assert!(merger.mirror_input().expect("input").mirror_pods.is_empty());
        // A new reading of the directory: everything the manager should run.
        assert_eq!(uids(&merger.files(vec![pod("s2", false)])), ["early", "s2"]);
    }
}
