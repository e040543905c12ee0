//! PodStatus as kubelet reports it, computed from the plan, the runtime's containers and the
//! worker's memory. Pure: the worker decides when to send it (only when it changed).

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use super::ids::CONTAINER_ID_SCHEME;
use super::model::{Attempt, ContainerKind, ContainerPlan, Observed, PodMemory, PodPlan, RestartPolicy};
use super::probe::Verdict;
use super::runtime_port::RunState;
use super::step::{all_finished, backoff_delay, init_step_done, initialized, restart_at};

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_RUNNING: &str = "Running";
pub const PHASE_SUCCEEDED: &str = "Succeeded";
pub const PHASE_FAILED: &str = "Failed";

pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub plan: &'a PodPlan,
    pub observed: &'a Observed,
    pub memory: &'a PodMemory,
    pub host_ip: Option<&'a str>,
    /// When the worker first took the pod (kept stable by the worker).
    pub start_time: DateTime<Utc>,
    pub now: Instant,
    pub wall_now: DateTime<Utc>,
    /// The status last sent, for stable lastTransitionTime and sticky terminal phases.
    pub previous: Option<&'a PodStatus>,
}

pub fn compute_status(input: &StatusInput<'_>) -> PodStatus {
    let initialized = initialized(input.plan, input.observed);
    let container_statuses: Vec<ContainerStatus> =
        input.plan.containers.iter().map(|c| container_status(input, c, initialized)).collect();
    let init_statuses: Vec<ContainerStatus> =
        input.plan.init_containers.iter().map(|c| container_status(input, c, initialized)).collect();
    let phase = pod_phase(input, &container_statuses, initialized);
    // Sidecars count for readiness, as app containers do.
    let sidecar_statuses =
        input.plan.init_containers.iter().zip(&init_statuses).filter(|(c, _)| c.kind == ContainerKind::Sidecar);
    let readiness: Vec<&ContainerStatus> =
        sidecar_statuses.map(|(_, status)| status).chain(&container_statuses).collect();
    let all_ready = readiness.iter().all(|s| s.ready);
    let completed = phase == PHASE_SUCCEEDED;
    let unready: Vec<&str> = readiness.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let incomplete: Vec<&str> = input
        .plan
        .init_containers
        .iter()
        .filter(|c| !init_step_done(c, input.observed))
        .map(|c| c.name.as_str())
        .collect();
    let init_reason = (!initialized).then(|| {
        let message = format!("containers with incomplete status: [{}]", incomplete.join(" "));
        ("ContainersNotInitialized".to_string(), Some(message))
    });
    let ready_reason = (!all_ready).then(|| {
        if completed {
            ("PodCompleted".to_string(), None)
        } else {
            ("ContainersNotReady".to_string(), Some(format!("containers with unready status: [{}]", unready.join(" "))))
        }
    });
    let sandbox_ready = input.memory.sandbox.is_some() && !input.memory.sandbox_released;
    let previous_scheduled = input
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .cloned();
    let conditions = vec![
        previous_scheduled.unwrap_or_else(|| condition(input, "PodScheduled", true, None)),
        condition(input, "PodReadyToStartContainers", sandbox_ready, None),
        condition(input, "Initialized", initialized, init_reason),
        condition(input, "ContainersReady", all_ready, ready_reason.clone()),
        condition(input, "Ready", all_ready, ready_reason),
    ];
    let pod_ip = input.memory.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: input.host_ip.map(str::to_string),
        host_ips: input.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(input.start_time)),
        container_statuses: Some(container_statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: input.pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// A condition whose lastTransitionTime only moves when its status does.
fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    status: bool,
    reason_message: Option<(String, Option<String>)>,
) -> PodCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = input
        .previous
        .or(input.pod.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(input.wall_now)),
    };
    let (reason, message) = match reason_message {
        Some((reason, message)) => (Some(reason), message),
        None => (None, None),
    };
    PodCondition { type_: type_.to_string(), status, last_transition_time, reason, message, ..PodCondition::default() }
}

/// A container's status; `initialized`: the pod's init containers are done, so a container
/// not created yet is being created rather than waiting for them.
fn container_status(input: &StatusInput<'_>, plan: &ContainerPlan, initialized: bool) -> ContainerStatus {
    let (name, image) = (plan.name.as_str(), plan.image.as_str());
    let memory = input.memory.container(name);
    let latest = input.observed.latest(name);
    let previous = input.observed.previous(name);
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_string()), message }),
        ..ContainerState::default()
    };
    let error_state = memory.error.as_ref().map(|e| waiting(&e.reason, Some(e.message.clone())));
    let not_created = if initialized || input.observed.latest(name).is_some() || next_init(input) == Some(name) {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let (state, last_state) = match latest {
        None => (error_state.unwrap_or_else(|| waiting(not_created, None)), None),
        Some(latest) => match latest.info.state {
            RunState::Created => (waiting("ContainerCreating", None), previous.map(terminated)),
            RunState::Running => (
                ContainerState {
                    running: Some(ContainerStateRunning { started_at: latest.info.started_at.map(Time) }),
                    ..ContainerState::default()
                },
                previous.map(terminated),
            ),
            RunState::Stopped => {
                let restart = restart_at(input.plan, input.observed, input.memory, name);
                match (restart, error_state) {
                    // Restarting but the pull or create of the next attempt failed.
                    (Some(_), Some(error)) => (error, Some(terminated(latest))),
                    (Some(at), None) if at > input.now => {
                        let delay = backoff_delay(memory.crash_streak);
                        let message = format!(
                            "back-off {} restarting failed container={name} pod={}_{}({})",
                            go_duration(delay),
                            input.pod.metadata.name.as_deref().unwrap_or_default(),
                            input.pod.metadata.namespace.as_deref().unwrap_or_default(),
                            input.plan.uid,
                        );
                        (waiting("CrashLoopBackOff", Some(message)), Some(terminated(latest)))
                    }
                    _ => (terminated(latest), previous.map(terminated)),
                }
            }
        },
    };
    let running = state.running.is_some();
    // kubelet's prober manager: started once the startup probe passed (at once without one),
    // ready once started and the readiness probe passed (at once without one).
    let verdicts = latest.map(|l| input.observed.probes.get(name, l.attempt)).unwrap_or_default();
    let started = running && (plan.probes.startup.is_none() || verdicts.startup == Some(Verdict::Success));
    let ready = match plan.kind {
        // kubelet shows a completed init container as ready.
        ContainerKind::Init => latest.is_some_and(|l| l.info.state == RunState::Stopped && l.info.exit_code == Some(0)),
        ContainerKind::Sidecar | ContainerKind::App => {
            started && (plan.probes.readiness.is_none() || verdicts.readiness == Some(Verdict::Success))
        }
    };
    ContainerStatus {
        name: name.to_string(),
        state: Some(state),
        last_state,
        ready,
        started: Some(started),
        restart_count: latest.map_or(0, |l| i32::try_from(l.attempt).unwrap_or(i32::MAX)),
        image: image.to_string(),
        image_id: memory.image.as_ref().map(|i| i.image_id.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("{CONTAINER_ID_SCHEME}{}", l.info.id)),
        ..ContainerStatus::default()
    }
}

fn terminated(attempt: &Attempt) -> ContainerState {
    let info = &attempt.info;
    let exit_code = info.exit_code.unwrap_or(255);
    let reason = if info.oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(reason.to_string()),
            started_at: info.started_at.map(Time),
            finished_at: info.finished_at.map(Time),
            container_id: Some(format!("{CONTAINER_ID_SCHEME}{}", info.id)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// The init container whose turn it is: the first one not done.
fn next_init<'a>(input: &'a StatusInput<'_>) -> Option<&'a str> {
    input.plan.init_containers.iter().find(|c| !init_step_done(c, input.observed)).map(|c| c.name.as_str())
}

/// kubelet's getPhase: Pending while the init containers run (Failed when one failed for
/// good), then from the app containers.
fn pod_phase(input: &StatusInput<'_>, statuses: &[ContainerStatus], initialized: bool) -> &'static str {
    let sticky =
        input.previous.and_then(|s| s.phase.as_deref()).filter(|p| *p == PHASE_SUCCEEDED || *p == PHASE_FAILED);
    match sticky {
        Some(PHASE_SUCCEEDED) => return PHASE_SUCCEEDED,
        Some(_) => return PHASE_FAILED,
        None => {}
    }
    if !initialized {
        return if all_finished(input.plan, input.observed) { PHASE_FAILED } else { PHASE_PENDING };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in statuses {
        let state = status.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if status.last_state.as_ref().is_some_and(|s| s.terminated.is_some()) {
                stopped += 1;
            } else {
                waiting += 1;
            }
        }
    }
    let removed = input.plan.removal.is_some();
    if removed && running == 0 && waiting == 0 && stopped > 0 {
        // Stopped for deletion: terminal, whatever the restart policy.
        return if stopped == succeeded { PHASE_SUCCEEDED } else { PHASE_FAILED };
    }
    if waiting > 0 {
        PHASE_PENDING
    } else if running > 0 {
        PHASE_RUNNING
    } else if stopped > 0 {
        match input.plan.restart_policy {
            RestartPolicy::Always => PHASE_RUNNING,
            _ if stopped == succeeded => PHASE_SUCCEEDED,
            RestartPolicy::Never => PHASE_FAILED,
            RestartPolicy::OnFailure => PHASE_RUNNING,
        }
    } else {
        PHASE_PENDING
    }
}

/// Go's time.Duration formatting for whole seconds ("10s", "1m20s", "5m0s").
fn go_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
