//! The pure per-pod step function: from the plan, the observed runtime state, the worker's
//! memory and the clock, decide what to do next. No I/O here, so every lifecycle rule is
//! testable with a fake clock.

use std::time::Duration;

use tokio::time::Instant;

use super::model::{Attempt, ContainerKind, ContainerMemory, ContainerPlan, Observed, PodMemory, PodPlan};
use super::probe::{ProbeKind, Verdict};
use super::runtime_port::RunState;

/// CrashLoopBackOff and image pull backoff: 10s doubling up to 5 minutes, as kubelet.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its crash streak (kubelet: twice the max backoff).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// kubelet never kills a container with less grace than this.
pub const MIN_KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set up the pod's volumes (before its sandbox, as kubelet).
    SetupVolumes,
    /// Rewrite the volumes filled from ConfigMaps, Secrets and the pod itself.
    SyncVolumes,
    SetupSandbox,
    EnsureImage {
        container: String,
    },
    CreateAndStart {
        container: String,
        attempt: u32,
    },
    /// A container created but not started (the agent stopped in between): start it.
    StartCreated {
        container: String,
        attempt: u32,
    },
    /// Remove an old attempt; the latest two stay for status (state and lastState).
    RemoveAttempt {
        container: String,
        attempt: u32,
    },
    Signal {
        container: String,
        attempt: u32,
        signal: Signal,
    },
    /// Kill an attempt that failed its liveness or startup probe: SIGTERM, SIGKILL after the
    /// grace period. It restarts (or not) per restartPolicy, as any exit.
    StopUnhealthy {
        container: String,
        attempt: u32,
        probe: ProbeKind,
        signal: Signal,
    },
    /// All containers finished for good: give the IP back, keep containers for their logs.
    ReleaseSandbox,
    /// Delete every container, unmount, release the sandbox, remove the pod directory.
    TearDown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Step again at this instant even if nothing else happens.
    pub wake_at: Option<Instant>,
    /// The pod is released: the worker reports a last time and ends.
    pub done: bool,
}

impl Decision {
    /// Step again at `at` at the latest.
    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The delay before the restart that follows `streak` earlier restarts.
pub fn backoff_delay(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let doublings = (streak - 1).min(16);
    BACKOFF_INITIAL.saturating_mul(1u32 << doublings).min(BACKOFF_MAX)
}

/// When the next restart of a stopped container may happen, if it is to restart at all.
pub fn restart_at(plan: &PodPlan, observed: &Observed, memory: &PodMemory, name: &str) -> Option<Instant> {
    let latest = observed.latest(name)?;
    if latest.info.state != RunState::Stopped {
        return None;
    }
    if !plan.container(name)?.restarts(plan.restart_policy, latest.info.exit_code.unwrap_or(255)) {
        return None;
    }
    let container = memory.container(name);
    let seen = match container.exit_seen {
        Some((attempt, at)) if attempt == latest.attempt => at,
        // The executor records exits before stepping; without a record, wait for it.
        _ => return None,
    };
    Some(seen + backoff_delay(container.crash_streak))
}

/// Whether the pod is done: every app container stopped and none will start again, or an init
/// container failed for good (restartPolicy Never). Sidecars do not keep a pod alive.
pub fn all_finished(plan: &PodPlan, observed: &Observed) -> bool {
    let stopped_for_good = |c: &ContainerPlan| match observed.latest(&c.name) {
        Some(latest) => {
            latest.info.state == RunState::Stopped
                && !c.restarts(plan.restart_policy, latest.info.exit_code.unwrap_or(255))
        }
        None => false,
    };
    let init_failed = plan.init_containers.iter().any(|c| {
        c.kind == ContainerKind::Init
            && stopped_for_good(c)
            && observed.latest(&c.name).is_some_and(|l| l.info.exit_code != Some(0))
    });
    init_failed || (!plan.containers.is_empty() && plan.containers.iter().all(stopped_for_good))
}

/// Whether `container` lets the next init container start: a run-to-completion one exited
/// 0, a sidecar runs and passed its startup probe (at once without one).
pub fn init_step_done(container: &ContainerPlan, observed: &Observed) -> bool {
    let Some(latest) = observed.latest(&container.name) else {
        return false;
    };
    match container.kind {
        ContainerKind::Init => latest.info.state == RunState::Stopped && latest.info.exit_code == Some(0),
        ContainerKind::Sidecar | ContainerKind::App => {
            latest.info.state == RunState::Running
                && (container.probes.startup.is_none()
                    || observed.probes.get(&container.name, latest.attempt).startup == Some(Verdict::Success))
        }
    }
}

/// Whether the app containers may run: every init container is done, or the pod got that far
/// before (an app container exists; a sidecar restarting later blocks nothing).
pub fn initialized(plan: &PodPlan, observed: &Observed) -> bool {
    plan.containers.iter().any(|c| observed.latest(&c.name).is_some())
        || plan.init_containers.iter().all(|c| init_step_done(c, observed))
}

pub fn decide(plan: &PodPlan, observed: &Observed, memory: &PodMemory, now: Instant) -> Decision {
    if let Some(removal) = plan.removal {
        return stop_alive(plan, removal.grace(), observed, memory, now).unwrap_or_else(|| tear_down(memory));
    }
    let mut decision = Decision::default();

    if all_finished(plan, observed) {
        // Sidecars stop once the pod is done, then the IP goes back.
        if let Some(stopping) = stop_alive(plan, plan.termination_grace, observed, memory, now) {
            return stopping;
        }
        if !memory.sandbox_released && memory.sandbox.is_some() {
            decision.actions.push(Action::ReleaseSandbox);
        }
        return decision;
    }
    if plan.has_volumes && !memory.volumes_ready {
        match memory.volume_retry_at {
            Some(at) if at > now => decision.wake(at),
            _ => decision.actions.push(Action::SetupVolumes),
        }
        return decision;
    }
    if memory.sandbox.is_none() {
        match memory.sandbox_retry_at {
            Some(at) if at > now => decision.wake(at),
            _ => decision.actions.push(Action::SetupSandbox),
        }
        return decision;
    }
    match memory.volume_resync_at {
        Some(at) if at <= now => decision.actions.push(Action::SyncVolumes),
        Some(at) => decision.wake(at),
        None => {}
    }

    let was_initialized = initialized(plan, observed);
    // Init containers one at a time, in order; once the pod is initialized, only its
    // sidecars are still tended (restarted, probed).
    for container in &plan.init_containers {
        if was_initialized && container.kind == ContainerKind::Init {
            continue;
        }
        tend(&mut decision, plan, container, observed, memory, now);
        if !was_initialized && !init_step_done(container, observed) {
            return decision;
        }
    }
    for container in &plan.containers {
        tend(&mut decision, plan, container, observed, memory, now);
    }
    decision
}

/// One container's next step: old attempts removed, an unhealthy one stopped, a created one
/// started, a stopped one restarted after its backoff, a missing one pulled and started.
fn tend(
    decision: &mut Decision,
    plan: &PodPlan,
    container: &ContainerPlan,
    observed: &Observed,
    memory: &PodMemory,
    now: Instant,
) {
    let name = &container.name;
    let remembered = memory.container(name);
    let attempts = observed.containers.get(name).map(Vec::as_slice).unwrap_or(&[]);
    // Keep the latest two attempts: current state and lastState.
    for old in attempts.iter().rev().skip(2) {
        decision.actions.push(Action::RemoveAttempt { container: name.clone(), attempt: old.attempt });
    }
    let next_attempt = match observed.latest(name) {
        None => 0,
        Some(latest) => match latest.info.state {
            RunState::Running => {
                if let Some(probe) = observed.probes.failed(name, latest.attempt) {
                    stop_unhealthy(decision, plan, container, &remembered, latest.attempt, probe, now);
                }
                return;
            }
            RunState::Created => {
                decision.actions.push(Action::StartCreated { container: name.clone(), attempt: latest.attempt });
                return;
            }
            RunState::Stopped => match restart_at(plan, observed, memory, name) {
                None => return,
                Some(at) if at > now => {
                    decision.wake(at);
                    return;
                }
                Some(_) => latest.attempt + 1,
            },
        },
    };
    match remembered.retry_at {
        Some(at) if at > now => decision.wake(at),
        _ if remembered.image.is_none() => decision.actions.push(Action::EnsureImage { container: name.clone() }),
        _ => decision.actions.push(Action::CreateAndStart { container: name.clone(), attempt: next_attempt }),
    }
}

/// The grace of a kill for a failed probe: the probe's own terminationGracePeriodSeconds, else
/// the pod's, and never under kubelet's minimum.
pub fn probe_kill_grace(plan: &PodPlan, container: &ContainerPlan, probe: ProbeKind) -> Duration {
    let own = container.probes.get(probe).and_then(|p| p.termination_grace);
    own.unwrap_or(plan.termination_grace).max(MIN_KILL_GRACE)
}

/// SIGTERM to an attempt that failed its liveness or startup probe, SIGKILL once the grace
/// period is over.
fn stop_unhealthy(
    decision: &mut Decision,
    plan: &PodPlan,
    container: &ContainerPlan,
    memory: &ContainerMemory,
    attempt: u32,
    probe: ProbeKind,
    now: Instant,
) {
    let grace = probe_kill_grace(plan, container, probe);
    let action = |signal| Action::StopUnhealthy { container: container.name.clone(), attempt, probe, signal };
    match memory.probe_kill.filter(|kill| kill.attempt == attempt) {
        None => {
            decision.actions.push(action(Signal::Term));
            decision.wake(now + grace);
        }
        Some(kill) if now >= kill.term_sent_at + grace => {
            if !kill.kill_sent {
                decision.actions.push(action(Signal::Kill));
            }
        }
        Some(kill) => decision.wake(kill.term_sent_at + grace),
    }
}

/// Stop what is still alive: SIGTERM, SIGKILL once `grace` has passed since the first SIGTERM.
/// Sidecars get theirs only once the other containers are gone, as kubelet stops them last.
/// `None`: nothing alive.
fn stop_alive(
    plan: &PodPlan,
    grace: Duration,
    observed: &Observed,
    memory: &PodMemory,
    now: Instant,
) -> Option<Decision> {
    let name_of =
        |a: &Attempt| a.info.annotations.get(super::ids::ANNOTATION_CONTAINER_NAME).cloned().unwrap_or_default();
    let alive: Vec<(&Attempt, String)> =
        observed.all().filter(|a| a.info.state != RunState::Stopped).map(|a| (a, name_of(a))).collect();
    if alive.is_empty() {
        return None;
    }
    let signal = |attempt: &Attempt, name: &String, signal| Action::Signal {
        container: name.clone(),
        attempt: attempt.attempt,
        signal,
    };
    let mut decision = Decision::default();
    match memory.term_sent_at {
        Some(sent) if now >= sent + grace => {
            if !memory.kill_sent {
                decision.actions = alive.iter().map(|(a, name)| signal(a, name, Signal::Kill)).collect();
            }
            return Some(decision);
        }
        Some(sent) => decision.wake(sent + grace),
        None => decision.wake(now + grace),
    }
    let is_sidecar = |name: &str| plan.container(name).is_some_and(|c| c.kind == ContainerKind::Sidecar);
    let others_alive = alive.iter().any(|(_, name)| !is_sidecar(name));
    for (attempt, name) in &alive {
        let term_sent = memory.container(name).term_sent == Some(attempt.attempt);
        let waits_for_the_others = others_alive && is_sidecar(name);
        if term_sent || waits_for_the_others {
            continue;
        }
        decision.actions.push(signal(attempt, name, Signal::Term));
    }
    Some(decision)
}

/// Everything stopped: delete the containers and release the rest, once.
fn tear_down(memory: &PodMemory) -> Decision {
    if !memory.torn_down {
        return Decision { actions: vec![Action::TearDown], ..Decision::default() };
    }
    Decision { done: true, ..Decision::default() }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
