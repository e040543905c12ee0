//! Traffic over the pod bridge (needs root): sandbox to sandbox, host to sandbox, sandbox to
//! gateway. Only addresses inside this test's own bridge and namespaces are contacted.
//!
//! Subnets used here: 10.244.20.0 to 10.244.29.0 (one per test).

mod network_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use network_support::{in_netns, Fixture};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Accept one connection on `ip:port` inside `netns` (or on the host), answer "pong:<peer>",
/// and return the address the client came from. Returns once listening.
fn serve_once(netns: Option<PathBuf>, ip: Ipv4Addr, port: u16) -> std::thread::JoinHandle<Ipv4Addr> {
    let listen = move || TcpListener::bind((ip, port)).expect("bind listener");
    let listener = match &netns {
        Some(path) => in_netns(path, listen),
        None => listen(),
    };
    std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read ping");
        assert_eq!(&buf, b"ping");
        conn.write_all(format!("pong:{}", peer.ip()).as_bytes()).unwrap();
        match peer.ip() {
            std::net::IpAddr::V4(v4) => v4,
            other => panic!("unexpected peer {other}"),
        }
    })
}

/// Connect to `ip:port` from inside `netns` (or the host) and check the reply.
fn ping(netns: Option<PathBuf>, ip: Ipv4Addr, port: u16) -> String {
    let call = move || {
        let mut conn = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {ip}:{port}: {e}"));
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        conn.write_all(b"ping").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).expect("read pong");
        reply
    };
    match &netns {
        Some(path) => in_netns(path, call),
        None => call(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_reach_each_other_across_the_bridge() {
    let fx = Fixture::new(20, 24);
    let net = fx.network().await;
    let a = net.setup(&fx.id("a")).await.expect("setup a");
    let b = net.setup(&fx.id("b")).await.expect("setup b");
    assert_ne!(a.ip, b.ip);

    // A listener in b (bound to b's own address: the socket really lives in b's namespace).
    let server = serve_once(Some(b.netns_path.clone()), b.ip, 8080);
    let reply = ping(Some(a.netns_path.clone()), b.ip, 8080);
    assert_eq!(reply, format!("pong:{}", a.ip));
    assert_eq!(server.join().unwrap(), a.ip, "no NAT: b sees a's own address");

    // And the other way round.
    let server = serve_once(Some(a.netns_path.clone()), a.ip, 8081);
    assert_eq!(ping(Some(b.netns_path.clone()), a.ip, 8081), format!("pong:{}", b.ip));
    server.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_sandbox_reach_each_other_over_the_bridge() {
    let fx = Fixture::new(21, 24);
    let net = fx.network().await;
    let s = net.setup(&fx.id("a")).await.expect("setup");
    let gateway = net.gateway();

    // Host -> sandbox: the host's source is the bridge's gateway address.
    let server = serve_once(Some(s.netns_path.clone()), Ipv4Addr::UNSPECIFIED, 9090);
    assert_eq!(ping(None, s.ip, 9090), format!("pong:{gateway}"));
    assert_eq!(server.join().unwrap(), gateway);

    // Sandbox -> host, via the gateway address on the test's bridge.
    let server = serve_once(None, gateway, 9091);
    assert_eq!(ping(Some(s.netns_path.clone()), gateway, 9091), format!("pong:{}", s.ip));
    server.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_down_sandbox_is_unreachable() {
    let fx = Fixture::new(22, 24);
    let net = fx.network().await;
    let id = fx.id("a");
    let s = net.setup(&id).await.expect("setup");
    net.teardown(&id).await.expect("teardown");

    let refused_or_timed_out = std::thread::spawn(move || {
        TcpStream::connect_timeout(&SocketAddr::from((s.ip, 9092)), Duration::from_millis(500)).is_err()
    })
    .join()
    .unwrap();
    assert!(refused_or_timed_out);
}
