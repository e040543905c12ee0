//! Shared helpers for the container integration tests: a busybox bundle with a `runc spec`
//! like config.json, a monitor per test, and a guard that removes everything on drop.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nodelet_runtime::monitor::{ContainerState, ContainerStatus, Runtime};
use oci_spec::runtime::{
    LinuxBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec,
};
use rand::Rng;

pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "true", "false", "yes", "echo", "cat", "sleep", "hostname", "pwd", "ls", "env", "id", "mkdir", "chmod",
    "touch", "uname", "grep", "readlink", "sort", "tr", "wc", "head",
];

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "container tests need root (namespaces, mounts, cgroups): run them as root"
    );
    assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} is missing: apt-get install -y busybox-static");
}

pub fn random_suffix() -> String {
    let n: u32 = rand::thread_rng().gen();
    format!("{n:08x}")
}

/// One test's world: a runtime root, a cgroup parent "/nodelet-test-<random>", the monitors
/// it spawned. Drop kills what is left (containers, monitors) and removes the cgroups.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    monitors: Vec<i32>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        require_root();
        TestEnv {
            dir: tempfile::tempdir().expect("temp dir"),
            cgroup_parent: format!("/nodelet-test-{}", random_suffix()),
            monitors: Vec::new(),
        }
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// Connect to (or spawn) this test's monitor, remembering its pid for cleanup.
    pub async fn runtime(&mut self) -> Runtime {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_nodelet-monitor"));
        let args: Vec<OsString> = vec!["--root".into(), self.runtime_root().into()];
        let runtime = Runtime::connect_or_spawn(&self.runtime_root(), &exe, &args).await.expect("monitor answers");
        let pid = runtime.monitor_pid().expect("monitor pid file");
        if !self.monitors.contains(&pid) {
            self.monitors.push(pid);
        }
        runtime
    }

    /// Kill the monitor we spawned (by pid) and wait until it is gone.
    pub fn kill_monitor(&mut self, pid: i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists());
    }

    pub fn cgroups_path(&self, id: &str) -> String {
        format!("{}/pod/{id}", self.cgroup_parent)
    }

    /// A bundle dir with a busybox rootfs and a default spec running `args`.
    pub fn bundle(&self, id: &str, args: &[&str]) -> (PathBuf, Spec) {
        let bundle = self.dir.path().join("bundles").join(id);
        make_busybox_rootfs(&bundle.join("rootfs"));
        let spec = default_spec(args, &self.cgroups_path(id));
        (bundle, spec)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    /// Paths of this test's cgroup tree in every mounted hierarchy that still exist.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(self.cgroup_parent.trim_start_matches('/')))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Monitors first, so nothing restarts or re-parents behind our back.
        for pid in self.monitors.clone() {
            self.kill_monitor(pid);
        }
        // Every process left in the test's cgroups is a container of this test.
        for _ in 0..50 {
            let pids = pids_under(&self.leftover_cgroups());
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = nodelet_runtime::cgroups::remove_cgroup_tree(&self.cgroup_parent) {
            eprintln!("cleanup: cannot remove cgroups {}: {e}", self.cgroup_parent);
        }
    }
}

/// Each mounted cgroup hierarchy under /sys/fs/cgroup (or the root itself on pure v2).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("cgroup.procs").exists()).collect()
        })
        .unwrap_or_default()
}

fn pids_under(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in dirs {
        for entry in walk_dirs(dir) {
            if let Ok(text) = std::fs::read_to_string(entry.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    out
}

pub fn make_busybox_rootfs(rootfs: &Path) {
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc", "work"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("rootfs dir");
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
    }
}

/// Like `runc spec`: oci-spec's defaults (namespaces, mounts, capabilities, masked paths),
/// with our args, PATH and cgroup path.
pub fn default_spec(args: &[&str], cgroups_path: &str) -> Spec {
    let mut spec = Spec::default();
    let process = ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string(), "TERM=xterm".to_string()])
        .cwd("/")
        .capabilities(spec.process().as_ref().and_then(|p| p.capabilities().clone()).expect("default caps"))
        .rlimits(spec.process().as_ref().and_then(|p| p.rlimits().clone()).unwrap_or_default())
        .no_new_privileges(true)
        .build()
        .expect("process");
    spec.set_process(Some(process));
    spec.set_root(Some(RootBuilder::default().path("rootfs").readonly(false).build().expect("root")));
    let linux = spec.linux().clone().expect("default linux");
    let mut linux = linux;
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    spec.set_linux(Some(linux));
    spec
}

pub fn set_limits(spec: &mut Spec, memory: i64, pids: i64) {
    let resources = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(memory).build().expect("memory"))
        .pids(LinuxPidsBuilder::default().limit(pids).build().expect("pids"))
        .build()
        .expect("resources");
    let mut linux = spec.linux().clone().unwrap_or_else(|| LinuxBuilder::default().build().expect("linux"));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

pub fn write_bundle(bundle: &Path, spec: &Spec) {
    spec.save(bundle.join("config.json")).expect("write config.json");
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

pub async fn wait_stopped(runtime: &Runtime, id: &str) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = runtime.state(id).await.expect("state");
        if state.status == ContainerStatus::Stopped || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Create, start and wait for the end of a container running `args`; returns its state and log.
pub async fn run_to_end(
    env: &mut TestEnv,
    id: &str,
    spec_edit: impl FnOnce(&mut Spec),
    args: &[&str],
) -> (ContainerState, String) {
    let runtime = env.runtime().await;
    let (bundle, mut spec) = env.bundle(id, args);
    spec_edit(&mut spec);
    write_bundle(&bundle, &spec);
    let log = env.log_path(id);
    runtime.create(id, &bundle, &log).await.expect("create");
    runtime.start(id).await.expect("start");
    let state = wait_stopped(&runtime, id).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    runtime.delete(id, false).await.expect("delete stopped container");
    (state, text)
}

/// Create a container that must fail to be created; returns the error text, after checking
/// that the failed create left no container and no cgroup behind.
pub async fn create_error(env: &mut TestEnv, id: &str, spec_edit: impl FnOnce(&mut Spec)) -> String {
    let runtime = env.runtime().await;
    let (bundle, mut spec) = env.bundle(id, &["true"]);
    spec_edit(&mut spec);
    write_bundle(&bundle, &spec);
    let err = runtime.create(id, &bundle, &env.log_path(id)).await.expect_err("create must fail");
    assert!(runtime.state(id).await.is_err(), "a failed create left container {id}");
    let leaf = env.cgroups_path(id);
    for hierarchy in cgroup_hierarchies() {
        let path = hierarchy.join(leaf.trim_start_matches('/'));
        assert!(!path.exists(), "a failed create left cgroup {}", path.display());
    }
    nodelet_runtime::error_chain(&err)
}
