use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::pod::ids::*;
use crate::pod::model::{Attempt, ContainerMemory, Waiting};
use crate::pod::probe::ProbeKind;
use crate::pod::runtime_port::{ContainerInfo, SandboxInfo};

fn pod(policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: vec![Container { name: "app".into(), image: Some("busybox:1".into()), ..Default::default() }],
            ..Default::default()
        }),
        status: None,
    }
}

fn attempt(n: u32, state: RunState, exit: Option<i32>) -> Attempt {
    let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().expect("time");
    Attempt {
        attempt: n,
        info: ContainerInfo {
            id: container_id("u1", "app", n),
            state,
            created_at: at,
            started_at: Some(at),
            finished_at: exit.map(|_| at),
            exit_code: exit,
            oom_killed: false,
            annotations: BTreeMap::new(),
        },
    }
}

fn memory() -> PodMemory {
    PodMemory {
        sandbox: Some(SandboxInfo { id: "u1".into(), netns_path: "/x".into(), ip: "10.88.0.2".parse().expect("ip") }),
        pod_ip: Some("10.88.0.2".parse().expect("ip")),
        ..PodMemory::default()
    }
}

fn status_of(pod: &Pod, attempts: Vec<Attempt>, memory: &PodMemory, previous: Option<&PodStatus>) -> PodStatus {
    let plan = PodPlan::from_pod(pod, false);
    let observed = Observed {
        containers: if attempts.is_empty() {
            Default::default()
        } else {
            [("app".to_string(), attempts)].into_iter().collect()
        },
        ..Observed::default()
    };
    compute_status(&StatusInput {
        pod,
        plan: &plan,
        observed: &observed,
        memory,
        host_ip: Some("192.168.1.10"),
        start_time: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().expect("time"),
        now: Instant::now(),
        wall_now: Utc::now(),
        previous,
    })
}

fn condition(status: &PodStatus, type_: &str) -> PodCondition {
    status.conditions.iter().flatten().find(|c| c.type_ == type_).cloned().expect("condition")
}

#[tokio::test(start_paused = true)]
async fn running_pod_is_ready() {
    let status = status_of(&pod("Always"), vec![attempt(0, RunState::Running, None)], &memory(), None);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.2"));
    assert_eq!(status.host_ips.as_ref().map(|v| v[0].ip.clone()).as_deref(), Some("192.168.1.10"));
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "PodReadyToStartContainers").status, "True");
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    assert!(container.ready);
    assert_eq!(container.container_id.as_deref(), Some("nodelet://u1-app-0"));
}

#[tokio::test(start_paused = true)]
async fn pull_error_is_pending_with_reason() {
    let mut m = memory();
    m.containers.insert(
        "app".into(),
        ContainerMemory {
            error: Some(Waiting {
                reason: "ErrImagePull".into(),
                message: "pull image busybox:1: connection refused".into(),
            }),
            ..Default::default()
        },
    );
    let status = status_of(&pod("Always"), vec![], &m, None);
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting =
        status.container_statuses.expect("statuses")[0].state.clone().and_then(|s| s.waiting).expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("ErrImagePull"));
    let ready = condition(&status_of(&pod("Always"), vec![], &m, None), "Ready");
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(ready.message.as_deref(), Some("containers with unready status: [app]"));
}

#[tokio::test(start_paused = true)]
async fn phases_after_exit_follow_restart_policy() {
    for (policy, code, phase, reason) in [
        ("Never", 0, "Succeeded", "Completed"),
        ("Never", 3, "Failed", "Error"),
        ("OnFailure", 0, "Succeeded", "Completed"),
    ] {
        let status = status_of(&pod(policy), vec![attempt(0, RunState::Stopped, Some(code))], &memory(), None);
        assert_eq!(status.phase.as_deref(), Some(phase), "{policy} {code}");
        let terminated = status.container_statuses.expect("statuses")[0]
            .state
            .clone()
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(terminated.exit_code, code);
        assert_eq!(terminated.reason.as_deref(), Some(reason));
    }
}

#[tokio::test(start_paused = true)]
async fn crash_loop_shows_backoff_and_last_state() {
    let mut m = memory();
    m.containers.insert(
        "app".into(),
        ContainerMemory { crash_streak: 1, exit_seen: Some((1, Instant::now())), ..Default::default() },
    );
    let status = status_of(
        &pod("Always"),
        vec![attempt(0, RunState::Stopped, Some(1)), attempt(1, RunState::Stopped, Some(1))],
        &m,
        None,
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let container = &status.container_statuses.expect("statuses")[0];
    let waiting = container.state.clone().and_then(|s| s.waiting).expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(waiting.message.as_deref(), Some("back-off 10s restarting failed container=app pod=web_default(u1)"));
    assert_eq!(container.restart_count, 1);
    assert!(container.last_state.as_ref().and_then(|s| s.terminated.as_ref()).is_some());
}

#[tokio::test(start_paused = true)]
async fn transition_times_stay_while_status_stays() {
    let p = pod("Always");
    let first = status_of(&p, vec![attempt(0, RunState::Running, None)], &memory(), None);
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    let second = status_of(&p, vec![attempt(0, RunState::Running, None)], &memory(), Some(&first));
    assert_eq!(first, second, "nothing changed, nothing to send");
    let third = status_of(&p, vec![attempt(0, RunState::Stopped, Some(1))], &memory(), Some(&second));
    assert_eq!(condition(&third, "Ready").status, "False");
    assert_eq!(
        condition(&third, "PodScheduled").last_transition_time,
        condition(&first, "PodScheduled").last_transition_time
    );
}

/// The pod with a readiness probe on "app", and a startup probe when `startup`.
fn probed_pod(startup: bool) -> Pod {
    let mut p = pod("Always");
    let container = &mut p.spec.as_mut().expect("spec").containers[0];
    let probe = || serde_json::from_value(serde_json::json!({"tcpSocket": {"port": 80}})).expect("probe");
    container.readiness_probe = Some(probe());
    if startup {
        container.startup_probe = Some(probe());
    }
    p
}

fn probed_status(pod: &Pod, verdicts: &[(ProbeKind, Verdict)]) -> PodStatus {
    let plan = PodPlan::from_pod(pod, false);
    let mut observed = Observed {
        containers: [("app".to_string(), vec![attempt(0, RunState::Running, None)])].into(),
        ..Observed::default()
    };
    for (kind, verdict) in verdicts {
        observed.probes.set("app", 0, *kind, *verdict);
    }
    compute_status(&StatusInput {
        pod,
        plan: &plan,
        observed: &observed,
        memory: &memory(),
        host_ip: None,
        start_time: Utc::now(),
        now: Instant::now(),
        wall_now: Utc::now(),
        previous: None,
    })
}

fn started_ready(status: &PodStatus) -> (Option<bool>, bool) {
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    (container.started, container.ready)
}

#[tokio::test(start_paused = true)]
async fn readiness_probe_drives_ready_and_the_conditions() {
    let p = probed_pod(false);
    let unready = probed_status(&p, &[]);
    assert_eq!(started_ready(&unready), (Some(true), false), "running, started, not ready before a success");
    assert_eq!(unready.phase.as_deref(), Some("Running"));
    for type_ in ["ContainersReady", "Ready"] {
        let c = condition(&unready, type_);
        assert_eq!(c.status, "False", "{type_}");
        assert_eq!(c.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(c.message.as_deref(), Some("containers with unready status: [app]"));
    }
    let ready = probed_status(&p, &[(ProbeKind::Readiness, Verdict::Success)]);
    assert_eq!(started_ready(&ready), (Some(true), true));
    assert_eq!(condition(&ready, "Ready").status, "True");
    let failing = probed_status(&p, &[(ProbeKind::Readiness, Verdict::Failure)]);
    assert_eq!(started_ready(&failing), (Some(true), false));
}

#[tokio::test(start_paused = true)]
async fn a_container_is_neither_started_nor_ready_until_its_startup_probe_passes() {
    let p = probed_pod(true);
    assert_eq!(started_ready(&probed_status(&p, &[])), (Some(false), false));
    let readiness_only = probed_status(&p, &[(ProbeKind::Readiness, Verdict::Success)]);
    assert_eq!(started_ready(&readiness_only), (Some(false), false), "startup gates readiness");
    let started = probed_status(&p, &[(ProbeKind::Startup, Verdict::Success)]);
    assert_eq!(started_ready(&started), (Some(true), false));
    let both = probed_status(&p, &[(ProbeKind::Startup, Verdict::Success), (ProbeKind::Readiness, Verdict::Success)]);
    assert_eq!(started_ready(&both), (Some(true), true));
}

fn init_pod(policy: &str) -> Pod {
    let mut p = pod(policy);
    p.spec.as_mut().expect("spec").init_containers =
        Some(vec![Container { name: "init".into(), image: Some("busybox:1".into()), ..Default::default() }]);
    p
}

fn status_with(pod: &Pod, observed: Observed) -> PodStatus {
    let plan = PodPlan::from_pod(pod, false);
    compute_status(&StatusInput {
        pod,
        plan: &plan,
        observed: &observed,
        memory: &memory(),
        host_ip: None,
        start_time: Utc::now(),
        now: Instant::now(),
        wall_now: Utc::now(),
        previous: None,
    })
}

fn init_attempt(state: RunState, exit: Option<i32>) -> Attempt {
    let mut a = attempt(0, state, exit);
    a.info.id = container_id("u1", "init", 0);
    a
}

#[tokio::test(start_paused = true)]
async fn init_containers_hold_the_pod_pending_then_show_completed() {
    let p = init_pod("Always");
    let running: Observed = Observed {
        containers: [("init".to_string(), vec![init_attempt(RunState::Running, None)])].into_iter().collect(),
        ..Observed::default()
    };
    let status = status_with(&p, running);
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let initialized = condition(&status, "Initialized");
    assert_eq!(
        (initialized.status.as_str(), initialized.reason.as_deref()),
        ("False", Some("ContainersNotInitialized"))
    );
    assert_eq!(initialized.message.as_deref(), Some("containers with incomplete status: [init]"));
    let app = &status.container_statuses.as_ref().expect("statuses")[0];
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("app waits");
    assert_eq!(waiting.reason.as_deref(), Some("PodInitializing"));
    let init = &status.init_container_statuses.as_ref().expect("init statuses")[0];
    assert!(init.state.as_ref().is_some_and(|s| s.running.is_some()) && !init.ready);

    let done: Observed = Observed {
        containers: [
            ("init".to_string(), vec![init_attempt(RunState::Stopped, Some(0))]),
            ("app".to_string(), vec![attempt(0, RunState::Running, None)]),
        ]
        .into_iter()
        .collect(),
        ..Observed::default()
    };
    let status = status_with(&p, done);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&status, "Initialized").status, "True");
    let init = &status.init_container_statuses.as_ref().expect("init statuses")[0];
    let terminated = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("completed");
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert!(init.ready, "a completed init container shows ready, as kubelet's");
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_fails_a_never_pod() {
    let failed: Observed = Observed {
        containers: [("init".to_string(), vec![init_attempt(RunState::Stopped, Some(3))])].into_iter().collect(),
        ..Observed::default()
    };
    assert_eq!(status_with(&init_pod("Never"), failed.clone()).phase.as_deref(), Some("Failed"));
    assert_eq!(status_with(&init_pod("Always"), failed).phase.as_deref(), Some("Pending"));
}
