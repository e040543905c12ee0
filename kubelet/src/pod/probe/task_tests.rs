use std::time::Duration;

use tokio::task::JoinHandle;

use super::*;
use crate::events::EventRecorder;
use crate::pod::fake_runtime::FakeRuntime;
use crate::pod::probe::metrics::PodLabels;
use crate::pod::probe::spec::Handler;

/// An exec probe running `command` in attempt 0 of container "app", started now.
fn task(runtime: &Arc<FakeRuntime>, results: &Arc<ProbeResults>, kind: ProbeKind, command: &str) -> ProbeTask {
    ProbeTask {
        spec: ProbeSpec {
            handler: Handler::Exec { command: vec![command.to_string()] },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace: None,
        },
        series: ProbeSeries {
            pod: PodLabels { name: "web".into(), namespace: "default".into(), uid: "u1".into() },
            container: "app".into(),
            kind,
        },
        attempt: 0,
        target: Target { container_id: "u1-app-0".into(), pod_ip: "10.88.0.2".into() },
        started: Instant::now(),
        results: results.clone(),
        runtime: runtime.clone(),
        metrics: ProbeMetrics::default(),
        events: EventRecorder::log_only(),
        object: Default::default(),
    }
}

fn spawn(task: ProbeTask) -> (JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    (tokio::spawn(task.run(stop.clone())), stop)
}

fn verdict(results: &ProbeResults, kind: ProbeKind) -> Option<Verdict> {
    results.view().get("app", 0).get(kind)
}

/// Seconds since `start` of each run of `command`.
fn runs(runtime: &FakeRuntime, command: &str, start: Instant) -> Vec<u64> {
    runtime.exec_calls(command).iter().map(|at| at.duration_since(start).as_secs()).collect()
}

#[tokio::test(start_paused = true)]
async fn first_run_waits_the_initial_delay_then_one_per_period() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("check", 0);
    let start = Instant::now();
    let mut probe = task(&runtime, &results, ProbeKind::Readiness, "check");
    probe.spec.initial_delay = Duration::from_secs(5);
    probe.spec.period = Duration::from_secs(2);
    let (_task, _stop) = spawn(probe);
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(runs(&runtime, "check", start).is_empty(), "probed during the initial delay");
    assert_eq!(verdict(&results, ProbeKind::Readiness), None, "not ready before the first run");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs(&runtime, "check", start), [5, 7, 9]);
    assert_eq!(verdict(&results, ProbeKind::Readiness), Some(Verdict::Success));
}

#[tokio::test(start_paused = true)]
async fn the_initial_delay_counts_from_the_container_start() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("check", 0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let start = Instant::now();
    let mut probe = task(&runtime, &results, ProbeKind::Liveness, "check");
    probe.spec.initial_delay = Duration::from_secs(10);
    probe.started = start - Duration::from_secs(30);
    let (_task, _stop) = spawn(probe);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs(&runtime, "check", start), [0], "an adopted container is probed at once");
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_only_at_its_thresholds_and_keeps_probing() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("check", 1);
    let mut probe = task(&runtime, &results, ProbeKind::Readiness, "check");
    probe.spec.success_threshold = 2;
    let (task, _stop) = spawn(probe);
    // Runs at 0, 1 and 2 s: the third failure in a row decides.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(verdict(&results, ProbeKind::Readiness), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verdict(&results, ProbeKind::Readiness), Some(Verdict::Failure));
    runtime.exec_exits("check", 0);
    // Runs at 3 and 4 s: two successes in a row make it ready.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verdict(&results, ProbeKind::Readiness), Some(Verdict::Failure));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verdict(&results, ProbeKind::Readiness), Some(Verdict::Success));
    assert!(!task.is_finished(), "readiness probes as long as the container runs");
}

#[tokio::test(start_paused = true)]
async fn a_liveness_failure_is_published_once_and_ends_the_task() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("check", 0);
    let start = Instant::now();
    let mut probe = task(&runtime, &results, ProbeKind::Liveness, "check");
    let metrics = probe.metrics.clone();
    let series = probe.series.clone();
    probe.spec.failure_threshold = 2;
    let (task, _stop) = spawn(probe);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(verdict(&results, ProbeKind::Liveness), Some(Verdict::Success));
    runtime.exec_exits("check", 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(verdict(&results, ProbeKind::Liveness), Some(Verdict::Failure));
    assert!(task.is_finished());
    assert_eq!(runs(&runtime, "check", start), [0, 1, 2, 3], "no run after the verdict");
    assert_eq!((metrics.value(&series, "successful"), metrics.value(&series, "failed")), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn startup_ends_with_its_first_success() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("started", 1);
    let (task, _stop) = spawn(task(&runtime, &results, ProbeKind::Startup, "started"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    runtime.exec_exits("started", 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(verdict(&results, ProbeKind::Startup), Some(Verdict::Success));
    assert!(task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn exec_without_runtime_support_fails_the_probe() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    let (task, _stop) = spawn(task(&runtime, &results, ProbeKind::Liveness, "unsupported"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(verdict(&results, ProbeKind::Liveness), Some(Verdict::Failure));
    assert!(task.is_finished());
    let line = "Liveness probe failed: exec in a container is not supported by this runtime";
    assert!(!results.first_time("app", line), "the failure was logged (once)");
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_task_without_another_run() {
    let (runtime, results) = (Arc::new(FakeRuntime::new()), Arc::new(ProbeResults::default()));
    runtime.exec_exits("check", 0);
    let start = Instant::now();
    let (task, stop) = spawn(task(&runtime, &results, ProbeKind::Readiness, "check"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(task.is_finished());
    assert_eq!(runs(&runtime, "check", start), [0, 1]);
}
