//! OCI lifecycle hooks through nodelet-runc: each hook appends "<kind> <mount ns> <state on
//! stdin>" to a log, so the tests check the order, the state each one read, the namespace it
//! ran in, timeouts and the cleanup after a failed hook.

mod container_support;
mod runc_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use container_support::*;
use oci_spec::runtime::{Hook, HookBuilder, Hooks, HooksBuilder};
use runc_support::*;
use serde_json::Value;

/// One hook line: its kind, the mount namespace it ran in, the state it read.
struct Entry {
    kind: String,
    mnt_ns: String,
    state: Value,
}

/// A hook that logs to `log` (a path as the hook sees it) and then runs `then`.
fn logging_hook(kind: &str, log: &Path, then: &str) -> Hook {
    let script = format!("echo \"{kind} $(readlink /proc/self/ns/mnt) $(cat)\" >> {}; {then}", log.display());
    HookBuilder::default().path("/bin/sh").args(vec!["sh".to_string(), "-c".to_string(), script]).build().expect("hook")
}

fn read_log(log: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (kind, ns, json) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            Entry {
                kind: kind.to_string(),
                mnt_ns: ns.to_string(),
                state: serde_json::from_str(json).unwrap_or_else(|e| panic!("state {json:?}: {e}")),
            }
        })
        .collect()
}

fn kinds(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.kind.as_str()).collect()
}

fn own_mnt_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt").unwrap().display().to_string()
}

/// A bundle running `args` with `hooks`; returns it and the host path of the rootfs.
fn hooked_bundle(env: &TestEnv, id: &str, args: &[&str], hooks: Hooks) -> (PathBuf, PathBuf) {
    let (bundle, mut spec) = env.bundle(id, args);
    spec.set_annotations(Some([("org.example.test".to_string(), id.to_string())].into_iter().collect()));
    spec.set_hooks(Some(hooks));
    write_bundle(&bundle, &spec);
    (bundle.clone(), bundle.join("rootfs"))
}

/// Every hook of the spec, each logging (the startContainer one runs in the container, so it
/// logs to the rootfs's /hooks.log, the same file).
fn all_hooks(log: &Path) -> Hooks {
    #[allow(deprecated)]
    HooksBuilder::default()
        .prestart(vec![logging_hook("prestart", log, "")])
        .create_runtime(vec![logging_hook("createRuntime", log, "")])
        .create_container(vec![logging_hook("createContainer", log, "")])
        .start_container(vec![logging_hook("startContainer", Path::new("/hooks.log"), "")])
        .poststart(vec![logging_hook("poststart", log, "")])
        .poststop(vec![logging_hook("poststop", log, "")])
        .build()
        .expect("hooks")
}

#[test]
fn hooks_run_in_order_with_state_and_namespace() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("hooks");
    let bundle_dir = env.dir.path().join("bundles").join(&id);
    let log = bundle_dir.join("rootfs/hooks.log");
    let (bundle, _) = hooked_bundle(&env, &id, &["sleep", "1000"], all_hooks(&log));
    let bundle = bundle.canonicalize().unwrap();

    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let pid = cli.state(&id)["pid"].as_i64().expect("pid");
    let entries = read_log(&log);
    assert_eq!(kinds(&entries), ["prestart", "createRuntime", "createContainer"]);
    let host_ns = own_mnt_ns();
    let container_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap().display().to_string();
    assert_ne!(host_ns, container_ns);
    assert_eq!(entries[0].mnt_ns, host_ns, "prestart runs in the runtime's namespace");
    assert_eq!(entries[1].mnt_ns, host_ns, "createRuntime runs in the runtime's namespace");
    assert_eq!(entries[2].mnt_ns, container_ns, "createContainer runs in the container's namespace");

    cli.ok(&["start", &id]);
    let entries = read_log(&log);
    assert_eq!(kinds(&entries), ["prestart", "createRuntime", "createContainer", "startContainer", "poststart"]);
    assert_eq!(entries[3].mnt_ns, container_ns, "startContainer runs in the container");
    assert_eq!(entries[4].mnt_ns, host_ns, "poststart runs in the runtime's namespace");
    // poststart runs once the user process was exec'd.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");

    cli.ok(&["delete", "--force", &id]);
    let entries = read_log(&log);
    assert_eq!(kinds(&entries).last(), Some(&"poststop"));
    assert_eq!(entries[5].mnt_ns, host_ns);

    let statuses: Vec<&str> = entries.iter().map(|e| e.state["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["creating", "creating", "creating", "created", "running", "stopped"]);
    for e in &entries {
        assert_eq!(e.state["id"], id.as_str(), "{}", e.kind);
        assert_eq!(e.state["ociVersion"], "1.0.2-dev", "{}", e.kind);
        assert_eq!(e.state["bundle"], path_str(&bundle), "{}", e.kind);
        assert_eq!(e.state["annotations"]["org.example.test"], id.as_str(), "{}", e.kind);
        let expected_pid = if e.kind == "poststop" { Value::Null } else { Value::from(pid) };
        assert_eq!(e.state["pid"], expected_pid, "{}", e.kind);
    }
}

/// Nothing of a container whose create failed: no state, no cgroup (so no process in it).
fn assert_nothing_left(env: &TestEnv, cli: &Cli, id: &str) {
    assert!(!cli.root.join(id).exists(), "state dir left behind");
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(id).exists()), "cgroup left behind");
    assert_eq!(cli.run(&["state", id]).code, 1);
}

#[test]
fn hook_timeout_is_enforced_and_create_leaves_nothing() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("hooktimeout");
    let log = env.dir.path().join(format!("{id}.log"));
    let mut slow = logging_hook("createRuntime", &log, "sleep 60");
    slow.set_timeout(Some(1));
    let hooks = HooksBuilder::default()
        .create_runtime(vec![slow])
        .create_container(vec![logging_hook("createContainer", &log, "")])
        .poststop(vec![logging_hook("poststop", &log, "")])
        .build()
        .unwrap();
    let (bundle, _) = hooked_bundle(&env, &id, &["sleep", "1000"], hooks);
    let started = Instant::now();
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(started.elapsed() < Duration::from_secs(20), "the hook was not killed at its timeout");
    assert!(
        out.stderr.contains("error running createRuntime hook #0 (/bin/sh): hook ran past specified timeout of 1s"),
        "{}",
        out.stderr
    );
    assert_eq!(kinds(&read_log(&log)), ["createRuntime", "poststop"], "the failure goes on at poststop");
    assert_nothing_left(&env, &cli, &id);
}

#[test]
fn failing_create_container_hook_fails_create() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("hookfail");
    let log = env.dir.path().join(format!("{id}.log"));
    let hooks = HooksBuilder::default()
        .create_container(vec![logging_hook("createContainer", &log, "echo broken >&2; exit 3")])
        .build()
        .unwrap();
    let (bundle, _) = hooked_bundle(&env, &id, &["sleep", "1000"], hooks);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("error running createContainer hook #0 (/bin/sh): exit status 3"), "{}", out.stderr);
    assert!(out.stderr.contains("stderr: broken"), "{}", out.stderr);
    assert_eq!(kinds(&read_log(&log)), ["createContainer"]);
    assert_nothing_left(&env, &cli, &id);
}

#[test]
fn failing_start_container_hook_fails_start_and_poststart_failure_does_not() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("startfail");
    let hooks = HooksBuilder::default()
        .start_container(vec![logging_hook("startContainer", Path::new("/hooks.log"), "exit 4")])
        .build()
        .unwrap();
    let (bundle, rootfs) = hooked_bundle(&env, &id, &["sleep", "1000"], hooks);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let out = cli.run(&["start", &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("error running startContainer hook #0 (/bin/sh): exit status 4"), "{}", out.stderr);
    assert_eq!(kinds(&read_log(&rootfs.join("hooks.log"))), ["startContainer"]);
    cli.wait_status(&id, "stopped");
    cli.ok(&["delete", &id]);

    let id = unique("poststartfail");
    let log = env.dir.path().join(format!("{id}.log"));
    let hooks = HooksBuilder::default()
        .poststart(vec![logging_hook("poststart", &log, "exit 5"), logging_hook("poststart", &log, "")])
        .build()
        .unwrap();
    let (bundle, _) = hooked_bundle(&env, &id, &["sleep", "1000"], hooks);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let out = cli.run(&["start", &id]);
    assert_eq!(out.code, 0, "a poststart failure is only a warning: {}", out.stderr);
    assert!(out.stderr.contains("error running poststart hook #0"), "the warning is logged: {}", out.stderr);
    assert_eq!(kinds(&read_log(&log)), ["poststart", "poststart"], "the remaining hooks still run");
    assert_eq!(cli.state(&id)["status"], "running");
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn invalid_hooks_are_refused_before_anything_is_made() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("hookbad");
    let relative = HookBuilder::default().path("bin/true").build().unwrap();
    let hooks = HooksBuilder::default().poststop(vec![relative]).build().unwrap();
    let (bundle, _) = hooked_bundle(&env, &id, &["true"], hooks);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("poststop hook #0 (bin/true): the hook path must be absolute"), "{}", out.stderr);
    assert_nothing_left(&env, &cli, &id);
}
