use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `nodelet` binary built beside the test executable (target/<profile>/nodelet).
pub fn nodelet_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let binary = profile_dir.join("nodelet");
    assert!(
        binary.exists(),
        "{} is missing: build it first (cargo build -p nodelet-kubelet --bin nodelet)",
        binary.display()
    );
    binary
}

/// A `nodelet` process started by a test, and everything it leaves on the host: its monitor
/// process, mounts under its root and netns directories, its bridge. All of it is removed on
/// drop, whether the test passed or not.
pub struct NodeletProcess {
    child: Option<Child>,
    args: Vec<String>,
    pub root_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub bridge: String,
    pub log_path: PathBuf,
}

impl NodeletProcess {
    /// Starts `nodelet <args>` with `--root-dir`, `--netns-dir` and `--bridge` added; output
    /// goes to `<work>/nodelet.log` (appended across restarts).
    pub fn start(work: &Path, bridge: &str, args: &[String]) -> NodeletProcess {
        let mut process = NodeletProcess {
            child: None,
            args: args.to_vec(),
            root_dir: work.join("root"),
            netns_dir: work.join("netns"),
            bridge: bridge.to_string(),
            log_path: work.join("nodelet.log"),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log_path).expect("opening nodelet.log");
        let child = Command::new(nodelet_binary())
            .args(&self.args)
            .arg("--root-dir")
            .arg(&self.root_dir)
            .arg("--netns-dir")
            .arg(&self.netns_dir)
            .arg("--bridge")
            .arg(&self.bridge)
            // Tests run agents side by side: each takes a free port, never kubelet's 10248.
            .arg("--healthz-bind-address")
            .arg("127.0.0.1:0")
            // The agent pins the Service datapath in /sys/fs/bpf/nodelet by default; tests
            // must leave nothing on the host after they stop, so they never pin.
            .arg("--proxy-pin-dir")
            .arg("")
            // Nor may they touch the host's firewall or forwarding.
            .arg("--masquerade=false")
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting nodelet");
        self.child = Some(child);
    }

    /// Kill -9 and start again with the same arguments: an agent crash and restart.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status if it exited.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The pid of the container monitor this nodelet started, if one runs.
    pub fn monitor_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.root_dir.join("runtime/monitor.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The pid of the nodelet process, while it is started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every mount under the test's root or netns directory, the netns directory's own bind
    /// mount included.
    pub fn all_mounts(&self) -> Vec<String> {
        self.mounts_below()
    }

    /// The pid of a container's init process as the monitor's state file records it
    /// (`state.pid` in `<root>/runtime/containers/<id>/state.json`); `id` with or without
    /// the `nodelet://` scheme.
    pub fn container_pid(&self, id: &str) -> Option<i32> {
        let id = id.strip_prefix("nodelet://").unwrap_or(id);
        let path = self.root_dir.join("runtime/containers").join(id).join("state.json");
        let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        state.pointer("/state/pid")?.as_i64().and_then(|pid| i32::try_from(pid).ok())
    }

    /// Mounts still present under the test's root or netns directory: pods' root
    /// filesystems and network namespaces. The netns directory's own bind mount (made once,
    /// as iproute2 does) is not a pod's.
    pub fn leftover_mounts(&self) -> Vec<String> {
        self.mounts_below().into_iter().filter(|mnt| Path::new(mnt) != self.netns_dir).collect()
    }

    fn mounts_below(&self) -> Vec<String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|mnt| Path::new(mnt).starts_with(&self.root_dir) || Path::new(mnt).starts_with(&self.netns_dir))
            .map(str::to_string)
            .collect()
    }

    /// veth interfaces still attached to the test's bridge.
    pub fn leftover_veths(&self) -> Vec<String> {
        let out = Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|name| name.split('@').next().unwrap_or(name).to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for NodeletProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
        if let Some(pid) = self.monitor_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let mut mounts = self.mounts_below();
        // Deepest first: a rootfs mount under a pod directory before anything above it.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mnt in mounts {
            let _ = nix::mount::umount2(mnt.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for veth in self.leftover_veths() {
            let _ = Command::new("ip").args(["link", "del", &veth]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
    }
}
