//! A node, a client host, pods and a remote pod, each a network namespace of the test's
//! own, wired as a nodelet node is: the client reaches the node over a veth pair (`ext0`
//! on the node, the node's external interface), and each pod is a veth whose host end is a
//! port of the node's bridge `nodelet0`, the pod's gateway. The remote pod stands for an
//! endpoint on another node: the node reaches it over a second external interface,
//! `ext1`. Nothing here touches the host's
//! interfaces; deleting the namespaces (on drop) deletes every interface with them.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::time::TimeVal;

use super::TestNetns;

/// The node's address on its external interface: NodePorts are reached there.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// The client's address, and a second one on the same interface.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 2);
pub const OTHER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 3);
/// The node's external interface and its pod bridge (the pods' gateway, 10.91.0.1).
pub const EXTERNAL_INTERFACE: &str = "ext0";
pub const POD_BRIDGE: &str = "nodelet0";
const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);
/// The node's interface towards the remote pod, the node's address there, and the remote
/// pod's address.
pub const REMOTE_INTERFACE: &str = "ext1";
pub const NODE_IP_TO_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 1);
pub const REMOTE_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 2);

/// The address of the n-th pod.
pub fn pod_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 91, 0, 2 + u8::try_from(n).expect("fewer than 250 pods"))
}

/// Field order is drop order: pods, then the node, then the client.
pub struct NodePortTopology {
    pub pods: Vec<TestNetns>,
    pub remote: TestNetns,
    pub node: TestNetns,
    pub client: TestNetns,
}

impl NodePortTopology {
    /// The client, the node (IPv4 forwarding on, as nodelet sets it) and `pods` pods.
    pub fn create(pods: usize) -> NodePortTopology {
        let topology = NodePortTopology {
            pods: (0..pods).map(|_| TestNetns::create()).collect(),
            remote: TestNetns::create(),
            node: TestNetns::create(),
            client: TestNetns::create(),
        };
        let (node, client) = (&topology.node.name, &topology.client.name);
        ip(&[
            "link",
            "add",
            EXTERNAL_INTERFACE,
            "netns",
            node,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client,
        ]);
        ip(&["-n", node, "addr", "add", &format!("{NODE_IP}/24"), "dev", EXTERNAL_INTERFACE]);
        ip(&["-n", node, "link", "set", EXTERNAL_INTERFACE, "up"]);
        for address in [CLIENT_IP, OTHER_CLIENT_IP] {
            ip(&["-n", client, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        }
        ip(&["-n", client, "link", "set", "eth0", "up"]);
        ip(&["-n", node, "link", "add", POD_BRIDGE, "type", "bridge"]);
        ip(&["-n", node, "addr", "add", &format!("{BRIDGE_IP}/24"), "dev", POD_BRIDGE]);
        ip(&["-n", node, "link", "set", POD_BRIDGE, "up"]);
        for (n, pod) in topology.pods.iter().enumerate() {
            let host_end = format!("vethpod{n}");
            ip(&["link", "add", &host_end, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
            ip(&["-n", node, "link", "set", &host_end, "master", POD_BRIDGE, "up"]);
            ip(&["-n", &pod.name, "addr", "add", &format!("{}/24", pod_ip(n)), "dev", "eth0"]);
            ip(&["-n", &pod.name, "link", "set", "eth0", "up"]);
            ip(&["-n", &pod.name, "route", "add", "default", "via", &BRIDGE_IP.to_string()]);
        }
        let remote = &topology.remote.name;
        ip(&["link", "add", REMOTE_INTERFACE, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", remote]);
        ip(&["-n", node, "addr", "add", &format!("{NODE_IP_TO_REMOTE}/24"), "dev", REMOTE_INTERFACE]);
        ip(&["-n", node, "link", "set", REMOTE_INTERFACE, "up"]);
        ip(&["-n", remote, "addr", "add", &format!("{REMOTE_POD_IP}/24"), "dev", "eth0"]);
        ip(&["-n", remote, "link", "set", "eth0", "up"]);
        let forwarding = topology.node.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]).status();
        assert!(forwarding.is_ok_and(|s| s.success()), "enable forwarding in the node namespace");
        topology
    }

    /// A TCP connection from the client host, from `source` (one of its addresses).
    pub fn tcp_connect(&self, source: Ipv4Addr, target: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
        self.client.run(|| tcp_connect_from(source, target, timeout))
    }

    /// A UDP socket of the client host bound to `source`.
    pub fn udp_socket(&self, source: Ipv4Addr) -> UdpSocket {
        self.client.run(|| UdpSocket::bind((source, 0)).expect("bind the client's udp socket"))
    }
}

/// bind() then connect(), the connect bounded by SO_SNDTIMEO (a dropped SYN times out).
fn tcp_connect_from(source: Ipv4Addr, target: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let timeval = TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros().into());
    socket::setsockopt(&fd, socket::sockopt::SendTimeout, &timeval)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0)))?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

/// A TCP server in a pod that answers every line of every connection with
/// `<its address> <the peer's address>`: which pod served, and whom it saw.
pub struct PodTcpServer {
    pub addr: SocketAddr,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PodTcpServer {
    pub fn start(pod: &TestNetns, ip: Ipv4Addr, port: u16) -> PodTcpServer {
        let listener = pod.run(|| TcpListener::bind((ip, port))).expect("bind the pod's tcp server");
        let addr = listener.local_addr().expect("pod server address");
        let stop = Arc::new(AtomicBool::new(false));
        let (serving, stopped) = (listener.try_clone().expect("second listener handle"), stop.clone());
        let thread = thread::spawn(move || {
            for stream in serving.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let stopped = stopped.clone();
                    thread::spawn(move || answer_lines(stream, addr, &stopped));
                }
            }
        });
        PodTcpServer { addr, listener, stop, thread: Some(thread) }
    }
}

/// Answer each line until the peer closes or the server stops (polled every 100 ms).
fn answer_lines(stream: TcpStream, me: SocketAddr, stop: &AtomicBool) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if writeln!(writer, "{me} {peer}").is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for PodTcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting the listening socket down wakes the blocked accept() (see TcpBackend).
        let _ = socket::shutdown(self.listener.as_raw_fd(), socket::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Send `request` on a connection to a [`PodTcpServer`] and read its answer: the pod that
/// served and the peer it saw.
pub fn ask(stream: &mut TcpStream, request: &str) -> io::Result<(SocketAddr, IpAddr)> {
    writeln!(stream, "{request}")?;
    let mut answer = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut answer)?;
    let parse = || -> Option<(SocketAddr, IpAddr)> {
        let (me, peer) = answer.trim().split_once(' ')?;
        Some((me.parse().ok()?, peer.parse::<SocketAddr>().ok()?.ip()))
    };
    parse().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected answer {answer:?}")))
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}
