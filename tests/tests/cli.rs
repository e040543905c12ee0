//! The `nodelet` binary's command line: version, help, doctor, and the failures a user meets
//! first (a missing or wrong kubeconfig, a missing manifest directory), each with a message
//! naming what is wrong and nothing left on the host.

use std::path::Path;
use std::process::{Command, Output};

use nodelet_tests::harness::{link_exists, nodelet_binary, require_root, unique_suffix};

fn nodelet(args: &[&str]) -> Output {
    Command::new(nodelet_binary())
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("running nodelet")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn version_names_the_binary_and_a_semver() {
    let out = nodelet(&["--version"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "--version failed: {stderr}");
    let line = stdout.trim();
    let version = line.strip_prefix("nodelet ").unwrap_or_else(|| panic!("--version printed {line:?}"));
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "not a semantic version: {line:?}");
    assert!(parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())), "{line:?}");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "the binary's version is the workspace's");
}

#[test]
fn help_lists_the_subcommands_but_not_the_hidden_monitor() {
    let out = nodelet(&["--help"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "--help failed: {stderr}");
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for expected in ["agent", "run", "doctor"] {
        assert!(commands.contains(&expected), "--help does not list {expected}: {commands:?}\n{stdout}");
    }
    assert!(!commands.contains(&"monitor"), "--help lists the hidden monitor:\n{stdout}");
    assert!(!stdout.contains("monitor"), "--help mentions the monitor:\n{stdout}");
}

#[test]
fn doctor_passes_on_this_host_and_names_its_checks() {
    require_root();
    let out = nodelet(&["doctor"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "doctor failed ({}):\n{stdout}\n{stderr}", out.status);
    let report = stdout.to_lowercase();
    for check in ["kernel", "cgroup mode", "btf", "overlay"] {
        assert!(report.contains(check), "the doctor report does not name {check}:\n{stdout}");
    }
    // The kernel line carries the running kernel's release.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    assert!(stdout.contains(release.trim()), "the report does not give the kernel release {release}:\n{stdout}");
    // This host is hybrid: cgroup2 at /sys/fs/cgroup/unified.
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        let mode = stdout.lines().find(|l| l.to_lowercase().starts_with("cgroup mode")).expect("cgroup mode line");
        assert!(mode.contains("hybrid"), "cgroup mode on a hybrid host: {mode}");
    }
}

#[test]
fn agent_without_kubeconfig_fails_clearly() {
    let out = nodelet(&["agent"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "agent without --kubeconfig succeeded:\n{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2: {stderr}");
    assert!(stderr.contains("--kubeconfig"), "the error does not name --kubeconfig:\n{stderr}");
    assert!(stderr.contains("required"), "the error does not say it is required:\n{stderr}");
}

#[test]
fn agent_with_a_missing_kubeconfig_names_the_file() {
    require_root();
    let work = tempfile::Builder::new().prefix("nodelet-cli").tempdir().expect("temp dir");
    let suffix = unique_suffix();
    let missing = work.path().join(format!("missing-{suffix}.kubeconfig"));
    let leftovers = Leftovers::new(work.path(), &suffix);
    let missing_path = missing.display().to_string();
    let node = format!("cli-{suffix}");
    let args = ["agent", "--kubeconfig", &missing_path, "--node-name", &node, "--pod-cidr", "10.245.20.0/24"];
    let out = leftovers.nodelet(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "agent with a missing kubeconfig:\n{stdout}{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "the error does not name the file:\n{stderr}");
    assert!(stderr.to_lowercase().contains("kubeconfig"), "the error does not say what the file is:\n{stderr}");
    leftovers.assert_none();
}

#[test]
fn agent_with_an_unsupported_kubelet_config_names_the_fields_and_the_file() {
    require_root();
    let work = tempfile::Builder::new().prefix("nodelet-cli").tempdir().expect("temp dir");
    let suffix = unique_suffix();
    let leftovers = Leftovers::new(work.path(), &suffix);
    let config = work.path().join("kubelet.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 20\n\
         enableServer: true\nmaxPod: 3\n",
    )
    .expect("write config");
    let config_path = config.display().to_string();
    let node = format!("cli-{suffix}");
    let args = ["agent", "--kubeconfig", "/nonexistent.kubeconfig", "--config", &config_path, "--node-name", &node];
    let out = leftovers.nodelet(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "agent with a bad --config:\n{stdout}{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "the error does not name the file:\n{stderr}");
    assert!(stderr.contains("enableServer: not supported by nodelet"), "{stderr}");
    assert!(stderr.contains("maxPod: unknown field"), "{stderr}");
    leftovers.assert_none();
}

#[test]
fn run_with_a_missing_directory_names_it_and_leaves_nothing() {
    require_root();
    let work = tempfile::Builder::new().prefix("nodelet-cli").tempdir().expect("temp dir");
    let suffix = unique_suffix();
    let leftovers = Leftovers::new(work.path(), &suffix);
    let node = format!("cli-{suffix}");
    let out = leftovers.nodelet(&["run", "/nonexistent", "--node-name", &node, "--pod-cidr", "10.245.21.0/24"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "run /nonexistent:\n{stdout}{stderr}");
    assert!(stderr.contains("/nonexistent"), "the error does not name the directory:\n{stderr}");
    leftovers.assert_none();
}

/// Where a nodelet started by a test would leave state, and a check that it left none.
struct Leftovers {
    root: std::path::PathBuf,
    netns: std::path::PathBuf,
    bridge: String,
}

impl Leftovers {
    fn new(work: &Path, suffix: &str) -> Leftovers {
        Leftovers { root: work.join("root"), netns: work.join("netns"), bridge: format!("nlt{suffix}") }
    }

    /// `nodelet ARGS` with its state, netns and bridge where this guard looks, and the
    /// host's firewall left alone.
    fn nodelet(&self, args: &[&str]) -> Output {
        let (root, netns) = (self.root.display().to_string(), self.netns.display().to_string());
        let isolation = ["--root-dir", &root, "--netns-dir", &netns, "--bridge", &self.bridge, "--masquerade=false"];
        nodelet(&[args, &isolation[..]].concat())
    }

    fn assert_none(&self) {
        assert!(!self.root.exists(), "{} was created", self.root.display());
        assert!(!self.netns.exists(), "{} was created", self.netns.display());
        assert!(!link_exists(&self.bridge), "bridge {} was created", self.bridge);
        let monitor = self.root.join("runtime/monitor.pid");
        assert!(!monitor.exists(), "a monitor was started ({})", monitor.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.display().to_string();
        let netns = self.netns.display().to_string();
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root) || m.starts_with(&netns))
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

impl Drop for Leftovers {
    /// Whatever a failing check found is removed all the same (the work dir goes with its
    /// guard; a bridge would not).
    fn drop(&mut self) {
        if link_exists(&self.bridge) {
            let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        }
    }
}
