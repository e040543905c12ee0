use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::events::EventRecorder;
use crate::pod::fake_runtime::FakeRuntime;
use crate::pod::ids::container_id;
use crate::pod::model::Removal;
use crate::pod::runtime_port::ContainerInfo;

/// A pod whose container "app" has exec probes "started", "live" and "ready", one a second.
fn pod() -> Pod {
    let probe = |command: &str| json!({"exec": {"command": [command]}, "periodSeconds": 1, "failureThreshold": 10});
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{
            "name": "app", "image": "busybox:1",
            "startupProbe": probe("started"), "livenessProbe": probe("live"), "readinessProbe": probe("ready")
        }]}
    }))
    .expect("pod")
}

fn observed(attempt: u32, state: RunState) -> Observed {
    let info = ContainerInfo {
        id: container_id("u1", "app", attempt),
        state,
        created_at: Utc::now(),
        started_at: Some(Utc::now()),
        finished_at: None,
        exit_code: None,
        oom_killed: false,
        annotations: BTreeMap::new(),
    };
    Observed { containers: [("app".to_string(), vec![Attempt { attempt, info }])].into(), ..Observed::default() }
}

struct Setup {
    runtime: Arc<FakeRuntime>,
    prober: PodProber,
    plan: PodPlan,
    ip: Option<Ipv4Addr>,
}

fn setup() -> Setup {
    let runtime = Arc::new(FakeRuntime::new());
    for command in ["started", "live", "ready"] {
        runtime.exec_exits(command, 0);
    }
    let pod = pod();
    let prober = PodProber::new(&pod, runtime.clone(), ProbeMetrics::default(), EventRecorder::log_only());
    Setup { runtime, prober, plan: PodPlan::from_pod(&pod, false), ip: Some("10.88.0.2".parse().expect("ip")) }
}

impl Setup {
    fn sync(&mut self, observed: &Observed) {
        self.prober.sync(&self.plan, observed, self.ip);
    }

    fn runs(&self, command: &str) -> usize {
        self.runtime.exec_calls(command).len()
    }
}

async fn pass(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    let mut s = setup();
    s.runtime.exec_exits("started", 1);
    let running = observed(0, RunState::Running);
    s.sync(&running);
    pass(2.5).await;
    assert_eq!((s.runs("started"), s.runs("live"), s.runs("ready")), (3, 0, 0));
    let changes = s.prober.changes();
    s.runtime.exec_exits("started", 0);
    pass(1.0).await;
    assert!(changes.has_changed().expect("open"), "the startup success wakes the worker");
    assert_eq!(s.prober.view().get("app", 0).startup, Some(Verdict::Success));
    // The worker syncs again on the wake-up: liveness and readiness start, startup is done.
    s.sync(&running);
    pass(1.5).await;
    assert_eq!(s.runs("started"), 4);
    assert_eq!((s.runs("live"), s.runs("ready")), (2, 2));
    let verdicts = s.prober.view().get("app", 0);
    assert_eq!((verdicts.liveness, verdicts.readiness), (Some(Verdict::Success), Some(Verdict::Success)));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_attempt_loses_its_probes_and_the_next_starts_afresh() {
    let mut s = setup();
    s.sync(&observed(0, RunState::Running));
    pass(0.5).await;
    s.sync(&observed(0, RunState::Running));
    pass(0.5).await;
    assert_eq!(s.prober.view().get("app", 0).readiness, Some(Verdict::Success));
    s.sync(&observed(0, RunState::Stopped));
    assert_eq!(s.prober.view().get("app", 0), Default::default(), "verdicts of a stopped attempt are dropped");
    let before = (s.runs("live"), s.runs("ready"));
    pass(5.0).await;
    assert_eq!((s.runs("live"), s.runs("ready")), before, "no probe of a stopped container");
    let started = s.runs("started");
    s.sync(&observed(1, RunState::Running));
    pass(0.5).await;
    assert_eq!(s.runs("started"), started + 1, "a new attempt starts with its startup probe");
    assert_eq!(s.prober.view().get("app", 1).startup, Some(Verdict::Success));
}

#[tokio::test(start_paused = true)]
async fn deletion_keeps_only_readiness_and_no_ip_means_no_probes() {
    let mut s = setup();
    let running = observed(0, RunState::Running);
    s.sync(&running);
    pass(0.5).await;
    s.sync(&running);
    pass(0.1).await;
    assert_eq!((s.runs("live"), s.runs("ready")), (1, 1));
    s.plan.removal = Some(Removal::Deleted { grace: Duration::from_secs(30) });
    s.sync(&running);
    pass(2.0).await;
    assert_eq!(s.runs("live"), 1, "liveness stops while the pod terminates");
    assert_eq!(s.runs("ready"), 3, "readiness goes on until the container stops");

    let mut s = setup();
    s.ip = None;
    s.sync(&running);
    pass(3.0).await;
    assert_eq!(s.runs("started"), 0);
}
