//! Containers outlive their clients and their monitor.

mod container_support;

use std::time::Duration;

use container_support::*;
use nodelet_runtime::monitor::{ContainerStatus, Runtime};

#[tokio::test]
async fn agent_restart_keeps_containers_running() {
    let mut env = TestEnv::new();
    let id = "survivor";
    let (bundle, spec) = env.bundle(id, &["sleep", "1000"]);
    write_bundle(&bundle, &spec);
    let pid = {
        let runtime = env.runtime().await;
        let state = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
        runtime.start(id).await.expect("start");
        state.pid.unwrap()
    }; // the client is gone
    let runtime = Runtime::connect(&env.runtime_root()).await.expect("reconnect");
    let state = runtime.state(id).await.expect("state");
    assert_eq!(state.status, ContainerStatus::Running);
    assert_eq!(state.pid, Some(pid));
    assert_eq!(runtime.list().await.unwrap().len(), 1);
    runtime.delete(id, true).await.expect("delete");
}

#[tokio::test]
async fn monitor_restart_adopts_running_container() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let first_monitor = runtime.monitor_pid().unwrap();
    let id = "adopted";
    let (bundle, spec) = env.bundle(id, &["sleep", "1000"]);
    write_bundle(&bundle, &spec);
    let pid = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create").pid.unwrap();
    runtime.start(id).await.expect("start");
    // A created-but-not-started container also survives and can still be started.
    let (bundle2, spec2) = env.bundle("adopted-created", &["sleep", "1000"]);
    write_bundle(&bundle2, &spec2);
    runtime.create("adopted-created", &bundle2, &env.log_path("adopted-created")).await.expect("create second");

    env.kill_monitor(first_monitor);
    let runtime = env.runtime().await;
    assert_ne!(runtime.monitor_pid().unwrap(), first_monitor);
    let state = runtime.state(id).await.expect("state after restart");
    assert_eq!(state.status, ContainerStatus::Running);
    assert_eq!(state.pid, Some(pid));

    runtime.start("adopted-created").await.expect("start after restart");
    assert_eq!(runtime.state("adopted-created").await.unwrap().status, ContainerStatus::Running);

    // Not our child any more: its exit status is unknowable, reported as 255.
    runtime.kill(id, libc::SIGKILL).await.expect("kill");
    let state = wait_stopped(&runtime, id).await;
    assert_eq!(state.status, ContainerStatus::Stopped);
    assert_eq!(state.exit_code, Some(255));
    runtime.delete(id, false).await.expect("delete");
    runtime.delete("adopted-created", true).await.expect("delete second");
    assert!(wait_until(Duration::from_secs(5), || { !std::path::Path::new(&format!("/proc/{pid}")).exists() }));
}
