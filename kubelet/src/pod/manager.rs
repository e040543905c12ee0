//! `PodManager`: one worker task per pod uid, fed by a pod source, adoption of what the
//! runtime still holds after an agent restart, and release of orphans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::admission::{self, Rejection};
use super::ids::ContainerOwner;
use super::runtime_port::{error_chain, ContainerInfo, SandboxInfo};
use super::teardown::release_pod;
use super::worker::{run_worker, PodUpdate, WorkerContext, WorkerExit};
use crate::events::{pod_reference, EventType};

/// What a pod source says.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// The complete current set of pods (initial list, relist, rescan of a manifest dir).
    Snapshot(Vec<Pod>),
    Applied(Pod),
    Deleted(Pod),
}

struct WorkerHandle {
    updates: watch::Sender<PodUpdate>,
    task: JoinHandle<WorkerExit>,
}

pub struct PodManager {
    ctx: WorkerContext,
    workers: HashMap<String, WorkerHandle>,
    /// Pods refused at admission (failed for good): never started, deleted when asked.
    rejected: BTreeSet<String>,
    /// Sandboxes found at adoption, handed to the worker of their pod.
    adopted_sandboxes: HashMap<String, SandboxInfo>,
    adopted: bool,
    shutdown: CancellationToken,
}

/// Succeeded or Failed: it holds no resources any more.
fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn uid_of(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone().filter(|u| !u.is_empty())
}

impl PodManager {
    pub fn new(ctx: WorkerContext, shutdown: CancellationToken) -> PodManager {
        PodManager {
            ctx,
            workers: HashMap::new(),
            rejected: BTreeSet::new(),
            adopted_sandboxes: HashMap::new(),
            adopted: false,
            shutdown,
        }
    }

    /// Consume source events until the channel closes or shutdown; workers are left to
    /// finish on shutdown (containers keep running).
    pub async fn run(mut self, mut events: mpsc::Receiver<SourceEvent>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
            }
        }
        for (_, handle) in self.workers.drain() {
            let _ = handle.task.await;
        }
    }

    pub async fn handle(&mut self, event: SourceEvent) {
        self.reap_finished();
        match event {
            SourceEvent::Snapshot(mut pods) => {
                if !self.adopted {
                    self.adopt(&pods).await;
                }
                let present: BTreeSet<String> = pods.iter().filter_map(uid_of).collect();
                self.rejected.retain(|uid| present.contains(uid));
                // Admitted in creation order, as kubelet does.
                pods.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
                for pod in pods {
                    self.upsert(pod, false).await;
                }
                let vanished: Vec<String> =
                    self.workers.keys().filter(|uid| !present.contains(*uid)).cloned().collect();
                for uid in vanished {
                    self.mark_gone(&uid);
                }
            }
            SourceEvent::Applied(pod) => self.upsert(pod, false).await,
            SourceEvent::Deleted(pod) => {
                if let Some(uid) = uid_of(&pod) {
                    self.rejected.remove(&uid);
                    self.mark_gone(&uid);
                }
            }
        }
    }

    /// Number of pods with a live worker.
    pub fn worker_count(&self) -> usize {
        self.workers.values().filter(|w| !w.task.is_finished()).count()
    }

    async fn upsert(&mut self, pod: Pod, gone: bool) {
        let Some(uid) = uid_of(&pod) else {
            tracing::warn!(name = ?pod.metadata.name, "pod without uid ignored");
            return;
        };
        if self.rejected.contains(&uid) {
            if pod.metadata.deletion_timestamp.is_some() {
                self.finish_rejected_deletion(&pod).await;
            }
            return;
        }
        let update = PodUpdate { pod: Arc::new(pod), gone };
        if let Some(handle) = self.workers.get(&uid) {
            // A released pod keeps its finished handle until it leaves the source, so that it
            // is not started again.
            if !handle.task.is_finished() {
                handle.updates.send_replace(update);
            }
            return;
        }
        if gone {
            return;
        }
        let sandbox = self.adopted_sandboxes.remove(&uid);
        // A pod that already ran here before a restart was admitted then.
        if sandbox.is_none() && !is_terminal(&update.pod) {
            if let Err(rejection) = self.admit(&update.pod) {
                self.reject(&update.pod, rejection).await;
                self.rejected.insert(uid);
                return;
            }
        }
        let (tx, rx) = watch::channel(update);
        let task = tokio::spawn(run_worker(self.ctx.clone(), sandbox, rx, self.shutdown.child_token()));
        self.workers.insert(uid, WorkerHandle { updates: tx, task });
    }

    /// kubelet's admission of a new pod beside the active ones.
    fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        let active: Vec<Arc<Pod>> = self
            .workers
            .values()
            .filter(|w| !w.task.is_finished())
            .map(|w| w.updates.borrow().clone())
            .filter(|update| !update.gone && !is_terminal(&update.pod))
            .map(|update| update.pod)
            .collect();
        let active: Vec<&Pod> = active.iter().map(Arc::as_ref).collect();
        admission::admit(pod, &active, self.ctx.cfg.allocatable.as_ref())
    }

    /// The pod fails for good, as kubelet's rejectPod: a Warning event and a Failed status.
    async fn reject(&self, pod: &Pod, rejection: Rejection) {
        tracing::warn!(pod = ?pod.metadata.name, reason = %rejection.reason, "{}", rejection.message);
        let object = pod_reference(pod, None);
        self.ctx.events.record(object, EventType::Warning, &rejection.reason, rejection.message.clone());
        let status = PodStatus {
            phase: Some("Failed".to_string()),
            reason: Some(rejection.reason),
            message: Some(format!("Pod was rejected: {}", rejection.message)),
            qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            ..PodStatus::default()
        };
        if let Err(error) = self.ctx.sink.report(pod, &status).await {
            tracing::warn!(pod = ?pod.metadata.name, "{}", error_chain(&error));
        }
    }

    /// A rejected pod ran nothing: its deletion is finished at once.
    async fn finish_rejected_deletion(&mut self, pod: &Pod) {
        match self.ctx.sink.finish_deletion(pod).await {
            Ok(()) => {
                if let Some(uid) = uid_of(pod) {
                    self.rejected.remove(&uid);
                }
            }
            Err(error) => tracing::warn!(pod = ?pod.metadata.name, "{}", error_chain(&error)),
        }
    }

    fn mark_gone(&mut self, uid: &str) {
        let Some(handle) = self.workers.get(uid) else {
            return;
        };
        if handle.task.is_finished() {
            self.workers.remove(uid);
            return;
        }
        let pod = handle.updates.borrow().pod.clone();
        handle.updates.send_replace(PodUpdate { pod, gone: true });
    }

    /// Drop handles of released workers whose pods are marked gone.
    fn reap_finished(&mut self) {
        self.workers.retain(|_, handle| !(handle.task.is_finished() && handle.updates.borrow().gone));
    }

    /// Match the runtime's containers and sandboxes to the current pods: the workers of
    /// known pods take theirs over (running ones keep running), the rest is released.
    async fn adopt(&mut self, pods: &[Pod]) {
        let known: BTreeSet<String> = pods.iter().filter_map(uid_of).collect();
        let containers = match self.ctx.runtime.list_containers().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!("adoption: list containers: {}", error_chain(&error));
                return;
            }
        };
        let sandboxes = match self.ctx.runtime.list_sandboxes().await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!("adoption: list sandboxes: {}", error_chain(&error));
                return;
            }
        };
        self.adopted = true;
        let mut orphans: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
        for info in containers {
            if let Some(owner) = ContainerOwner::from_annotations(&info.annotations) {
                if !known.contains(&owner.pod_uid) {
                    orphans.entry(owner.pod_uid).or_default().push(info);
                }
            }
        }
        for sandbox in sandboxes {
            if known.contains(&sandbox.id) {
                self.adopted_sandboxes.insert(sandbox.id.clone(), sandbox);
            } else {
                orphans.entry(sandbox.id).or_default();
            }
        }
        for (uid, containers) in orphans {
            tracing::info!(%uid, containers = containers.len(), "releasing orphaned pod");
            let (runtime, objects) = (self.ctx.runtime.as_ref(), self.ctx.objects.as_ref());
            let result = release_pod(runtime, objects, &self.ctx.cfg.root_dir, &uid, &containers).await;
            if let Err(error) = result {
                tracing::warn!(%uid, "release orphan: {}", error_chain(&error));
            }
        }
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
