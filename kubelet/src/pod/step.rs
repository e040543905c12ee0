//! The pure per-pod step function: from the plan, the observed runtime state, the worker's
//! memory and the clock, decide what to do next. No I/O here, so every lifecycle rule is
//! testable with a fake clock.

use std::time::Duration;

use tokio::time::Instant;

use super::model::{ContainerMemory, ContainerPlan, Observed, PodMemory, PodPlan, RestartPolicy};
use super::probe::ProbeKind;
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
    if !plan.restart_policy.restarts(latest.info.exit_code.unwrap_or(255)) {
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

/// Whether every container is stopped and none will start again.
pub fn all_finished(plan: &PodPlan, observed: &Observed) -> bool {
    plan.containers.iter().all(|c| match observed.latest(&c.name) {
        Some(latest) => {
            latest.info.state == RunState::Stopped
                && !plan.restart_policy.restarts(latest.info.exit_code.unwrap_or(255))
        }
        None => false,
    }) && !plan.containers.is_empty()
}

pub fn decide(plan: &PodPlan, observed: &Observed, memory: &PodMemory, now: Instant) -> Decision {
    if let Some(removal) = plan.removal {
        return decide_removal(removal.grace(), observed, memory, now);
    }
    let mut decision = Decision::default();

    if all_finished(plan, observed) {
        if !memory.sandbox_released && memory.sandbox.is_some() {
            decision.actions.push(Action::ReleaseSandbox);
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

    for container in &plan.containers {
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
                        stop_unhealthy(&mut decision, plan, container, &remembered, latest.attempt, probe, now);
                    }
                    continue;
                }
                RunState::Created => {
                    decision.actions.push(Action::StartCreated { container: name.clone(), attempt: latest.attempt });
                    continue;
                }
                RunState::Stopped => match restart_at(plan, observed, memory, name) {
                    None => continue,
                    Some(at) if at > now => {
                        decision.wake(at);
                        continue;
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
    decision
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

/// SIGTERM everything alive, SIGKILL after the grace period, then release everything.
fn decide_removal(grace: Duration, observed: &Observed, memory: &PodMemory, now: Instant) -> Decision {
    let alive: Vec<_> = observed.all().filter(|a| a.info.state != RunState::Stopped).collect();
    let signal_all = |signal| {
        alive
            .iter()
            .map(|a| Action::Signal {
                container: a.info.annotations.get(super::ids::ANNOTATION_CONTAINER_NAME).cloned().unwrap_or_default(),
                attempt: a.attempt,
                signal,
            })
            .collect::<Vec<_>>()
    };
    if !alive.is_empty() {
        return match memory.term_sent_at {
            None => Decision { actions: signal_all(Signal::Term), wake_at: Some(now + grace), done: false },
            Some(sent) if now >= sent + grace && !memory.kill_sent => {
                Decision { actions: signal_all(Signal::Kill), wake_at: None, done: false }
            }
            Some(sent) => {
                Decision { actions: Vec::new(), wake_at: (now < sent + grace).then_some(sent + grace), done: false }
            }
        };
    }
    if !memory.torn_down {
        return Decision { actions: vec![Action::TearDown], ..Decision::default() };
    }
    Decision { done: true, ..Decision::default() }
}

/// Whether the pod's restart policy lets `name` run again after its latest exit.
pub fn will_restart(policy: RestartPolicy, exit_code: Option<i32>) -> bool {
    policy.restarts(exit_code.unwrap_or(255))
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
