//! `update` through nodelet-runc: runc's flags and a LinuxResources JSON (file or stdin)
//! land in the live container's cgroup files, and the kernel applies them; compared with
//! Debian's runc for the same flags.

mod container_support;
mod runc_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use container_support::*;
use runc_support::*;

/// The container's file `file` of v1 controller `controller`.
fn v1_file(env: &TestEnv, id: &str, controller: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(env.cgroups_path(id).trim_start_matches('/')).join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

fn require_v1() {
    assert!(Path::new("/sys/fs/cgroup/memory").is_dir(), "these tests read cgroup v1 files");
}

fn blkio_weight_file(env: &TestEnv, id: &str) -> PathBuf {
    let bfq = v1_file(env, id, "blkio", "blkio.bfq.weight");
    if bfq.exists() {
        bfq
    } else {
        v1_file(env, id, "blkio", "blkio.weight")
    }
}

#[test]
fn flags_reach_the_live_cgroup_and_the_kernel() {
    require_v1();
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("update");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
    let pid = cli.state(&id)["pid"].as_i64().unwrap();
    cli.ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--memory-reservation",
        "32m",
        "--cpu-share",
        "512",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "20000",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--pids-limit",
        "20",
        "--blkio-weight",
        "300",
        &id,
    ]);
    let file = |c: &str, f: &str| read(&v1_file(&env, &id, c, f));
    assert_eq!(file("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(file("memory", "memory.memsw.limit_in_bytes"), (128u64 << 20).to_string());
    assert_eq!(file("memory", "memory.soft_limit_in_bytes"), (32u64 << 20).to_string());
    assert_eq!(file("cpu", "cpu.shares"), "512");
    assert_eq!(file("cpu", "cpu.cfs_period_us"), "50000");
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(file("cpuset", "cpuset.cpus"), "0");
    assert_eq!(file("cpuset", "cpuset.mems"), "0");
    assert_eq!(file("pids", "pids.max"), "20");
    assert_eq!(read(&blkio_weight_file(&env, &id)), "300");
    // The kernel applies the cpuset to the container's process.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    assert_eq!(allowed, "0");

    // Only what is given changes; memory up past the old memsw goes in the right order.
    cli.ok(&["update", "--memory", "256m", "--memory-swap", "-1", &id]);
    assert_eq!(file("memory", "memory.limit_in_bytes"), (256u64 << 20).to_string());
    assert_eq!(file("cpu", "cpu.shares"), "512");
    assert_eq!(file("pids", "pids.max"), "20");
    cli.ok(&["update", "--pids-limit", "-1", "--cpu-quota", "-1", &id]);
    assert_eq!(file("pids", "pids.max"), "max");
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "-1");
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn resources_json_from_a_file_or_stdin() {
    require_v1();
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("updatejson");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
    let json = env.dir.path().join("resources.json");
    std::fs::write(&json, r#"{"memory": {"limit": 33554432}, "cpu": {"shares": 256}, "pids": {"limit": 7}}"#).unwrap();
    // With -r the flags are ignored, as runc documents.
    cli.ok(&["update", "-r", path_str(&json), "--pids-limit", "99", &id]);
    let file = |c: &str, f: &str| read(&v1_file(&env, &id, c, f));
    assert_eq!(file("memory", "memory.limit_in_bytes"), "33554432");
    assert_eq!(file("cpu", "cpu.shares"), "256");
    assert_eq!(file("pids", "pids.max"), "7");

    let mut child = Command::new(NODELET_RUNC)
        .args(["--root", path_str(&cli.root), "update", "-r", "-", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(br#"{"blockIO": {"weight": 500}, "cpu": {"quota": 10000}}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&blkio_weight_file(&env, &id)), "500");
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "10000");
    assert_eq!(file("memory", "memory.limit_in_bytes"), "33554432", "untouched");

    std::fs::write(&json, "{not json").unwrap();
    let bad = cli.run(&["update", "-r", path_str(&json), &id]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("invalid resources in"), "{}", bad.stderr);
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn bad_values_and_stopped_containers_are_refused() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("updatebad");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
    let bad_size = cli.run(&["update", "--memory", "12x", &id]);
    assert_eq!(bad_size.code, 1);
    assert!(
        bad_size.stderr.contains("invalid value for memory: ") && bad_size.stderr.contains("12x"),
        "{}",
        bad_size.stderr
    );
    let bad_weight = cli.run(&["update", "--blkio-weight", "5", &id]);
    assert_eq!(bad_weight.code, 1);
    assert!(bad_weight.stderr.contains("invalid blkio weight 5"), "{}", bad_weight.stderr);
    let missing = cli.run(&["update", "--memory", "1m", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("container does not exist"), "{}", missing.stderr);
    cli.ok(&["kill", &id, "KILL"]);
    cli.wait_status(&id, "stopped");
    let stopped = cli.run(&["update", "--memory", "64m", &id]);
    assert_eq!(stopped.code, 1);
    assert!(stopped.stderr.contains("container not running"), "{}", stopped.stderr);
    cli.ok(&["delete", &id]);
}

#[test]
fn same_cgroup_values_as_debian_runc() {
    require_v1();
    assert!(Path::new(DEBIAN_RUNC).exists(), "{DEBIAN_RUNC} is missing: apt-get install -y runc");
    let env = TestEnv::new();
    let ours = Cli::new(&env, NODELET_RUNC, "nodelet");
    let theirs = Cli::new(&env, DEBIAN_RUNC, "runc");
    let mut values = Vec::new();
    for cli in [&ours, &theirs] {
        let id = unique("updatecmp");
        let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
        cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &id]);
        cli.ok(&["update", "--memory", "48m", "--cpu-share", "300", "--pids-limit", "11", "--cpu-quota", "30000", &id]);
        let file = |c: &str, f: &str| read(&v1_file(&env, &id, c, f));
        values.push([
            file("memory", "memory.limit_in_bytes"),
            file("cpu", "cpu.shares"),
            file("pids", "pids.max"),
            file("cpu", "cpu.cfs_quota_us"),
        ]);
        cli.ok(&["delete", "--force", &id]);
    }
    assert_eq!(values[0], values[1], "nodelet-runc vs runc");
}
