//! Helpers of the root-only datapath tests (this crate's and the proxy's): a cgroup of the test's own, loopback
//! backends, and client processes placed in that cgroup; for IPv6, a network namespace of the test's own holding
//! the backends and the clients.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::object::PROGRAMS;
use crate::{Backend, Frontend};

mod netns;
mod nodeport_topology;
mod sockets;

pub use netns::TestNetns;
pub use nodeport_topology::{
    ask, pod_ip, NodePortTopology, PodTcpServer, CLIENT_IP, EXTERNAL_INTERFACE, NODE_IP, NODE_IP_TO_REMOTE,
    OTHER_CLIENT_IP, POD_BRIDGE, REMOTE_INTERFACE, REMOTE_POD_IP,
};
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

/// A TCP server on loopback that answers every connection with one line: its port
/// ([`start`](Self::start)) or its address ([`start_on`](Self::start_on),
/// [`start_in`](Self::start_in)).
pub struct TcpBackend {
    pub port: u16,
    pub addr: SocketAddr,
    /// The listening socket (a second handle), shut down on drop to end the accept loop.
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBackend {
    /// On 127.0.0.1, answering with its port.
    pub fn start() -> TcpBackend {
        TcpBackend::serve(bind_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST)), |addr| addr.port().to_string())
    }

    /// On `ip` (any address of 127.0.0.0/8), answering with its `ip:port`: backends on
    /// several loopback addresses may share a port number.
    pub fn start_on(ip: Ipv4Addr) -> TcpBackend {
        TcpBackend::serve(bind_tcp(IpAddr::V4(ip)), |addr| addr.to_string())
    }

    /// On `ip` inside `netns` (::1, or an address given to its loopback), answering with
    /// its address (`[ip]:port` for IPv6).
    pub fn start_in(netns: &TestNetns, ip: IpAddr) -> TcpBackend {
        TcpBackend::serve(netns.run(|| bind_tcp(ip)), |addr| addr.to_string())
    }

    fn serve(listener: TcpListener, answer: fn(SocketAddr) -> String) -> TcpBackend {
        let addr = listener.local_addr().expect("backend addr");
        let line = answer(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let serving = listener.try_clone().expect("second handle of the backend listener");
        let thread = thread::spawn(move || {
            for stream in serving.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(mut stream) = stream {
                    let _ = writeln!(stream, "{line}");
                }
            }
        });
        TcpBackend { port: addr.port(), addr, listener, stop, thread: Some(thread) }
    }
}

fn bind_tcp(ip: IpAddr) -> TcpListener {
    TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind backend on {ip}: {e}"))
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes its blocked accept() with an error, so
        // the loop sees the flag (a connection to it would have to come from its netns).
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
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
    tcp_connects(Command::new("/bin/bash"), cgroup, target, count)
}

/// As [`tcp_connects_from`], from a bash process in `netns` (IPv6 targets too).
pub fn tcp_connects_in(cgroup: &TestCgroup, netns: &TestNetns, target: SocketAddr, count: usize) -> ClientRun {
    tcp_connects(netns.command("/bin/bash"), cgroup, target, count)
}

fn tcp_connects(bash: Command, cgroup: &TestCgroup, target: SocketAddr, count: usize) -> ClientRun {
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
    let output = run_bash(bash, &script);
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
    let output = run_bash(Command::new("/bin/bash"), &script);
    assert!(output.status.success(), "udp client: {output:?}");
}

fn run_bash(mut bash: Command, script: &str) -> Output {
    let output = bash.args(["-c", script]).output().expect("run bash client");
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

/// Pin at `<pin_dir>/lb4_services` a services map as the nodelet before session affinity
/// left it: values of 12 bytes (no flags, no timeout), holding `frontend` with `backends`
/// under revision 1.
pub fn pin_services_map_of_12_byte_values(pin_dir: &Path, frontend: Frontend, backends: &[Backend]) {
    use crate::layout::{Lb4Key, ServiceKey, MASTER_SLOT};
    use crate::object::{BPF_MAP_TYPE_HASH, SERVICES_MAP};

    fn ip(ip: IpAddr) -> Ipv4Addr {
        match ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => panic!("{ip}: IPv4 only"),
        }
    }
    fn key_bytes(key: &Lb4Key) -> Vec<u8> {
        let mut bytes = key.address.to_ne_bytes().to_vec();
        bytes.extend(key.dport.to_ne_bytes());
        bytes.extend([key.proto, key.pad]);
        bytes.extend(key.slot.to_ne_bytes());
        bytes.extend(key.rev.to_ne_bytes());
        bytes
    }
    // address, port, count, rev, pad: the old struct lb4_value.
    fn value_bytes(address: Ipv4Addr, port: u16, count: u16, rev: u16) -> Vec<u8> {
        let mut bytes = address.octets().to_vec();
        bytes.extend(port.to_be().to_ne_bytes());
        bytes.extend(count.to_ne_bytes());
        bytes.extend(rev.to_ne_bytes());
        bytes.extend(0u16.to_ne_bytes());
        bytes
    }

    let map = crate::sys::map_create(BPF_MAP_TYPE_HASH, 12, 12, 1024, SERVICES_MAP).expect("create a 12-byte map");
    let master = Lb4Key::new(ip(frontend.ip), &frontend, MASTER_SLOT, 0);
    let count = u16::try_from(backends.len()).expect("a few backends");
    map.update(&key_bytes(&master), &value_bytes(Ipv4Addr::UNSPECIFIED, 0, count, 1)).expect("write master");
    for (slot, backend) in (1..).zip(backends) {
        let value = value_bytes(ip(backend.ip), backend.port, 0, 0);
        map.update(&key_bytes(&master.with_slot(slot, 1)), &value).expect("write slot");
    }
    crate::sys::obj_pin(map.fd(), &pin_dir.join(SERVICES_MAP)).expect("pin the old map");
}

/// Pin at `<pin_dir>/<name>` an empty hash map with keys and values of the given sizes: a
/// map of a layout this nodelet does not know.
pub fn pin_hash_map_of_layout(pin_dir: &Path, name: &str, key_size: u32, value_size: u32) {
    let map = crate::sys::map_create(crate::object::BPF_MAP_TYPE_HASH, key_size, value_size, 16, name)
        .unwrap_or_else(|e| panic!("create a map of {key_size}-byte keys: {e}"));
    crate::sys::obj_pin(map.fd(), &pin_dir.join(name)).expect("pin the map");
}

/// Make `pin_dir` what a nodelet from before IPv6 left: the links of the IPv6 programs
/// detached and unpinned, the lb6 maps unpinned (the IPv4 part untouched).
pub fn unpin_ipv6_part(pin_dir: &Path) {
    use crate::object::{AFFINITY6_MAP, REVERSE6_MAP, SERVICES6_MAP};
    use std::os::fd::AsFd;

    for spec in PROGRAMS.iter().filter(|spec| spec.hook.ends_with('6')) {
        let path = pin_dir.join(spec.link_pin);
        let link = crate::pin::open_link(&path).expect("open the pinned link").expect("a pinned link");
        crate::sys::link_detach(link.fd.as_fd()).expect("detach the link");
        fs::remove_file(&path).expect("unpin the link");
    }
    for name in [SERVICES6_MAP, REVERSE6_MAP, AFFINITY6_MAP] {
        fs::remove_file(pin_dir.join(name)).expect("unpin the map");
    }
}

/// How many of the load-balancer's programs `bpftool cgroup show` lists for the cgroup.
pub fn attached_program_count(cgroup: &TestCgroup) -> usize {
    cgroup.attached_programs().lines().filter(|line| PROGRAM_NAMES.iter().any(|name| line.contains(name))).count()
}
