//! The worker's lifecycle hook steps: postStart after a container started, preStop before a
//! container is asked to stop (several at once, within the grace period), and the stop
//! signal each container's image names.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::time::Instant;

use super::{pod_key, Worker};
use crate::events::{pod_reference, EventType};
use crate::pod::ids::{container_id, ANNOTATION_STOP_SIGNAL};
use crate::pod::lifecycle_hooks::{post_start, pre_stop, run_hook, stop_signal};
use crate::pod::model::{Observed, PodPlan, Waiting};
use crate::pod::step::{probe_kill_grace, Action, Signal, MIN_KILL_GRACE};

/// How long a postStart hook may run: kubelet sets no limit and blocks the pod's sync; the
/// pod's worker here is blocked as long, so it is bounded.
const POST_START_LIMIT: Duration = Duration::from_secs(300);

fn container_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == name)
}

impl Worker {
    fn pod_ip_text(&self) -> String {
        self.memory.pod_ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// Run the container's postStart hook. A failure is a FailedPostStartHook event (without
    /// the hook's output, which may hold secrets, as kubelet) and the attempt is killed; it
    /// then restarts per restartPolicy, waiting with reason PostStartHookError meanwhile.
    pub(super) async fn run_post_start(&mut self, pod: &Pod, uid: &str, container: &str, attempt: u32) {
        let Some(action) = container_of(pod, container).and_then(post_start) else {
            return;
        };
        let id = container_id(uid, container, attempt);
        let result = run_hook(self.ctx.runtime.clone(), &action, &id, &self.pod_ip_text(), POST_START_LIMIT).await;
        let Err(message) = result else {
            return;
        };
        tracing::warn!(pod = %pod_key(pod), container, "postStart hook failed: {message}");
        let object = pod_reference(pod, Some(container));
        self.ctx.events.record(object, EventType::Warning, "FailedPostStartHook", "PostStartHook failed");
        if let Err(error) = self.ctx.runtime.kill_container(&id, nix::sys::signal::Signal::SIGKILL as i32).await {
            tracing::debug!(%id, "kill after a failed postStart: {error}");
        }
        self.memory.container_mut(container).error =
            Some(Waiting { reason: "PostStartHookError".to_string(), message });
    }

    /// Before this step's stop signals: the preStop hooks of the containers about to be
    /// asked to stop, run side by side, each bounded by what is left of its grace period
    /// (the grace clock starts now, hooks included, as kubelet counts it).
    pub(super) async fn run_pre_stops(&mut self, pod: &Pod, plan: &PodPlan, actions: &[Action]) {
        let now = Instant::now();
        let mut hooks = Vec::new();
        for action in actions {
            let (container, attempt, grace) = match action {
                Action::Signal { container, attempt, signal: Signal::Term } => {
                    let grace = plan.removal.map_or(plan.termination_grace, |r| r.grace());
                    let started = *self.memory.term_sent_at.get_or_insert(now);
                    (container, *attempt, (started + grace).saturating_duration_since(now))
                }
                Action::StopUnhealthy { container, attempt, probe, signal: Signal::Term } => {
                    let Some(spec) = plan.container(container) else { continue };
                    (container, *attempt, probe_kill_grace(plan, spec, *probe))
                }
                _ => continue,
            };
            let Some(hook) = container_of(pod, container).and_then(pre_stop) else {
                continue;
            };
            let id = container_id(&plan.uid, container, attempt);
            let (runtime, pod_ip) = (self.ctx.runtime.clone(), self.pod_ip_text());
            let limit = grace.max(MIN_KILL_GRACE);
            hooks.push(async move { (container.clone(), run_hook(runtime, &hook, &id, &pod_ip, limit).await) });
        }
        for (container, result) in join_all(hooks).await {
            if let Err(message) = result {
                tracing::warn!(pod = %pod_key(pod), container, "preStop hook failed: {message}");
                let object = pod_reference(pod, Some(&container));
                self.ctx.events.record(object, EventType::Warning, "FailedPreStopHook", "PreStopHook failed");
            }
        }
    }
}

/// The signal for `signal` to attempt `attempt` of `container`: SIGKILL, or the stop signal
/// its image named when it was created (kept in its annotations), SIGTERM by default.
pub(super) fn signal_number(observed: &Observed, container: &str, attempt: u32, signal: Signal) -> i32 {
    let stop = || {
        let info = observed.containers.get(container)?.iter().find(|a| a.attempt == attempt)?;
        info.info.annotations.get(ANNOTATION_STOP_SIGNAL).cloned()
    };
    match signal {
        Signal::Kill => nix::sys::signal::Signal::SIGKILL as i32,
        Signal::Term => stop_signal(stop().as_deref()) as i32,
    }
}
