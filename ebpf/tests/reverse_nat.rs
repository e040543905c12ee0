//! UDP Services and the addresses applications are shown, as root: sendmsg4 balances
//! unconnected datagrams, recvmsg4 makes the replies come from the Service address, and
//! getpeername4 reports it on connected sockets. Clients are processes in a cgroup of the
//! test's own; backends echo on loopback. The VIPs are in 127.0.0.0/8 too, so that a
//! datagram the programs failed to rewrite never leaves the host.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nodelet_ebpf::test_support::{require_root, SocketClient, TcpBackend, TestCgroup, UdpEchoBackend};
use nodelet_ebpf::{Backend, Frontend, Protocol, ServiceEntry, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(127, 96, 1, 10);
/// A port nothing on the host listens on at the VIP: an unrewritten datagram finds no one.
const DNS_PORT: u16 = 10053;
const WAIT: Duration = Duration::from_secs(2);
/// How long to wait for a datagram that must not come.
const SILENCE: Duration = Duration::from_millis(300);

fn frontend(addr: SocketAddr, protocol: Protocol) -> Frontend {
    Frontend { ip: addr.ip(), port: addr.port(), protocol }
}

fn backend(addr: SocketAddr) -> Backend {
    Backend { ip: addr.ip(), port: addr.port() }
}

/// `backends` without session affinity.
fn entry(backends: &[Backend]) -> ServiceEntry {
    ServiceEntry::new(backends.to_vec())
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

/// Echo backends on 127.0.0.2, 127.0.0.3, ...: not the client's own source address.
fn echo_backends(count: u8) -> Vec<UdpEchoBackend> {
    (0..count).map(|i| UdpEchoBackend::start(Ipv4Addr::new(127, 0, 0, 2 + i))).collect()
}

/// The backend address an echo reply names.
fn answered_by(data: &str) -> String {
    data.split_once(' ').map_or(data, |(by, _)| by).to_owned()
}

#[test]
fn unconnected_datagrams_reach_a_backend_and_replies_come_from_the_vip() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns = echo_backends(3);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let service: Vec<Backend> = dns.iter().map(|b| backend(b.addr)).collect();
    lb.maps().upsert_service(frontend(vip(DNS_PORT), Protocol::Udp), &entry(&service)).expect("upsert");
    let backends: BTreeSet<String> = dns.iter().map(|b| b.addr.to_string()).collect();

    let mut client = SocketClient::udp(&cgroup);
    let mut answered = BTreeSet::new();
    for query in 0..5 {
        client.send_to(vip(DNS_PORT), &format!("query{query}")).expect("sendto the vip");
        let (from, data) = client.recv_from(WAIT).expect("a reply");
        assert_eq!(from, vip(DNS_PORT), "recvfrom shows the Service address, not the backend ({data})");
        assert!(data.ends_with(&format!(" query{query}")), "{data}");
        answered.insert(answered_by(&data));
    }
    assert_eq!(answered.len(), 1, "one socket's datagrams stay on one backend: {answered:?}");
    assert!(answered.is_subset(&backends), "{answered:?}");

    // Other sockets are spread over the backends.
    for query in 0..12 {
        let mut other = SocketClient::udp(&cgroup);
        other.send_to(vip(DNS_PORT), "hello").expect("sendto");
        let (from, data) = other.recv_from(WAIT).expect("a reply");
        assert_eq!(from, vip(DNS_PORT), "socket {query}: {data}");
        answered.insert(answered_by(&data));
    }
    assert!(answered.len() > 1 && answered.is_subset(&backends), "{answered:?}");
}

#[test]
fn connected_udp_sees_the_vip_as_its_peer_and_source() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns = echo_backends(1);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(vip(DNS_PORT), Protocol::Udp), &entry(&[backend(dns[0].addr)])).expect("upsert");

    let mut client = SocketClient::udp(&cgroup);
    client.connect(vip(DNS_PORT)).expect("connect");
    assert_eq!(client.peer_addr().expect("getpeername"), vip(DNS_PORT));
    client.send("ping").expect("send");
    let (from, data) = client.recv_from(WAIT).expect("a reply");
    assert_eq!(from, vip(DNS_PORT));
    assert_eq!(data, format!("{} ping", dns[0].addr));
}

#[test]
fn getpeername_of_a_tcp_connection_is_the_vip() {
    require_root();
    let cgroup = TestCgroup::create();
    let web = TcpBackend::start();
    let web_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, web.port));
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(vip(80), Protocol::Tcp), &entry(&[backend(web_addr)])).expect("upsert");

    let mut client = SocketClient::tcp(&cgroup);
    client.connect(vip(80)).expect("connect");
    assert_eq!(client.read_line(), web.port.to_string(), "reached the backend");
    assert_eq!(client.peer_addr().expect("getpeername"), vip(80));

    let reverse = lb.reverse_nat().expect("reverse entries");
    assert_eq!(reverse.len(), 1, "{reverse:?}");
    assert_eq!((reverse[0].backend, reverse[0].frontend), (web_addr, vip(80)));
}

#[test]
fn sends_to_a_service_without_backends_are_refused() {
    require_root();
    let cgroup = TestCgroup::create();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(vip(DNS_PORT), Protocol::Udp), &entry(&[])).expect("upsert");

    let mut client = SocketClient::udp(&cgroup);
    let error = client.send_to(vip(DNS_PORT), "query").expect_err("refused");
    assert!(error.contains("Connection refused"), "{error}");
    assert!(lb.reverse_nat().expect("reverse entries").is_empty());
}

#[test]
fn once_the_service_is_removed_nothing_is_rewritten_either_way() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns = echo_backends(1);
    // A real listener at the VIP itself: what a datagram reaches when it is not rewritten.
    let at_vip = UdpEchoBackend::start(VIP);
    let service = frontend(at_vip.addr, Protocol::Udp);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(service, &entry(&[backend(dns[0].addr)])).expect("upsert");

    let mut client = SocketClient::udp(&cgroup);
    client.send_to(at_vip.addr, "one").expect("sendto");
    assert_eq!(client.recv_from(WAIT), Some((at_vip.addr, format!("{} one", dns[0].addr))), "balanced");
    assert_eq!(lb.reverse_nat().expect("reverse").len(), 1);

    lb.maps().remove_service(&service).expect("remove");
    client.send_to(at_vip.addr, "two").expect("sendto");
    assert_eq!(
        client.recv_from(WAIT),
        Some((at_vip.addr, format!("{} two", at_vip.addr))),
        "the datagram went to the VIP itself"
    );
    // The backend talks to the socket as itself: its reverse entry is stale, not applied,
    // and dropped on sight.
    client.send_to(dns[0].addr, "three").expect("sendto the backend directly");
    assert_eq!(client.recv_from(WAIT), Some((dns[0].addr, format!("{} three", dns[0].addr))));
    assert!(lb.reverse_nat().expect("reverse").is_empty(), "the stale entry was deleted");
    assert_eq!(client.recv_from(SILENCE), None, "nothing else arrived");
}

#[test]
fn sockets_outside_the_cgroup_are_not_translated() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns = echo_backends(1);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(vip(DNS_PORT), Protocol::Udp), &entry(&[backend(dns[0].addr)])).expect("upsert");

    // This test process is not in the cgroup: its datagram is not rewritten, so it goes to
    // the VIP itself, where nothing listens, and no reply comes.
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    socket.set_read_timeout(Some(SILENCE)).expect("timeout");
    socket.send_to(b"outside", vip(DNS_PORT)).expect("sendto");
    let mut buf = [0u8; 64];
    assert!(socket.recv_from(&mut buf).is_err(), "no backend answered");
    assert!(lb.reverse_nat().expect("reverse").is_empty());
}
