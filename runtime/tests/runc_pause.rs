//! `pause` and `resume` through nodelet-runc on the real kernel's freezer, compared with
//! Debian's runc where the answers are user-visible.

mod container_support;
mod runc_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use container_support::*;
use runc_support::*;

/// The container's freezer.state (v1 hosts) or cgroup.freeze (pure v2).
fn freezer_file(env: &TestEnv, id: &str) -> PathBuf {
    let relative = env.cgroups_path(id).trim_start_matches('/').to_string();
    let v1 = Path::new("/sys/fs/cgroup/freezer").join(&relative).join("freezer.state");
    if Path::new("/sys/fs/cgroup/freezer").exists() {
        v1
    } else {
        Path::new("/sys/fs/cgroup").join(relative).join("cgroup.freeze")
    }
}

fn frozen(env: &TestEnv, id: &str) -> bool {
    let text = std::fs::read_to_string(freezer_file(env, id)).unwrap_or_default();
    matches!(text.trim(), "FROZEN" | "1")
}

/// A counter the container bumps as fast as it can, read from the host.
fn counter(rootfs: &Path) -> u64 {
    std::fs::read_to_string(rootfs.join("tmp/count")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("pause");
    let script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; done";
    let bundle = make_bundle(&env, &id, &["sh", "-c", script]);
    let rootfs = bundle.join("rootfs");
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    cli.ok(&["start", &id]);
    assert!(wait_until(Duration::from_secs(10), || counter(&rootfs) > 0), "the container never counted");

    cli.ok(&["pause", &id]);
    assert!(frozen(&env, &id), "{} is not frozen", freezer_file(&env, &id).display());
    assert_eq!(cli.state(&id)["status"], "paused");
    let listed = cli.ok(&["list"]);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.split_whitespace().nth(2) == Some("paused")), "{listed}");
    // Nothing runs while frozen: the counter stands still.
    let before = counter(&rootfs);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter(&rootfs), before, "the container ran while paused");

    let again = cli.run(&["pause", &id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("container not running"), "{}", again.stderr);
    let exec = cli.run(&["exec", &id, "true"]);
    assert_eq!(exec.code, 255);
    assert!(exec.stderr.contains("cannot exec in a paused container"), "{}", exec.stderr);
    let delete = cli.run(&["delete", &id]);
    assert_eq!(delete.code, 1);
    assert!(delete.stderr.contains("that is not stopped: paused"), "{}", delete.stderr);

    cli.ok(&["resume", &id]);
    assert!(!frozen(&env, &id));
    assert_eq!(cli.state(&id)["status"], "running");
    let moved = before;
    assert!(wait_until(Duration::from_secs(10), || counter(&rootfs) > moved), "the container did not run again");
    let not_paused = cli.run(&["resume", &id]);
    assert_eq!(not_paused.code, 1);
    assert!(not_paused.stderr.contains("container not paused"), "{}", not_paused.stderr);
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn paused_containers_can_be_killed_and_force_deleted() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let killed = unique("pausekill");
    let bundle = make_bundle(&env, &killed, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &killed]);
    cli.ok(&["pause", &killed]);
    cli.ok(&["kill", &killed, "KILL"]);
    cli.wait_status(&killed, "stopped");
    cli.ok(&["delete", &killed]);

    // A created container may be paused too; start then refuses, delete --force thaws and
    // removes everything.
    let deleted = unique("pausedelete");
    let bundle = make_bundle(&env, &deleted, &["sleep", "1000"]);
    cli.ok(&["create", "--bundle", path_str(&bundle), &deleted]);
    let pid = cli.state(&deleted)["pid"].as_i64().unwrap();
    cli.ok(&["pause", &deleted]);
    assert_eq!(cli.state(&deleted)["status"], "paused");
    let start = cli.run(&["start", &deleted]);
    assert_eq!(start.code, 1);
    assert!(start.stderr.contains("cannot start a container in the paused state"), "{}", start.stderr);
    cli.ok(&["delete", "--force", &deleted]);
    // Gone once its new parent (pid 1) has reaped it.
    let gone = wait_until(Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists());
    assert!(gone, "the paused init survived delete --force");
    assert!(!cli.root.join(&deleted).exists());
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(&deleted).exists()), "cgroup left behind");
}

#[test]
fn pause_answers_like_debian_runc() {
    assert!(Path::new(DEBIAN_RUNC).exists(), "{DEBIAN_RUNC} is missing: apt-get install -y runc");
    let env = TestEnv::new();
    let ours = Cli::new(&env, NODELET_RUNC, "nodelet");
    let theirs = Cli::new(&env, DEBIAN_RUNC, "runc");
    let mut answers = Vec::new();
    for cli in [&ours, &theirs] {
        let id = unique("pausecmp");
        let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
        cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
        let not_paused = cli.run(&["resume", &id]);
        cli.ok(&["pause", &id]);
        let paused = cli.state(&id)["status"].clone();
        let twice = cli.run(&["pause", &id]);
        cli.ok(&["resume", &id]);
        let resumed = cli.state(&id)["status"].clone();
        cli.ok(&["delete", "--force", &id]);
        answers.push((
            not_paused.code,
            not_paused.stderr.contains("container not paused"),
            paused,
            twice.code,
            twice.stderr.contains("container not running"),
            resumed,
        ));
    }
    assert_eq!(answers[0], answers[1], "nodelet-runc vs runc");
}
