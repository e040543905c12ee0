//! Read-only looks at the host (links, BPF attachments, processes) and a client that talks
//! to a Service from inside a test cgroup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What bpftool lists as attached to the cgroup ("" when nothing).
pub fn bpf_programs_on(cgroup: &Path) -> String {
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(cgroup).output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("ID"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => String::new(),
    }
}

/// True when a network interface of that name exists in the host's network namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// True when a process of that pid exists (zombies included).
pub fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `GET /` over HTTP/1.0 to `addr:port` with busybox nc, from a process placed in the
/// leaf cgroup `<parent>/<leaf>` (created for the call, removed after), so the Service hook
/// attached to `parent` applies to the connection. Returns what the server answered (empty
/// when the connection failed). Blocks for at most about 10 s.
pub fn http_get_from_cgroup(parent: &Path, leaf: &str, addr: &str, port: u16) -> String {
    let leaf_dir = LeafCgroup::create(parent.join(leaf));
    let script = format!(
        "echo $$ > {procs} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | exec busybox nc -w 2 {addr} {port}",
        procs = leaf_dir.0.join("cgroup.procs").display()
    );
    let out =
        Command::new("timeout").args(["10", "sh", "-c", &script]).stdin(Stdio::null()).stderr(Stdio::null()).output();
    drop(leaf_dir);
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(_) => String::new(),
    }
}

/// A leaf cgroup directory, removed on drop (its processes have exited by then).
struct LeafCgroup(PathBuf);

impl LeafCgroup {
    fn create(dir: PathBuf) -> LeafCgroup {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        LeafCgroup(dir)
    }
}

impl Drop for LeafCgroup {
    fn drop(&mut self) {
        // An exited process leaves its cgroup a moment after it is reaped; retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("cleanup: cannot remove cgroup {} (the test cgroup's guard will)", self.0.display());
    }
}
