use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::*;
use crate::pod::ids::*;
use crate::pod::model::{Attempt, ContainerKind, ContainerPlan, Observed, PodMemory, PodPlan, Removal, RestartPolicy};
use crate::pod::probe::ProbeKind;
use crate::pod::runtime_port::{ContainerInfo, ImageInfo, PullPolicy, RunState, SandboxInfo};

fn container(name: &str, kind: ContainerKind) -> ContainerPlan {
    ContainerPlan {
        name: name.into(),
        kind,
        image: "busybox:1".into(),
        pull_policy: PullPolicy::IfNotPresent,
        probes: Default::default(),
    }
}

fn plan(policy: RestartPolicy) -> PodPlan {
    PodPlan {
        uid: "u1".into(),
        restart_policy: policy,
        init_containers: Vec::new(),
        containers: vec![container("app", ContainerKind::App)],
        removal: None,
        termination_grace: Duration::from_secs(30),
        has_volumes: false,
    }
}

fn attempt(n: u32, state: RunState, exit: Option<i32>) -> Attempt {
    attempt_of("app", n, state, exit)
}

fn attempt_of(name: &str, n: u32, state: RunState, exit: Option<i32>) -> Attempt {
    let annotations: BTreeMap<String, String> = [
        (ANNOTATION_POD_UID, "u1".to_string()),
        (ANNOTATION_CONTAINER_NAME, name.to_string()),
        (ANNOTATION_RESTART_COUNT, n.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Attempt {
        attempt: n,
        info: ContainerInfo {
            id: container_id("u1", name, n),
            state,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: exit.map(|_| Utc::now()),
            exit_code: exit,
            oom_killed: false,
            annotations,
        },
    }
}

fn observed(attempts: Vec<Attempt>) -> Observed {
    Observed { containers: [("app".to_string(), attempts)].into_iter().collect(), ..Observed::default() }
}

/// A pod with init container "init", sidecar "proxy" and app container "app".
fn init_plan(policy: RestartPolicy) -> PodPlan {
    PodPlan {
        init_containers: vec![container("init", ContainerKind::Init), container("proxy", ContainerKind::Sidecar)],
        ..plan(policy)
    }
}

fn observed_of(attempts: Vec<Attempt>) -> Observed {
    let mut observed = Observed::default();
    for a in attempts {
        let name = a.info.annotations[ANNOTATION_CONTAINER_NAME].clone();
        observed.containers.entry(name).or_default().push(a);
    }
    observed
}

fn memory_with_images(names: &[&str]) -> PodMemory {
    let mut memory = ready_memory();
    for name in names {
        memory.container_mut(name).image = memory.container("app").image;
    }
    memory
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_in_order_before_the_app_containers() {
    let (p, now) = (init_plan(RestartPolicy::Always), Instant::now());
    let memory = memory_with_images(&["init", "proxy"]);
    let create = |name: &str| Action::CreateAndStart { container: name.into(), attempt: 0 };
    assert_eq!(decide(&p, &Observed::default(), &memory, now).actions, [create("init")]);
    let running = observed_of(vec![attempt_of("init", 0, RunState::Running, None)]);
    assert!(decide(&p, &running, &memory, now).actions.is_empty(), "the app waits for the init container");
    let done = vec![attempt_of("init", 0, RunState::Stopped, Some(0))];
    assert_eq!(decide(&p, &observed_of(done.clone()), &memory, now).actions, [create("proxy")]);
    let sidecar_up = [done, vec![attempt_of("proxy", 0, RunState::Running, None)]].concat();
    assert_eq!(decide(&p, &observed_of(sidecar_up.clone()), &memory, now).actions, [create("app")]);
    assert!(!all_finished(&p, &observed_of(sidecar_up)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_restarts_or_fails_the_pod() {
    let now = Instant::now();
    let mut memory = memory_with_images(&["init", "proxy"]);
    memory.container_mut("init").exit_seen = Some((0, now));
    let failed = observed_of(vec![attempt_of("init", 0, RunState::Stopped, Some(1))]);
    assert_eq!(
        decide(&init_plan(RestartPolicy::Always), &failed, &memory, now).actions,
        [Action::CreateAndStart { container: "init".into(), attempt: 1 }]
    );
    assert!(all_finished(&init_plan(RestartPolicy::Never), &failed), "Never: the pod fails");
    assert!(!all_finished(&init_plan(RestartPolicy::OnFailure), &failed));
}

#[tokio::test(start_paused = true)]
async fn sidecars_restart_always_and_stop_after_the_app_containers() {
    let now = Instant::now();
    let p = init_plan(RestartPolicy::Never);
    let mut memory = memory_with_images(&["init", "proxy"]);
    memory.container_mut("proxy").exit_seen = Some((0, now));
    let init_done = attempt_of("init", 0, RunState::Stopped, Some(0));
    // The sidecar crashed while the app runs: restarted, the app untouched.
    let crashed = observed_of(vec![
        init_done.clone(),
        attempt_of("proxy", 0, RunState::Stopped, Some(2)),
        attempt_of("app", 0, RunState::Running, None),
    ]);
    assert_eq!(
        decide(&p, &crashed, &memory, now).actions,
        [Action::CreateAndStart { container: "proxy".into(), attempt: 1 }]
    );
    // The app finished (Never): the sidecar gets SIGTERM, then the IP goes back.
    let app_done = observed_of(vec![
        init_done.clone(),
        attempt_of("proxy", 1, RunState::Running, None),
        attempt_of("app", 0, RunState::Stopped, Some(0)),
    ]);
    assert_eq!(
        decide(&p, &app_done, &memory, now).actions,
        [Action::Signal { container: "proxy".into(), attempt: 1, signal: Signal::Term }]
    );
    let all_stopped = observed_of(vec![
        init_done,
        attempt_of("proxy", 1, RunState::Stopped, Some(143)),
        attempt_of("app", 0, RunState::Stopped, Some(0)),
    ]);
    assert_eq!(decide(&p, &all_stopped, &memory, now).actions, [Action::ReleaseSandbox]);
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_sidecars_last() {
    let now = Instant::now();
    let mut p = init_plan(RestartPolicy::Always);
    p.removal = Some(Removal::Deleted { grace: Duration::from_secs(30) });
    let mut memory = memory_with_images(&["init", "proxy"]);
    let both = observed_of(vec![
        attempt_of("proxy", 0, RunState::Running, None),
        attempt_of("app", 0, RunState::Running, None),
    ]);
    let term = |name: &str| Action::Signal { container: name.into(), attempt: 0, signal: Signal::Term };
    assert_eq!(decide(&p, &both, &memory, now).actions, [term("app")]);
    memory.term_sent_at = Some(now);
    memory.container_mut("app").term_sent = Some(0);
    assert!(decide(&p, &both, &memory, now).actions.is_empty(), "the sidecar waits for the app");
    let app_gone = observed_of(vec![
        attempt_of("proxy", 0, RunState::Running, None),
        attempt_of("app", 0, RunState::Stopped, Some(0)),
    ]);
    let decision = decide(&p, &app_gone, &memory, now);
    assert_eq!(decision.actions, [term("proxy")]);
    assert_eq!(decision.wake_at, Some(now + Duration::from_secs(30)), "within the pod's one grace period");
}

fn ready_memory() -> PodMemory {
    let mut memory = PodMemory {
        sandbox: Some(SandboxInfo {
            id: "u1".into(),
            netns_path: "/run/nodelet/netns/u1".into(),
            ip: "10.88.0.2".parse().expect("ip"),
        }),
        ..PodMemory::default()
    };
    memory.container_mut("app").image = Some(ImageInfo {
        reference: "busybox:1".into(),
        image_id: "busybox@sha256:1".into(),
        config: Default::default(),
        size: 0,
    });
    memory
}

#[test]
fn backoff_doubles_from_ten_seconds_to_five_minutes() {
    let secs: Vec<u64> = (0..8).map(|s| backoff_delay(s).as_secs()).collect();
    assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
}

#[tokio::test(start_paused = true)]
async fn fresh_pod_creates_sandbox_then_pulls_then_creates() {
    let now = Instant::now();
    let p = plan(RestartPolicy::Always);
    let empty = Observed::default();
    assert_eq!(decide(&p, &empty, &PodMemory::default(), now).actions, [Action::SetupSandbox]);
    let mut memory = ready_memory();
    memory.container_mut("app").image = None;
    assert_eq!(decide(&p, &empty, &memory, now).actions, [Action::EnsureImage { container: "app".into() }]);
    assert_eq!(
        decide(&p, &empty, &ready_memory(), now).actions,
        [Action::CreateAndStart { container: "app".into(), attempt: 0 }]
    );
    let running = observed(vec![attempt(0, RunState::Running, None)]);
    assert_eq!(decide(&p, &running, &ready_memory(), now), Decision::default());
}

#[tokio::test(start_paused = true)]
async fn crash_loop_waits_out_the_backoff() {
    let p = plan(RestartPolicy::Always);
    let seen = Instant::now();
    let mut memory = ready_memory();
    let exited = observed(vec![attempt(0, RunState::Stopped, Some(1))]);
    memory.container_mut("app").exit_seen = Some((0, seen));
    // First exit: restart at once.
    assert_eq!(
        decide(&p, &exited, &memory, seen).actions,
        [Action::CreateAndStart { container: "app".into(), attempt: 1 }]
    );
    // Second exit: 10s of backoff.
    memory.container_mut("app").crash_streak = 1;
    let exited = observed(vec![attempt(0, RunState::Stopped, Some(1)), attempt(1, RunState::Stopped, Some(1))]);
    memory.container_mut("app").exit_seen = Some((1, seen));
    let decision = decide(&p, &exited, &memory, seen);
    assert!(decision.actions.is_empty());
    assert_eq!(decision.wake_at, Some(seen + Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        decide(&p, &exited, &memory, Instant::now()).actions,
        [Action::CreateAndStart { container: "app".into(), attempt: 2 }]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_policy_decides_after_exit() {
    let now = Instant::now();
    let mut memory = ready_memory();
    memory.container_mut("app").exit_seen = Some((0, now));
    for (policy, code, restarts) in [
        (RestartPolicy::Never, 1, false),
        (RestartPolicy::Never, 0, false),
        (RestartPolicy::OnFailure, 0, false),
        (RestartPolicy::OnFailure, 2, true),
        (RestartPolicy::Always, 0, true),
    ] {
        let exited = observed(vec![attempt(0, RunState::Stopped, Some(code))]);
        let actions = decide(&plan(policy), &exited, &memory, now).actions;
        let restarted = actions.contains(&Action::CreateAndStart { container: "app".into(), attempt: 1 });
        assert_eq!(restarted, restarts, "{policy:?} exit {code}");
        if !restarts {
            assert_eq!(actions, [Action::ReleaseSandbox], "{policy:?} exit {code}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn old_attempts_are_removed_keeping_two() {
    let now = Instant::now();
    let running = observed(vec![
        attempt(0, RunState::Stopped, Some(1)),
        attempt(1, RunState::Stopped, Some(1)),
        attempt(2, RunState::Running, None),
    ]);
    assert_eq!(
        decide(&plan(RestartPolicy::Always), &running, &ready_memory(), now).actions,
        [Action::RemoveAttempt { container: "app".into(), attempt: 0 }]
    );
}

#[tokio::test(start_paused = true)]
async fn deletion_terms_waits_kills_then_tears_down() {
    let mut p = plan(RestartPolicy::Always);
    p.removal = Some(Removal::Deleted { grace: Duration::from_secs(30) });
    let running = observed(vec![attempt(0, RunState::Running, None)]);
    let mut memory = ready_memory();
    let start = Instant::now();
    let term = Action::Signal { container: "app".into(), attempt: 0, signal: Signal::Term };
    let kill = Action::Signal { container: "app".into(), attempt: 0, signal: Signal::Kill };
    assert_eq!(decide(&p, &running, &memory, start).actions, [term]);
    memory.term_sent_at = Some(start);
    memory.container_mut("app").term_sent = Some(0);
    let waiting = decide(&p, &running, &memory, start + Duration::from_secs(5));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.wake_at, Some(start + Duration::from_secs(30)));
    assert_eq!(decide(&p, &running, &memory, start + Duration::from_secs(30)).actions, [kill]);
    let stopped = observed(vec![attempt(0, RunState::Stopped, Some(137))]);
    assert_eq!(decide(&p, &stopped, &memory, start).actions, [Action::TearDown]);
    memory.torn_down = true;
    assert!(decide(&p, &Observed::default(), &memory, start).done);
}

fn with_liveness(grace: Option<u64>) -> PodPlan {
    let mut p = plan(RestartPolicy::Always);
    p.termination_grace = Duration::from_secs(30);
    let container: k8s_openapi::api::core::v1::Container = serde_json::from_value(serde_json::json!({
        "name": "app",
        "livenessProbe": {"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": grace}
    }))
    .expect("container");
    p.containers[0].probes = crate::pod::probe::ContainerProbes::from_container(&container);
    p
}

#[tokio::test(start_paused = true)]
async fn failed_liveness_terms_then_kills_after_the_probes_grace() {
    let p = with_liveness(Some(5));
    let mut running = observed(vec![attempt(1, RunState::Running, None)]);
    let mut memory = ready_memory();
    let start = Instant::now();
    assert_eq!(decide(&p, &running, &memory, start), Decision::default(), "healthy: nothing to do");
    running.probes.set("app", 1, ProbeKind::Liveness, crate::pod::probe::Verdict::Failure);
    let stop =
        |signal| Action::StopUnhealthy { container: "app".into(), attempt: 1, probe: ProbeKind::Liveness, signal };
    let first = decide(&p, &running, &memory, start);
    assert_eq!(first.actions, [stop(Signal::Term)]);
    assert_eq!(first.wake_at, Some(start + Duration::from_secs(5)), "the probe's own grace");
    memory.container_mut("app").probe_kill =
        Some(crate::pod::model::ProbeKill { attempt: 1, term_sent_at: start, kill_sent: false });
    let waiting = decide(&p, &running, &memory, start + Duration::from_secs(2));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.wake_at, Some(start + Duration::from_secs(5)));
    assert_eq!(decide(&p, &running, &memory, start + Duration::from_secs(5)).actions, [stop(Signal::Kill)]);
    memory.container_mut("app").probe_kill.as_mut().expect("kill").kill_sent = true;
    assert_eq!(decide(&p, &running, &memory, start + Duration::from_secs(6)), Decision::default());
}

#[test]
fn kill_grace_is_the_probes_else_the_pods_and_at_least_two_seconds() {
    let grace = |p: &PodPlan| probe_kill_grace(p, &p.containers[0], ProbeKind::Liveness).as_secs();
    assert_eq!(grace(&with_liveness(Some(7))), 7);
    assert_eq!(grace(&with_liveness(None)), 30);
    assert_eq!(grace(&with_liveness(Some(0))), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_of_an_older_attempt_kills_nothing() {
    let p = with_liveness(None);
    let mut running = observed(vec![attempt(0, RunState::Stopped, Some(137)), attempt(1, RunState::Running, None)]);
    running.probes.set("app", 0, ProbeKind::Liveness, crate::pod::probe::Verdict::Failure);
    assert!(decide(&p, &running, &ready_memory(), Instant::now()).actions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn volumes_before_the_sandbox_with_retries_then_resync() {
    let mut p = plan(RestartPolicy::Always);
    p.has_volumes = true;
    let mut memory = PodMemory::default();
    let now = Instant::now();
    assert_eq!(decide(&p, &Observed::default(), &memory, now).actions, [Action::SetupVolumes]);
    // A failed mount waits for its retry, and nothing else starts meanwhile.
    memory.volume_retry_at = Some(now + Duration::from_secs(1));
    let waiting = decide(&p, &Observed::default(), &memory, now);
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.wake_at, Some(now + Duration::from_secs(1)));
    memory.volumes_ready = true;
    assert_eq!(decide(&p, &Observed::default(), &memory, now).actions, [Action::SetupSandbox]);

    let mut ready = ready_memory();
    ready.volumes_ready = true;
    ready.volume_resync_at = Some(now + Duration::from_secs(60));
    let running = observed(vec![attempt(0, RunState::Running, None)]);
    assert_eq!(decide(&p, &running, &ready, now).wake_at, Some(now + Duration::from_secs(60)));
    let later = now + Duration::from_secs(60);
    assert_eq!(decide(&p, &running, &ready, later).actions, [Action::SyncVolumes]);
}
