//! The monitor end to end on the real kernel: run busybox containers and check what they see.

mod container_support;

use std::path::Path;
use std::time::Duration;

use container_support::*;
use nodelet_runtime::monitor::{ContainerStatus, RuntimeError};

#[tokio::test]
async fn true_exits_zero() {
    let mut env = TestEnv::new();
    let (state, _) = run_to_end(&mut env, "true-0", |_| {}, &["true"]).await;
    assert_eq!(state.status, ContainerStatus::Stopped);
    assert_eq!(state.exit_code, Some(0));
    assert!(state.started_at.is_some() && state.finished_at.is_some());
}

#[tokio::test]
async fn exit_code_is_reported() {
    let mut env = TestEnv::new();
    let (state, _) = run_to_end(&mut env, "exit-3", |_| {}, &["sh", "-c", "exit 3"]).await;
    assert_eq!(state.exit_code, Some(3));
    assert!(!state.oom_killed);
}

#[tokio::test]
async fn sigkill_gives_137() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "killed";
    let (bundle, spec) = env.bundle(id, &["sleep", "1000"]);
    write_bundle(&bundle, &spec);
    let created = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
    assert_eq!(created.status, ContainerStatus::Created);
    runtime.start(id).await.expect("start");
    assert_eq!(runtime.state(id).await.unwrap().status, ContainerStatus::Running);
    runtime.kill(id, libc::SIGKILL).await.expect("kill");
    let state = wait_stopped(&runtime, id).await;
    assert_eq!(state.exit_code, Some(137));
    // Killing a stopped container is not an error.
    runtime.kill(id, libc::SIGKILL).await.expect("kill stopped");
    runtime.delete(id, false).await.expect("delete");
}

#[tokio::test]
async fn process_sees_its_spec() {
    let mut env = TestEnv::new();
    let script = "echo hello; hostname; echo pid=$$; pwd; echo foo=$FOO; id -u; echo err >&2";
    let (state, log) = run_to_end(
        &mut env,
        "spec-view",
        |spec| {
            spec.set_hostname(Some("box-under-test".to_string()));
            let mut process = spec.process().clone().unwrap();
            process.set_cwd("/work".into());
            let mut env_vars = process.env().clone().unwrap();
            env_vars.push("FOO=bar".to_string());
            process.set_env(Some(env_vars));
            spec.set_process(Some(process));
        },
        &["sh", "-c", script],
    )
    .await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "hello");
    assert_eq!(lines[1], "box-under-test");
    assert_eq!(lines[2], "pid=1");
    assert_eq!(lines[3], "/work");
    assert_eq!(lines[4], "foo=bar");
    assert_eq!(lines[5], "0");
    assert_eq!(lines[6], "err");
}

#[tokio::test]
async fn missing_executable_fails_create() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "no-exe";
    let (bundle, spec) = env.bundle(id, &["does-not-exist"]);
    write_bundle(&bundle, &spec);
    let err = runtime.create(id, &bundle, &env.log_path(id)).await.unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
    assert!(matches!(runtime.state(id).await, Err(RuntimeError::NotFound { .. })));
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids{}", env.cgroups_path(id))).exists());
}

#[tokio::test]
async fn limits_and_unified_membership() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "limited";
    let (bundle, mut spec) = env.bundle(id, &["sleep", "1000"]);
    set_limits(&mut spec, 64 << 20, 20);
    write_bundle(&bundle, &spec);
    let state = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
    let pid = state.pid.expect("pid");
    let cg = env.cgroups_path(id);
    let read = |p: String| std::fs::read_to_string(p).expect("cgroup file");
    let mode = nodelet_runtime::cgroups::detect_mode(Path::new("/sys/fs/cgroup")).unwrap();
    match mode {
        nodelet_runtime::cgroups::CgroupMode::V2 => {
            assert_eq!(read(format!("/sys/fs/cgroup{cg}/memory.max")).trim(), "67108864");
            assert_eq!(read(format!("/sys/fs/cgroup{cg}/pids.max")).trim(), "20");
            assert!(read(format!("/sys/fs/cgroup{cg}/cgroup.procs")).contains(&pid.to_string()));
        }
        _ => {
            assert_eq!(read(format!("/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes")).trim(), "67108864");
            assert_eq!(read(format!("/sys/fs/cgroup/pids{cg}/pids.max")).trim(), "20");
            for controller in ["memory", "pids", "cpu"] {
                let procs = read(format!("/sys/fs/cgroup/{controller}{cg}/cgroup.procs"));
                assert!(procs.lines().any(|l| l == pid.to_string()), "{controller}: {procs}");
            }
            if mode == nodelet_runtime::cgroups::CgroupMode::Hybrid {
                let procs = read(format!("/sys/fs/cgroup/unified{cg}/cgroup.procs"));
                assert!(procs.lines().any(|l| l == pid.to_string()), "unified: {procs}");
            }
        }
    }
    runtime.delete(id, true).await.expect("delete created container");
}

#[tokio::test]
async fn kill_and_delete_leave_nothing() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "cleaned";
    let (bundle, spec) = env.bundle(id, &["sh", "-c", "sleep 1000 & sleep 1000"]);
    write_bundle(&bundle, &spec);
    let state = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
    let pid = state.pid.unwrap();
    runtime.start(id).await.expect("start");
    let err = runtime.delete(id, false).await.unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    runtime.delete(id, true).await.expect("force delete");
    assert!(matches!(runtime.state(id).await, Err(RuntimeError::NotFound { .. })));
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists()));
    let cg = env.cgroups_path(id);
    for hierarchy in cgroup_hierarchies() {
        let leaf = hierarchy.join(cg.trim_start_matches('/'));
        assert!(!leaf.exists(), "{} still exists", leaf.display());
    }
    assert!(!env.runtime_root().join("containers").join(id).exists());
    // The rootfs was never mounted on the host: nothing of it in our mount table.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(env.dir.path().to_str().unwrap()));
    nodelet_runtime::cgroups::remove_cgroup_tree(&env.cgroup_parent).expect("remove tree");
    assert!(env.leftover_cgroups().is_empty(), "{:?}", env.leftover_cgroups());
}

#[tokio::test]
async fn oom_kill_is_detected() {
    let mut env = TestEnv::new();
    // The shell (pid 1) buffers an endless command substitution until the OOM killer ends it.
    let (state, log) =
        run_to_end(&mut env, "oom", |spec| set_limits(spec, 16 << 20, 100), &["sh", "-c", "a=$(yes); echo survived"])
            .await;
    assert_eq!(state.exit_code, Some(137), "log: {log}");
    assert!(state.oom_killed);
}

#[tokio::test]
async fn only_stdio_reaches_the_process() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "fds";
    let (bundle, spec) = env.bundle(id, &["sleep", "1000"]);
    write_bundle(&bundle, &spec);
    let pid = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create").pid.unwrap();
    runtime.start(id).await.expect("start");
    // Wait for the exec: the process's command line becomes the user's.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
    }));
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    // CVE-2024-21626: no host fd survives into the container.
    assert_eq!(fds, ["0", "1", "2"]);
    let stdout = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(stdout, env.log_path(id));
    // The cwd is inside the container's root, not a host directory.
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), Path::new("/"));
    runtime.delete(id, true).await.expect("delete");
}

#[tokio::test]
async fn watchers_see_every_change_numbered_in_order() {
    use nodelet_runtime::monitor::ContainerEvent;

    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let start = runtime.watch().await.expect("watch");
    assert!(start.states.is_empty(), "{:?}", start.states);
    let (mut events, mut seq) = (start.events, start.seq);
    let id = "watched";
    let (bundle, spec) = env.bundle(id, &["sh", "-c", "exit 7"]);
    write_bundle(&bundle, &spec);

    // An answer carries the number of the change it made: a watcher that has read that far
    // has seen the change.
    runtime.create(id, &bundle, &env.log_path(id)).await.expect("create");
    match next_event(&mut events).await {
        Some(ContainerEvent::Changed { state, seq: n }) => {
            assert_eq!((state.id.as_str(), state.status), (id, ContainerStatus::Created));
            assert_eq!(n, runtime.answered_seq());
            assert!(n > seq);
            seq = n;
        }
        other => panic!("expected created, got {other:?}"),
    }
    runtime.start(id).await.expect("start");
    match next_event(&mut events).await {
        Some(ContainerEvent::Changed { state, seq: n }) => {
            assert_eq!(state.status, ContainerStatus::Running);
            assert!(n > seq);
            seq = n;
        }
        other => panic!("expected running, got {other:?}"),
    }
    // The exit is pushed, not polled for.
    match next_event(&mut events).await {
        Some(ContainerEvent::Changed { state, seq: n }) => {
            assert_eq!((state.status, state.exit_code), (ContainerStatus::Stopped, Some(7)));
            assert!(n > seq);
        }
        other => panic!("expected the exit, got {other:?}"),
    }
    runtime.delete(id, false).await.expect("delete");
    match next_event(&mut events).await {
        Some(ContainerEvent::Deleted { id: gone, seq: n }) => {
            assert_eq!(gone, id);
            assert_eq!(n, runtime.answered_seq());
        }
        other => panic!("expected the deletion, got {other:?}"),
    }

    // A second watcher starts from the list as it is now.
    let second = runtime.watch().await.expect("second watch");
    assert!(second.states.is_empty(), "{:?}", second.states);
    assert_eq!(second.seq, runtime.answered_seq());
}

async fn next_event(
    events: &mut nodelet_runtime::monitor::ContainerEvents,
) -> Option<nodelet_runtime::monitor::ContainerEvent> {
    tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("event in time").expect("read event")
}
