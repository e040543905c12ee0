use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::pod::admission::Allocatable;
use crate::pod::config::PodConfig;
use crate::pod::fake_runtime::FakeRuntime;
use crate::pod::ids::*;
use crate::pod::probe::metrics::{PodLabels, ProbeSeries};
use crate::pod::probe::{ProbeKind, ProbeMetrics};
use crate::pod::runtime_port::{ContainerInfo, PodRuntime, RunState, SandboxInfo};
use crate::pod::status_sink::{SinkError, StatusSink};

/// Keeps every reported status and writes its final deletes into the runtime's journal.
struct RecordingSink {
    runtime: Arc<FakeRuntime>,
    statuses: Mutex<Vec<PodStatus>>,
}

#[async_trait::async_trait]
impl StatusSink for RecordingSink {
    fn destination(&self, pod: &Pod) -> Option<String> {
        pod.metadata.uid.clone()
    }

    async fn report(&self, _pod: &Pod, status: &PodStatus) -> Result<(), SinkError> {
        self.statuses.lock().expect("lock").push(status.clone());
        Ok(())
    }

    async fn finish_deletion(&self, pod: &Pod) -> Result<(), SinkError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.runtime.note(format!("final delete {uid}"));
        Ok(())
    }
}

impl RecordingSink {
    fn last(&self) -> Option<PodStatus> {
        self.statuses.lock().expect("lock").last().cloned()
    }
}

struct Harness {
    runtime: Arc<FakeRuntime>,
    sink: Arc<RecordingSink>,
    probe_metrics: ProbeMetrics,
    manager: PodManager,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    harness_with(|_| {})
}

fn harness_with(configure: impl FnOnce(&mut PodConfig)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 1.1.1.1\n").expect("resolv");
    let mut cfg = PodConfig::new("node-1", dir.path().join("root"));
    cfg.dns.resolv_conf = Some(resolv);
    configure(&mut cfg);
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("busybox:1");
    let sink = Arc::new(RecordingSink { runtime: runtime.clone(), statuses: Mutex::new(Vec::new()) });
    let probe_metrics = ProbeMetrics::default();
    let manager = PodManager::new(
        WorkerContext {
            cfg: Arc::new(cfg),
            runtime: runtime.clone() as Arc<dyn PodRuntime>,
            sink: sink.clone() as Arc<dyn StatusSink>,
            probe_metrics: probe_metrics.clone(),
            events: crate::events::EventRecorder::log_only(),
            pull_secrets: Arc::new(crate::pod::pull_secrets::NoPullSecrets),
            objects: Arc::new(crate::pod::referenced_objects::NoObjects),
        },
        CancellationToken::new(),
    );
    Harness { runtime, sink, probe_metrics, manager, _dir: dir }
}

fn pod(uid: &str, policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
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

fn phase(status: &Option<PodStatus>) -> Option<String> {
    status.as_ref().and_then(|s| s.phase.clone())
}

fn restart_count(status: &Option<PodStatus>) -> i32 {
    status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(-1, |c| c[0].restart_count)
}

/// Let virtual time run until `done` holds (panics after ten virtual minutes).
async fn run_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn a_pod_beyond_allocatable_is_rejected_and_never_started() {
    let allocatable =
        Allocatable { cpu_millis: 1000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 30, pods: 1 };
    let mut h = harness_with(|cfg| cfg.allocatable = Some(allocatable));
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "Always")])).await;
    h.manager.handle(SourceEvent::Applied(pod("u2", "Always"))).await;
    run_until("u1 running", || phase(&h.sink.last()).as_deref() == Some("Running")).await;
    let statuses = h.sink.statuses.lock().expect("lock").clone();
    let rejected = statuses.iter().find(|s| s.reason.as_deref() == Some("OutOfpods")).expect("u2 rejected");
    assert_eq!(rejected.phase.as_deref(), Some("Failed"));
    assert_eq!(
        rejected.message.as_deref(),
        Some("Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1")
    );
    assert!(h.runtime.journal().iter().all(|entry| !entry.contains("u2")), "{:?}", h.runtime.journal());
    assert_eq!(h.manager.worker_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn never_pod_runs_to_completion_and_releases_its_ip() {
    let mut h = harness();
    h.runtime.exit_on_start("app", 0);
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "Never")])).await;
    run_until("Succeeded", || phase(&h.sink.last()).as_deref() == Some("Succeeded")).await;
    run_until("sandbox released", || h.runtime.sandbox_ids().is_empty()).await;
    assert_eq!(restart_count(&h.sink.last()), 0);
    assert_eq!(h.runtime.container_ids(), ["u1-app-0"], "kept for its logs");
    let journal = h.runtime.journal();
    assert_eq!(journal, ["setup_sandbox u1", "create u1-app-0", "start u1-app-0", "teardown_sandbox u1"]);
}

#[tokio::test(start_paused = true)]
async fn always_pod_crash_loops_with_growing_restart_count() {
    let mut h = harness();
    h.runtime.exit_on_start("app", 1);
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "Always")])).await;
    run_until("three restarts", || restart_count(&h.sink.last()) >= 3).await;
    let statuses = h.sink.statuses.lock().expect("lock").clone();
    let reasons: Vec<String> = statuses
        .iter()
        .filter_map(|s| s.container_statuses.as_ref())
        .filter_map(|c| c[0].state.clone()?.waiting?.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "CrashLoopBackOff"), "{reasons:?}");
    assert_eq!(phase(&h.sink.last()).as_deref(), Some("Running"));
    // Only the latest two attempts are kept.
    run_until("old attempts removed", || h.runtime.container_ids().len() <= 2).await;
}

#[tokio::test(start_paused = true)]
async fn on_failure_pod_restarts_until_success() {
    let mut h = harness();
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "OnFailure")])).await;
    run_until("running", || h.runtime.container("u1-app-0").is_some_and(|c| c.state == RunState::Running)).await;
    h.runtime.exit("u1-app-0", 2);
    run_until("restarted", || h.runtime.container("u1-app-1").is_some()).await;
    h.runtime.exit("u1-app-1", 0);
    run_until("Succeeded", || phase(&h.sink.last()).as_deref() == Some("Succeeded")).await;
    assert_eq!(restart_count(&h.sink.last()), 1);
}

#[tokio::test(start_paused = true)]
async fn missing_image_is_err_image_pull_then_backoff() {
    let mut h = harness();
    let mut p = pod("u1", "Always");
    p.spec.as_mut().expect("spec").containers[0].image = Some("127.0.0.1:5000/nope:1".into());
    h.runtime.break_registry("127.0.0.1:5000/nope:1");
    h.manager.handle(SourceEvent::Snapshot(vec![p])).await;
    let reason = |h: &Harness| {
        h.sink.last().and_then(|s| s.container_statuses).and_then(|c| c[0].state.clone()?.waiting?.reason)
    };
    run_until("ErrImagePull", || reason(&h).as_deref() == Some("ImagePullBackOff")).await;
    let statuses = h.sink.statuses.lock().expect("lock").clone();
    let first = statuses
        .iter()
        .filter_map(|s| s.container_statuses.as_ref()?[0].state.clone()?.waiting)
        .find(|w| w.reason.as_deref() != Some("ContainerCreating"))
        .expect("waiting");
    assert_eq!(first.reason.as_deref(), Some("ErrImagePull"));
    assert!(first.message.unwrap_or_default().contains("connection refused"));
    assert_eq!(phase(&h.sink.last()).as_deref(), Some("Pending"));
}

#[tokio::test(start_paused = true)]
async fn deletion_terms_waits_the_grace_kills_releases_then_deletes() {
    let mut h = harness();
    h.runtime.ignore_term();
    let p = pod("u1", "Always");
    h.manager.handle(SourceEvent::Snapshot(vec![p.clone()])).await;
    run_until("running", || phase(&h.sink.last()).as_deref() == Some("Running")).await;
    let mut deleting = p;
    deleting.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    let asked = tokio::time::Instant::now();
    h.manager.handle(SourceEvent::Applied(deleting)).await;
    run_until("final delete", || h.runtime.journal().iter().any(|l| l.starts_with("final delete"))).await;
    let journal = h.runtime.journal();
    let tail: Vec<&str> = journal.iter().skip_while(|l| !l.starts_with("kill")).map(String::as_str).collect();
    assert_eq!(
        tail,
        ["kill u1-app-0 15", "kill u1-app-0 9", "delete u1-app-0", "teardown_sandbox u1", "final delete u1"]
    );
    assert!(asked.elapsed() >= Duration::from_secs(5), "waited the grace period");
    assert_eq!(phase(&h.sink.last()).as_deref(), Some("Failed"));
}

#[tokio::test(start_paused = true)]
async fn adoption_keeps_running_containers_and_releases_orphans() {
    let mut h = harness();
    let annotations = |uid: &str| {
        [
            (ANNOTATION_POD_UID, uid.to_string()),
            (ANNOTATION_CONTAINER_NAME, "app".to_string()),
            (ANNOTATION_RESTART_COUNT, "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    for uid in ["u1", "orphan"] {
        h.runtime.insert_container(ContainerInfo {
            id: container_id(uid, "app", 0),
            state: RunState::Running,
            created_at: chrono::Utc::now(),
            started_at: Some(chrono::Utc::now()),
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            annotations: annotations(uid),
        });
        h.runtime.insert_sandbox(SandboxInfo {
            id: uid.to_string(),
            netns_path: format!("/run/nodelet/netns/{uid}").into(),
            ip: "10.88.0.9".parse().expect("ip"),
        });
    }
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "Always")])).await;
    run_until("Running", || phase(&h.sink.last()).as_deref() == Some("Running")).await;
    let journal = h.runtime.journal();
    assert!(!journal.iter().any(|l| l.starts_with("create") || l.starts_with("setup")), "{journal:?}");
    assert_eq!(h.runtime.container_ids(), ["u1-app-0"]);
    assert_eq!(h.runtime.sandbox_ids(), ["u1"]);
    assert_eq!(h.sink.last().and_then(|s| s.pod_ip).as_deref(), Some("10.88.0.9"));
}

#[tokio::test(start_paused = true)]
async fn pod_gone_from_source_is_released_without_final_delete() {
    let mut h = harness();
    h.manager.handle(SourceEvent::Snapshot(vec![pod("u1", "Always")])).await;
    run_until("running", || phase(&h.sink.last()).as_deref() == Some("Running")).await;
    h.manager.handle(SourceEvent::Snapshot(vec![])).await;
    run_until("released", || h.runtime.sandbox_ids().is_empty()).await;
    assert!(h.runtime.container_ids().is_empty());
    assert!(!h.runtime.journal().iter().any(|l| l.starts_with("final delete")));
    run_until("worker ended", || h.manager.worker_count() == 0).await;
}

/// `pod(uid, policy)` with `probe` as its container's probe of `kind`.
fn probed_pod(uid: &str, policy: &str, kind: &str, probe: serde_json::Value) -> Pod {
    let mut p = pod(uid, policy);
    let container = &mut p.spec.as_mut().expect("spec").containers[0];
    let probe = Some(serde_json::from_value(probe).expect("probe"));
    match kind {
        "liveness" => container.liveness_probe = probe,
        "readiness" => container.readiness_probe = probe,
        _ => container.startup_probe = probe,
    }
    p
}

fn first_container(status: &Option<PodStatus>) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    status.as_ref()?.container_statuses.as_ref()?.first().cloned()
}

fn ready_condition(status: &Option<PodStatus>) -> Option<(String, Option<String>)> {
    let ready = status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.clone();
    Some((ready.status, ready.reason))
}

#[tokio::test(start_paused = true)]
async fn failing_liveness_kills_after_the_grace_and_restarts_the_container() {
    let mut h = harness();
    h.runtime.ignore_term();
    h.runtime.exec_exits("alive", 1);
    let probe = serde_json::json!({
        "exec": {"command": ["alive"]}, "periodSeconds": 1, "failureThreshold": 2, "terminationGracePeriodSeconds": 3
    });
    h.manager.handle(SourceEvent::Snapshot(vec![probed_pod("u1", "Always", "liveness", probe)])).await;
    run_until("SIGTERM", || h.runtime.journal().contains(&"kill u1-app-0 15".to_string())).await;
    let termed = tokio::time::Instant::now();
    run_until("SIGKILL", || h.runtime.journal().contains(&"kill u1-app-0 9".to_string())).await;
    let grace = termed.elapsed();
    assert!(grace >= Duration::from_secs(2) && grace <= Duration::from_secs(4), "killed after {grace:?}");
    run_until("two restarts", || restart_count(&h.sink.last()) >= 2).await;
    let container = first_container(&h.sink.last()).expect("container status");
    let last = container.last_state.and_then(|s| s.terminated).expect("lastState terminated");
    assert_eq!(last.exit_code, 137);
    let pod = PodLabels { name: "pod-u1".into(), namespace: "default".into(), uid: "u1".into() };
    let series = ProbeSeries { pod, container: "app".into(), kind: ProbeKind::Liveness };
    assert!(h.probe_metrics.value(&series, "failed") >= 4, "two failures per attempt are counted");
}

#[tokio::test(start_paused = true)]
async fn readiness_probe_makes_the_pod_ready_and_unready() {
    let mut h = harness();
    h.runtime.exec_exits("ready", 1);
    let probe = serde_json::json!({"exec": {"command": ["ready"]}, "periodSeconds": 1, "failureThreshold": 1});
    h.manager.handle(SourceEvent::Snapshot(vec![probed_pod("u1", "Always", "readiness", probe)])).await;
    run_until("Running", || phase(&h.sink.last()).as_deref() == Some("Running")).await;
    let not_ready = Some(("False".to_string(), Some("ContainersNotReady".to_string())));
    assert_eq!(ready_condition(&h.sink.last()), not_ready);
    assert_eq!(first_container(&h.sink.last()).and_then(|c| c.started), Some(true));
    h.runtime.exec_exits("ready", 0);
    run_until("Ready", || ready_condition(&h.sink.last()).is_some_and(|(status, _)| status == "True")).await;
    assert!(first_container(&h.sink.last()).is_some_and(|c| c.ready));
    h.runtime.exec_exits("ready", 1);
    run_until("not Ready again", || ready_condition(&h.sink.last()) == not_ready).await;
    assert_eq!(restart_count(&h.sink.last()), 0, "readiness never restarts a container");
}

#[tokio::test(start_paused = true)]
async fn startup_failure_restarts_and_startup_gates_readiness() {
    let mut h = harness();
    let probe = serde_json::json!({"exec": {"command": ["started"]}, "periodSeconds": 1, "failureThreshold": 3});
    let mut p = probed_pod("u1", "Always", "startup", probe);
    p.spec.as_mut().expect("spec").containers[0].readiness_probe = Some(
        serde_json::from_value(serde_json::json!({"exec": {"command": ["ready"]}, "periodSeconds": 1})).expect("probe"),
    );
    h.runtime.exec_exits("started", 1);
    h.runtime.exec_exits("ready", 0);
    h.manager.handle(SourceEvent::Snapshot(vec![p])).await;
    run_until("a restart after the startup failure", || restart_count(&h.sink.last()) >= 1).await;
    assert!(h.runtime.exec_calls("ready").is_empty(), "readiness ran before the container started");
    h.runtime.exec_exits("started", 0);
    run_until("Ready", || ready_condition(&h.sink.last()).is_some_and(|(status, _)| status == "True")).await;
    assert_eq!(first_container(&h.sink.last()).and_then(|c| c.started), Some(true));
}
