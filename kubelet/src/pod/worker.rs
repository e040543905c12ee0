//! The per-pod worker: observe the runtime, step the pure state machine ([`super::step`]),
//! perform its actions through [`PodRuntime`], report status when it changed. One tokio task
//! per pod, fed the latest pod object through a watch channel.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{pod_reference, EventRecorder, EventType};

use super::config::PodConfig;
use super::ids::{container_id, sandbox_id};
use super::image_pull::ensure_image;
use super::layout::{container_dir, log_path, pod_dir};
use super::model::{Observed, PodMemory, PodPlan, ProbeKill, Removal, RestartPolicy, Waiting};
use super::pod_files::{is_host_network, kernel_hostname, write_pod_files};
use super::probe::{PodProber, ProbeMetrics};
use super::pull_secrets::PullSecrets;
use super::referenced_objects::PodObjects;
use super::runtime_port::{error_chain, PodRuntime, PullPolicy, RunState, SandboxInfo};
use super::status::{compute_status, StatusInput};
use super::status_sink::StatusSink;
use super::step::{backoff_delay, decide, Action, Signal, BACKOFF_INITIAL, BACKOFF_RESET_AFTER};
use super::teardown::release_pod;
use super::translate::{container_spec, TranslateInput};

/// The latest word from the source about a pod.
#[derive(Clone, Debug)]
pub struct PodUpdate {
    pub pod: Arc<Pod>,
    /// The pod left its source (API object gone, manifest removed).
    pub gone: bool,
}

#[derive(Clone)]
pub struct WorkerContext {
    pub cfg: Arc<PodConfig>,
    pub runtime: Arc<dyn PodRuntime>,
    pub sink: Arc<dyn StatusSink>,
    /// Where the pods' probes count their runs.
    pub probe_metrics: ProbeMetrics,
    /// Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed.
    pub events: EventRecorder,
    pub pull_secrets: Arc<dyn PullSecrets>,
    /// The ConfigMaps and Secrets pods take env and volumes from.
    pub objects: Arc<dyn PodObjects>,
}

/// How a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// Everything released (and the API object deleted, when it was an API deletion).
    Released,
    /// The agent is stopping; containers keep running for the next agent to adopt.
    Shutdown,
}

struct Worker {
    ctx: WorkerContext,
    memory: PodMemory,
    start_time: DateTime<Utc>,
    last_sent: Option<PodStatus>,
    /// The object `last_sent` went to (its uid): a static pod's mirror pod may be replaced,
    /// and the new one needs the status again.
    sent_to: Option<String>,
    observed_once: bool,
    /// The pod's probe tasks; dropped (and so stopped) with the worker.
    prober: PodProber,
    /// The pod's labels and annotations when its volumes were last written.
    volumes_synced_meta: Option<String>,
}

#[path = "worker_volumes.rs"]
mod worker_volumes;

#[path = "worker_hooks.rs"]
mod worker_hooks;

/// Run one pod until it is released or `shutdown` fires. `sandbox` is the pod's sandbox when
/// adoption found one.
pub async fn run_worker(
    ctx: WorkerContext,
    sandbox: Option<SandboxInfo>,
    mut updates: watch::Receiver<PodUpdate>,
    shutdown: CancellationToken,
) -> WorkerExit {
    let first = updates.borrow().clone();
    let uid = PodPlan::from_pod(&first.pod, first.gone).uid;
    let mut changes = ctx.runtime.container_changes(&uid);
    let interval = if changes.is_some() { ctx.cfg.resync_interval } else { ctx.cfg.sync_interval };
    let start_time = first.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or_else(Utc::now, |t| t.0);
    let prober = PodProber::new(&first.pod, ctx.runtime.clone(), ctx.probe_metrics.clone(), ctx.events.clone());
    let mut verdicts = prober.changes();
    let mut worker = Worker {
        ctx,
        memory: PodMemory { pod_ip: sandbox.as_ref().map(|s| s.ip), sandbox, ..PodMemory::default() },
        start_time,
        last_sent: first.pod.status.clone(),
        sent_to: first.pod.metadata.uid.clone(),
        observed_once: false,
        prober,
        volumes_synced_meta: None,
    };
    loop {
        let update = updates.borrow_and_update().clone();
        let wake_at = match worker.step(&update).await {
            Ok(StepOutcome::Again) => continue,
            Ok(StepOutcome::Sleep(wake_at)) => wake_at,
            Ok(StepOutcome::Released) => return WorkerExit::Released,
            Err(error) => {
                tracing::warn!(pod = %pod_key(&update.pod), "{}", error_chain(&*error));
                None
            }
        };
        let now = Instant::now();
        let poll = now + interval;
        let until = wake_at.map_or(poll, |w| w.min(poll)).max(now);
        tokio::select! {
            _ = shutdown.cancelled() => return WorkerExit::Shutdown,
            changed = updates.changed() => {
                if changed.is_err() {
                    return WorkerExit::Shutdown;
                }
            }
            _ = containers_changed(&mut changes) => {}
            // The prober lives as long as the worker, so its channel never closes here.
            _ = verdicts.changed() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Resolves when one of the pod's containers changed; never when the runtime cannot tell.
async fn containers_changed(changes: &mut Option<watch::Receiver<()>>) {
    if let Some(receiver) = changes {
        if receiver.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

enum StepOutcome {
    /// Actions were performed: observe and step again at once.
    Again,
    Sleep(Option<Instant>),
    Released,
}

type StepError = Box<dyn std::error::Error + Send + Sync>;

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Worker {
    async fn step(&mut self, update: &PodUpdate) -> Result<StepOutcome, StepError> {
        let pod = &update.pod;
        let plan = PodPlan::from_pod(pod, update.gone);
        self.note_pod_update(pod);
        let all = self.ctx.runtime.pod_containers(&plan.uid).await?;
        let mut observed = Observed::for_pod(&plan.uid, &all);
        self.prober.sync(&plan, &observed, self.memory.pod_ip);
        observed.probes = self.prober.view();
        let now = Instant::now();
        self.note_exits(&plan, &observed, now);

        let decision = decide(&plan, &observed, &self.memory, now);
        if !self.memory.torn_down && !matches!(plan.removal, Some(Removal::Gone { .. })) {
            self.report(pod, &plan, &observed, now).await;
        }
        if decision.done {
            if matches!(plan.removal, Some(Removal::Deleted { .. })) {
                self.ctx.sink.finish_deletion(pod).await?;
            }
            self.ctx.sink.released(pod).await;
            return Ok(StepOutcome::Released);
        }
        if decision.actions.is_empty() {
            return Ok(StepOutcome::Sleep(decision.wake_at));
        }
        self.run_pre_stops(pod, &plan, &decision.actions).await;
        for action in decision.actions {
            self.perform(pod, &plan, &observed, action).await?;
        }
        Ok(StepOutcome::Again)
    }

    /// Record when each exit was first seen (the backoff clock) and reset the crash streak
    /// of containers that ran long enough.
    fn note_exits(&mut self, plan: &PodPlan, observed: &Observed, now: Instant) {
        let first = !self.observed_once;
        self.observed_once = true;
        for container in plan.all_containers() {
            let Some(latest) = observed.latest(&container.name) else {
                continue;
            };
            let memory = self.memory.container_mut(&container.name);
            if first {
                // Adopted: assume a crash loop as long as the attempts say, not a fresh start.
                memory.crash_streak = latest.attempt;
            }
            if latest.info.state != RunState::Stopped {
                continue;
            }
            if memory.exit_seen.is_some_and(|(attempt, _)| attempt == latest.attempt) {
                continue;
            }
            let ran = match (latest.info.started_at, latest.info.finished_at) {
                (Some(start), Some(end)) => (end - start).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            if ran >= BACKOFF_RESET_AFTER {
                memory.crash_streak = 0;
            }
            memory.exit_seen = Some((latest.attempt, now));
            if container.pull_policy == PullPolicy::Always {
                // Always means a pull before every container start.
                memory.image = None;
            }
        }
    }

    async fn report(&mut self, pod: &Pod, plan: &PodPlan, observed: &Observed, now: Instant) {
        let status = compute_status(&StatusInput {
            pod,
            plan,
            observed,
            memory: &self.memory,
            host_ip: self.ctx.cfg.host_ip.as_deref(),
            start_time: self.start_time,
            now,
            wall_now: Utc::now(),
            previous: self.last_sent.as_ref(),
        });
        let destination = self.ctx.sink.destination(pod);
        if self.last_sent.as_ref() == Some(&status) && self.sent_to == destination {
            return;
        }
        self.record_back_offs(pod, &status);
        match self.ctx.sink.report(pod, &status).await {
            Ok(()) => {
                self.last_sent = Some(status);
                self.sent_to = destination;
                self.after_report(plan);
            }
            Err(error) => {
                tracing::warn!(pod = %pod_key(pod), "{}", error_chain(&error));
            }
        }
    }

    /// A BackOff event each time a container enters CrashLoopBackOff or ImagePullBackOff (kubelet
    /// records one per sync in back-off; the repeats would only raise the count).
    fn record_back_offs(&self, pod: &Pod, status: &PodStatus) {
        let waiting_reason = |status: Option<&PodStatus>, name: &str| {
            status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|list| list.iter().find(|c| c.name == name))
                .and_then(|c| c.state.as_ref())
                .and_then(|state| state.waiting.as_ref())
                .and_then(|waiting| waiting.reason.clone())
        };
        for container in status.container_statuses.iter().flatten() {
            let reason = waiting_reason(Some(status), &container.name);
            if reason == waiting_reason(self.last_sent.as_ref(), &container.name) {
                continue;
            }
            let (namespace, name) =
                (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""));
            let uid = pod.metadata.uid.as_deref().unwrap_or("");
            let (event_type, message) = match reason.as_deref() {
                Some("CrashLoopBackOff") => (
                    EventType::Warning,
                    format!("Back-off restarting failed container {} in pod {name}_{namespace}({uid})", container.name),
                ),
                Some("ImagePullBackOff") => {
                    (EventType::Normal, format!("Back-off pulling image \"{}\"", container.image))
                }
                _ => continue,
            };
            self.ctx.events.record(pod_reference(pod, Some(&container.name)), event_type, "BackOff", message);
        }
    }

    /// Once ErrImagePull was reported, the wait for the next try shows as ImagePullBackOff.
    fn after_report(&mut self, plan: &PodPlan) {
        for container in plan.all_containers() {
            let memory = self.memory.container_mut(&container.name);
            if let Some(error) = memory.error.as_mut().filter(|e| e.reason == "ErrImagePull") {
                error.reason = "ImagePullBackOff".to_string();
                error.message = format!("Back-off pulling image \"{}\"", container.image);
            }
        }
    }

    async fn perform(
        &mut self,
        pod: &Pod,
        plan: &PodPlan,
        observed: &Observed,
        action: Action,
    ) -> Result<(), StepError> {
        let runtime = self.ctx.runtime.clone();
        let root = self.ctx.cfg.root_dir.clone();
        let uid = plan.uid.as_str();
        let now = Instant::now();
        tracing::debug!(pod = %pod_key(pod), ?action, "pod action");
        match action {
            Action::SetupVolumes => self.set_up_volumes(pod, false).await,
            Action::SyncVolumes => self.set_up_volumes(pod, true).await,
            Action::SetupSandbox => match self.setup_sandbox(pod, uid).await {
                Ok(sandbox) => {
                    self.memory.pod_ip = Some(sandbox.ip);
                    self.memory.sandbox = Some(sandbox);
                    self.memory.sandbox_error = None;
                    self.memory.sandbox_error_streak = 0;
                }
                Err(error) => {
                    self.memory.sandbox_error_streak += 1;
                    self.memory.sandbox_retry_at = Some(now + backoff_delay(self.memory.sandbox_error_streak));
                    self.memory.sandbox_error = Some(error_chain(&*error));
                    tracing::warn!(pod = %pod_key(pod), "create pod sandbox: {}", error_chain(&*error));
                    let message = format!("Failed to create pod sandbox: {}", error_chain(&*error));
                    self.ctx.events.record(
                        pod_reference(pod, None),
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        message,
                    );
                }
            },
            Action::EnsureImage { container } => {
                let Some(spec) = plan.container(&container) else {
                    return Ok(());
                };
                let result = ensure_image(&self.ctx, pod, &container, &spec.image, spec.pull_policy).await;
                let memory = self.memory.container_mut(&container);
                match result {
                    Ok(image) => {
                        memory.image = Some(image);
                        memory.error = None;
                        memory.error_streak = 0;
                        memory.retry_at = None;
                    }
                    Err(waiting) => {
                        memory.error_streak += 1;
                        memory.retry_at = Some(now + backoff_delay(memory.error_streak));
                        memory.error = Some(waiting);
                    }
                }
            }
            Action::CreateAndStart { container, attempt } => {
                let result = self.create_and_start(pod, uid, &container, attempt).await;
                if result.is_ok() {
                    self.memory.container_mut(&container).error = None;
                    self.run_post_start(pod, uid, &container, attempt).await;
                }
                let object = pod_reference(pod, Some(&container));
                match &result {
                    Ok(()) => self.ctx.events.record(
                        object,
                        EventType::Normal,
                        "Started",
                        format!("Started container {container}"),
                    ),
                    Err(waiting) => self.ctx.events.record(
                        object,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {}", waiting.message),
                    ),
                }
                let memory = self.memory.container_mut(&container);
                match result {
                    Ok(()) => {
                        // `error` was cleared before postStart, which may have set it.
                        memory.error_streak = 0;
                        memory.retry_at = None;
                        if attempt > 0 {
                            memory.crash_streak += 1;
                        }
                    }
                    Err(waiting) => {
                        memory.error_streak += 1;
                        // A configuration error is tried again at kubelet's pod sync backoff,
                        // without doubling: it clears when the missing object appears.
                        let delay = if waiting.reason == "CreateContainerConfigError" {
                            BACKOFF_INITIAL
                        } else {
                            backoff_delay(memory.error_streak)
                        };
                        memory.retry_at = Some(now + delay);
                        memory.error = Some(waiting);
                        let id = container_id(uid, &container, attempt);
                        let dir = container_dir(&root, uid, &container, attempt);
                        if let Err(e) = runtime.delete_container(&id, true).await {
                            tracing::warn!(%id, "clean up failed create: {}", error_chain(&e));
                        }
                        if let Err(e) = runtime.unmount_rootfs(&dir).await {
                            tracing::warn!(%id, "clean up failed create: {}", error_chain(&e));
                        }
                    }
                }
            }
            Action::StartCreated { container, attempt } => {
                let id = container_id(uid, &container, attempt);
                if let Err(error) = runtime.start_container(&id).await {
                    // Remove it so that the same attempt is created afresh.
                    runtime.delete_container(&id, true).await?;
                    let memory = self.memory.container_mut(&container);
                    memory.error_streak += 1;
                    memory.retry_at = Some(now + backoff_delay(memory.error_streak));
                    memory.error =
                        Some(Waiting { reason: "CreateContainerError".to_string(), message: error_chain(&error) });
                }
            }
            Action::RemoveAttempt { container, attempt } => {
                let id = container_id(uid, &container, attempt);
                runtime.delete_container(&id, true).await?;
                let dir = container_dir(&root, uid, &container, attempt);
                runtime.unmount_rootfs(&dir).await?;
                remove_dir_if_present(&dir)?;
            }
            Action::Signal { container, attempt, signal } => {
                if signal == Signal::Term {
                    let object = pod_reference(pod, Some(&container));
                    let message = format!("Stopping container {container}");
                    self.ctx.events.record(object, EventType::Normal, "Killing", message);
                }
                let number = worker_hooks::signal_number(observed, &container, attempt, signal);
                send_signal(runtime.as_ref(), &container_id(uid, &container, attempt), number).await;
                match signal {
                    Signal::Term => {
                        self.memory.term_sent_at.get_or_insert(now);
                        self.memory.container_mut(&container).term_sent = Some(attempt);
                    }
                    Signal::Kill => self.memory.kill_sent = true,
                }
            }
            Action::StopUnhealthy { container, attempt, probe, signal } => {
                if signal == Signal::Term {
                    let restart = if plan.restart_policy == RestartPolicy::Never { "" } else { ", will be restarted" };
                    let message = format!("Container {container} failed {} probe{restart}", probe.lowercase());
                    tracing::info!(pod = %pod_key(pod), "{message}");
                    self.ctx.events.record(pod_reference(pod, Some(&container)), EventType::Normal, "Killing", message);
                }
                let number = worker_hooks::signal_number(observed, &container, attempt, signal);
                send_signal(runtime.as_ref(), &container_id(uid, &container, attempt), number).await;
                let kill = &mut self.memory.container_mut(&container).probe_kill;
                match (signal, kill.as_mut()) {
                    (Signal::Kill, Some(sent)) => sent.kill_sent = true,
                    _ => *kill = Some(ProbeKill { attempt, term_sent_at: now, kill_sent: signal == Signal::Kill }),
                }
            }
            Action::ReleaseSandbox => {
                runtime.teardown_sandbox(&sandbox_id(uid)).await?;
                self.memory.sandbox_released = true;
            }
            Action::TearDown => {
                let containers: Vec<_> = observed.all().map(|a| a.info.clone()).collect();
                release_pod(runtime.as_ref(), self.ctx.objects.as_ref(), &root, uid, &containers).await?;
                self.memory.torn_down = true;
                self.memory.sandbox = None;
            }
        }
        Ok(())
    }

    async fn setup_sandbox(&self, pod: &Pod, uid: &str) -> Result<SandboxInfo, StepError> {
        let sandbox = if is_host_network(pod) {
            host_network_sandbox(uid, self.ctx.cfg.host_ip.as_deref())?
        } else {
            // The UTS hostname comes with the sandbox: an FQDN too long fails it, as in kubelet.
            kernel_hostname(pod, self.ctx.cfg.dns.cluster_domain.as_deref())?;
            self.ctx.runtime.setup_sandbox(&sandbox_id(uid)).await?
        };
        let (_, warnings) =
            write_pod_files(&pod_dir(&self.ctx.cfg.root_dir, uid), pod, sandbox.ip.into(), &self.ctx.cfg.dns)?;
        for (reason, message) in warnings {
            self.ctx.events.record(pod_reference(pod, None), EventType::Warning, reason, message);
        }
        Ok(sandbox)
    }

    /// Mount the rootfs, write config.json, create and start. Errors come back as the
    /// waiting reason kubelet would show.
    async fn create_and_start(&self, pod: &Pod, uid: &str, container: &str, attempt: u32) -> Result<(), Waiting> {
        let runtime_error = |error: &(dyn std::error::Error + 'static)| Waiting {
            reason: "CreateContainerError".to_string(),
            message: error_chain(error),
        };
        let root = &self.ctx.cfg.root_dir;
        let spec = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.iter().flatten().chain(&s.containers).find(|c| c.name == container));
        let (Some(spec), Some(image), Some(sandbox)) =
            (spec, self.memory.container(container).image, self.memory.sandbox.clone())
        else {
            return Err(Waiting {
                reason: "CreateContainerError".to_string(),
                message: "container, image or sandbox missing".to_string(),
            });
        };
        let config = self.container_config(pod, spec).await?;
        let dir = container_dir(root, uid, container, attempt);
        std::fs::create_dir_all(&dir).map_err(|e| runtime_error(&e))?;
        let rootfs = self.ctx.runtime.mount_rootfs(&image, &dir).await.map_err(|e| runtime_error(&e))?;
        let files = super::pod_files::PodFiles::in_dir(&pod_dir(root, uid));
        let oci = container_spec(&TranslateInput {
            pod,
            container: spec,
            image: &image.config,
            rootfs: &rootfs,
            netns_path: &sandbox.netns_path,
            cluster_domain: self.ctx.cfg.dns.cluster_domain.as_deref(),
            seccomp: &self.ctx.cfg.seccomp(),
            pod_files: &files,
            cgroup_root: &self.ctx.cfg.cgroup_root,
            attempt,
            env: &config.env,
            volumes: &config.volumes,
            subpaths: &config.subpaths,
        })
        .map_err(|e| Waiting { reason: e.reason().to_string(), message: error_chain(&e) })?;
        oci.save(dir.join("config.json")).map_err(|e| runtime_error(&e))?;
        let log = log_path(root, uid, container, attempt);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| runtime_error(&e))?;
        }
        let id = container_id(uid, container, attempt);
        self.ctx.runtime.create_container(&id, &dir, &log).await.map_err(|e| runtime_error(&e))?;
        let object = pod_reference(pod, Some(container));
        self.ctx.events.record(object, EventType::Normal, "Created", format!("Created container: {container}"));
        self.ctx.runtime.start_container(&id).await.map_err(|e| runtime_error(&e))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a host-network pod's IP is the node's, and the node's IPv4 address is unknown")]
struct NoNodeAddress;

/// A host-network pod has no sandbox of its own: the node's namespace, the node's IP.
fn host_network_sandbox(uid: &str, host_ip: Option<&str>) -> Result<SandboxInfo, NoNodeAddress> {
    let ip = host_ip.and_then(|ip| ip.parse().ok()).ok_or(NoNodeAddress)?;
    Ok(SandboxInfo { id: sandbox_id(uid), netns_path: std::path::PathBuf::new(), ip })
}

async fn send_signal(runtime: &dyn PodRuntime, id: &str, number: i32) {
    if let Err(error) = runtime.kill_container(id, number).await {
        // It may have exited meanwhile; the next observation tells.
        tracing::debug!(%id, "signal: {}", error_chain(&error));
    }
}

fn remove_dir_if_present(dir: &std::path::Path) -> Result<(), std::io::Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
