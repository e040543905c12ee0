//! Helpers of the root-only datapath tests (this crate's and the proxy's): a cgroup of the test's own, loopback
//! backends, and client processes placed in that cgroup.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::object::PROGRAMS;

mod sockets;

pub use sockets::{SocketClient, UdpEchoBackend};

/// The names of the load-balancer's programs, as `bpftool cgroup show` lists them.
pub const PROGRAM_NAMES: [&str; PROGRAMS.len()] = {
    let mut names = [""; PROGRAMS.len()];
    let mut index = 0;
    while index < PROGRAMS.len() {
        names[index] = PROGRAMS[index].name;
        index += 1;
    }
    names
};

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test loads BPF programs and creates cgroups: run it as root"
    );
}

/// The cgroup2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub fn cgroup2_root() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A cgroup2 directory `nodelet-test-<random>` that the test owns; on drop its
/// processes (the test's own children) are killed and it is removed.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create() -> TestCgroup {
        let path = cgroup2_root().join(format!("nodelet-test-{:08x}", rand::random::<u32>()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestCgroup { path }
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// `bpftool cgroup show` of this cgroup: empty when nothing is attached.
    pub fn attached_programs(&self) -> String {
        let output = Command::new("bpftool").args(["cgroup", "show"]).arg(&self.path).output().expect("run bpftool");
        assert!(output.status.success(), "bpftool: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.procs_file()) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove test cgroup {}", self.path.display());
    }
}

/// A TCP server on 127.0.0.1 that answers every connection with its port.
pub struct TcpBackend {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBackend {
    pub fn start() -> TcpBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind backend");
        let port = listener.local_addr().expect("backend addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(mut stream) = stream {
                    let _ = writeln!(stream, "{port}");
                }
            }
        });
        TcpBackend { port, stop, thread: Some(thread) }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket on 127.0.0.1 that reports what it receives.
pub struct UdpBackend {
    pub socket: UdpSocket,
    pub port: u16,
}

impl UdpBackend {
    pub fn start() -> UdpBackend {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp backend");
        socket.set_read_timeout(Some(Duration::from_millis(200))).expect("udp timeout");
        let port = socket.local_addr().expect("udp addr").port();
        UdpBackend { socket, port }
    }

    /// Datagrams received until a read times out.
    pub fn received(&self) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = self.socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
        got
    }
}

/// Result of a client run in the test cgroup: one line per TCP connect, the
/// port the backend answered or `refused`.
pub struct ClientRun {
    pub answers: Vec<String>,
    pub stderr: String,
}

/// Connect `count` times to `target` over TCP from a bash process moved into
/// `cgroup` first (bash's /dev/tcp does a plain connect()).
pub fn tcp_connects_from(cgroup: &TestCgroup, target: SocketAddr, count: usize) -> ClientRun {
    let script = format!(
        "echo $$ > {procs} || exit 99
         for i in $(seq {count}); do
           if exec 3<>/dev/tcp/{ip}/{port}; then
             read -r line <&3; echo \"$line\"; exec 3<&-
           else
             echo refused
           fi
         done",
        procs = cgroup.procs_file().display(),
        ip = target.ip(),
        port = target.port(),
    );
    let output = run_bash(&script);
    ClientRun {
        answers: String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Send `count` datagrams to `target` from a bash process in `cgroup`.
pub fn udp_sends_from(cgroup: &TestCgroup, target: SocketAddr, count: usize) {
    let script = format!(
        "echo $$ > {procs} || exit 99
         for i in $(seq {count}); do echo \"dgram $i\" > /dev/udp/{ip}/{port}; done",
        procs = cgroup.procs_file().display(),
        ip = target.ip(),
        port = target.port(),
    );
    let output = run_bash(&script);
    assert!(output.status.success(), "udp client: {output:?}");
}

fn run_bash(script: &str) -> Output {
    let output = Command::new("/bin/bash").args(["-c", script]).output().expect("run bash client");
    assert_ne!(output.status.code(), Some(99), "could not join the test cgroup: {output:?}");
    output
}

/// Detaches and unpins the load-balancer pinned in a directory when dropped, even when an
/// assertion fails first.
pub struct UnpinOnDrop<'a>(pub &'a Path);

impl Drop for UnpinOnDrop<'_> {
    fn drop(&mut self) {
        let _ = crate::SockLb::unpin_and_detach(self.0);
    }
}

/// A bpffs instance of the test's own, mounted on a fresh directory under the temp dir;
/// unmounted (dropping whatever is still pinned in it) and removed on drop.
pub struct TestBpffs {
    pub path: PathBuf,
}

impl TestBpffs {
    pub fn mount() -> TestBpffs {
        use nix::mount::{mount, MsFlags};
        let path = std::env::temp_dir().join(format!("nodelet-test-bpffs-{:08x}", rand::random::<u32>()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        if let Err(e) = mount(Some("bpffs"), &path, Some("bpf"), MsFlags::empty(), None::<&str>) {
            let _ = fs::remove_dir(&path);
            panic!("mount bpffs on {}: {e}", path.display());
        }
        TestBpffs { path }
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("could not unmount test bpffs {}: {e}", self.path.display());
            return;
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// How many of the load-balancer's programs `bpftool cgroup show` lists for the cgroup.
pub fn attached_program_count(cgroup: &TestCgroup) -> usize {
    cgroup.attached_programs().lines().filter(|line| PROGRAM_NAMES.iter().any(|name| line.contains(name))).count()
}
