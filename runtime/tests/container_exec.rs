//! The library's exec for the kubelet: `exec_sync` into the monitor's busybox containers, with
//! a timeout and captured output, called from tokio as the agent calls it.

mod container_support;

use std::time::{Duration, Instant};

use container_support::*;
use nodelet_runtime::cgroups::ContainerCgroup;
use nodelet_runtime::exec::{exec_sync, ExecError, ExecHelper, ExecOutput, EXEC_SYNC_OUTPUT_LIMIT, HELPER_COMMAND};
use nodelet_runtime::monitor::{ContainerStatus, Runtime};

fn helper() -> ExecHelper {
    ExecHelper::new(env!("CARGO_BIN_EXE_nodelet-runc"), [HELPER_COMMAND])
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A started `sleep` container of the test's monitor.
async fn running(env: &mut TestEnv, id: &str) -> Runtime {
    let runtime = env.runtime().await;
    let (bundle, spec) = env.bundle(id, &["sleep", "1000"]);
    write_bundle(&bundle, &spec);
    runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
    runtime.start(id).await.expect("start");
    runtime
}

/// Only the init is left in the container's cgroup.
fn assert_only_init(env: &TestEnv, id: &str, init: i32) {
    let cgroup = ContainerCgroup::on_host(&env.cgroups_path(id)).expect("cgroup");
    let only_init = || cgroup.pids().iter().map(|p| p.as_raw()).collect::<Vec<_>>() == vec![init];
    assert!(wait_until(Duration::from_secs(5), only_init), "left in {id}: {:?}", cgroup.pids());
}

async fn exec(runtime: &Runtime, id: &str, args: &[&str], timeout: Duration) -> ExecOutput {
    exec_sync(runtime, &helper(), id, &argv(args), timeout).await.expect("exec_sync")
}

#[tokio::test]
async fn exec_sync_captures_output_and_exit_code() {
    let mut env = TestEnv::new();
    let runtime = running(&mut env, "capture").await;
    let out =
        exec(&runtime, "capture", &["sh", "-c", "echo $PATH; pwd; echo oops >&2; exit 4"], Duration::from_secs(10))
            .await;
    assert_eq!(out.exit_code, 4);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin\n/\n", "the container's env and cwd");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert!(!out.timed_out && !out.truncated);

    // More than the limit: the first bytes are kept, the writer is never blocked.
    let out =
        exec(&runtime, "capture", &["sh", "-c", "yes | head -c 200000; echo done >&2"], Duration::from_secs(10)).await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), EXEC_SYNC_OUTPUT_LIMIT);
    assert!(out.stdout.starts_with(b"y\ny\n") && out.truncated);
    assert_eq!(out.stderr, b"done\n");

    // A background child holding stdout open does not hold up the answer.
    let started = Instant::now();
    let out = exec(&runtime, "capture", &["sh", "-c", "sleep 30 & echo bg"], Duration::from_secs(10)).await;
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"bg\n"[..]));
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for the pipe", started.elapsed());
    runtime.delete("capture", true).await.expect("delete"); // the background sleep with it
}

#[tokio::test]
async fn exec_sync_kills_the_process_at_the_timeout() {
    let mut env = TestEnv::new();
    let runtime = running(&mut env, "timeout").await;
    let init = runtime.state("timeout").await.unwrap().pid.expect("pid");
    let started = Instant::now();
    let out = exec(&runtime, "timeout", &["sh", "-c", "echo before; sleep 100"], Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137, "killed by SIGKILL");
    assert_eq!(out.stdout, b"before\n", "output up to the timeout is kept");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "took {took:?}");
    assert_only_init(&env, "timeout", init);
    runtime.delete("timeout", true).await.expect("delete");
}

/// The probe's own `tokio::time::timeout` (or a pod's deletion) drops the future: the
/// process goes with it, long before its own timeout.
#[tokio::test]
async fn dropping_exec_sync_kills_the_process() {
    let mut env = TestEnv::new();
    let runtime = running(&mut env, "dropped").await;
    let init = runtime.state("dropped").await.unwrap().pid.expect("pid");
    let (helper, sleep) = (helper(), argv(&["sleep", "100"]));
    let long = exec_sync(&runtime, &helper, "dropped", &sleep, Duration::from_secs(60));
    assert!(tokio::time::timeout(Duration::from_millis(500), long).await.is_err(), "sleep 100 still runs");
    assert_only_init(&env, "dropped", init);
    runtime.delete("dropped", true).await.expect("delete");
}

#[tokio::test]
async fn exec_sync_needs_a_running_container() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let err = exec_sync(&runtime, &helper(), "nope", &argv(&["true"]), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, ExecError::State { .. }), "{err:?}");

    let (bundle, spec) = env.bundle("created", &["sh", "-c", "exit 0"]);
    write_bundle(&bundle, &spec);
    runtime.create("created", &bundle, &env.log_path("created")).await.expect("create");
    let err = exec_sync(&runtime, &helper(), "created", &argv(&["true"]), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, ExecError::NotRunning { status: ContainerStatus::Created, .. }), "{err:?}");
    runtime.start("created").await.expect("start");
    wait_stopped(&runtime, "created").await;
    let err = exec_sync(&runtime, &helper(), "created", &argv(&["true"]), Duration::from_secs(5)).await.unwrap_err();
    let text = nodelet_runtime::error_chain(&err);
    assert!(text.contains("container created is stopped: cannot exec in it"), "{text}");
    runtime.delete("created", false).await.expect("delete");
}

#[tokio::test]
async fn exec_sync_reports_a_missing_executable_as_an_error() {
    let mut env = TestEnv::new();
    let runtime = running(&mut env, "noexe").await;
    let init = runtime.state("noexe").await.unwrap().pid.expect("pid");
    let err = exec_sync(&runtime, &helper(), "noexe", &argv(&["/no/such/probe"]), Duration::from_secs(5)).await;
    let text = nodelet_runtime::error_chain(&err.expect_err("no such executable"));
    assert!(text.contains("cannot exec in container noexe") && text.contains("/no/such/probe"), "{text}");
    assert_only_init(&env, "noexe", init);
    runtime.delete("noexe", true).await.expect("delete");
}

/// The agent's case: many probes at once from a multithreaded tokio runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_execs_from_a_multithreaded_runtime() {
    let mut env = TestEnv::new();
    let runtime = running(&mut env, "many").await;
    let init = runtime.state("many").await.unwrap().pid.expect("pid");
    let probes = (0..8).map(|i| {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let script = format!("echo probe-{i}; exit {i}");
            exec_sync(&runtime, &helper(), "many", &argv(&["sh", "-c", &script]), Duration::from_secs(20)).await
        })
    });
    for (i, probe) in futures::future::join_all(probes).await.into_iter().enumerate() {
        let out = probe.expect("task").expect("exec_sync");
        assert_eq!(out.exit_code, i as i32);
        assert_eq!(out.stdout, format!("probe-{i}\n").into_bytes());
    }
    assert_only_init(&env, "many", init);
    runtime.delete("many", true).await.expect("delete");
}
