//! The IPv6 hooks end to end, as root: connect6, sendmsg6, recvmsg6 and getpeername6
//! attached to a cgroup of the test's own, with clients and backends in a network namespace
//! of the test's own (backends on ULA addresses of its loopback), so that nothing dialled
//! here can leave the host: the namespace has no route but its loopback. Also the
//! dual-stack case: an IPv6 socket dialling an IPv4-mapped address is served by the IPv4
//! Service.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nodelet_ebpf::test_support::{
    require_root, tcp_connects_in, SocketClient, TcpBackend, TestCgroup, TestNetns, UdpEchoBackend,
};
use nodelet_ebpf::{Backend, EbpfError, Frontend, Protocol, ServiceEntry, SessionAffinity, SockLb};

/// The Service address: nothing in the test namespace routes it.
const VIP: Ipv6Addr = Ipv6Addr::new(0xfd6e, 0x96, 0, 0, 0, 0, 0, 0x10);
/// An IPv4 Service address dialled IPv4-mapped (in 127.0.0.0/8: it stays on loopback).
const VIP4: Ipv4Addr = Ipv4Addr::new(127, 96, 6, 10);
const WAIT: Duration = Duration::from_secs(2);

/// The n-th backend address, given to the namespace's loopback by [`Setup::new`].
fn backend_ip(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd6e, 1, 0, 0, 0, 0, 0, 2 + n))
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

fn frontend(addr: SocketAddr, protocol: Protocol) -> Frontend {
    Frontend { ip: addr.ip(), port: addr.port(), protocol }
}

fn backend(addr: SocketAddr) -> Backend {
    Backend { ip: addr.ip(), port: addr.port() }
}

fn entry(addrs: impl IntoIterator<Item = SocketAddr>, affinity: SessionAffinity) -> ServiceEntry {
    ServiceEntry::with_affinity(addrs.into_iter().map(backend).collect(), affinity)
}

/// The backend address an echo reply names.
fn answered_by(data: &str) -> String {
    data.split_once(' ').map_or(data, |(by, _)| by).to_owned()
}

/// The load-balancer attached to a test cgroup, and a test namespace whose loopback has
/// `backend_ip(0..4)`. Field order: detach before the namespace and cgroup go.
struct Setup {
    _attachment: nodelet_ebpf::CgroupAttachment,
    lb: SockLb,
    netns: TestNetns,
    cgroup: TestCgroup,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        let cgroup = TestCgroup::create();
        let netns = TestNetns::create();
        for n in 0..4 {
            netns.add_address(backend_ip(n));
        }
        let mut lb = SockLb::load().expect("load");
        let attachment = lb.attach(&cgroup.path).expect("attach");
        Setup { _attachment: attachment, lb, netns, cgroup }
    }

    fn tcp_backends(&self, count: u16) -> Vec<TcpBackend> {
        (0..count).map(|n| TcpBackend::start_in(&self.netns, backend_ip(n))).collect()
    }

    fn udp_backends(&self, count: u16) -> Vec<UdpEchoBackend> {
        (0..count).map(|n| UdpEchoBackend::start_in(&self.netns, backend_ip(n))).collect()
    }

    /// The answers of `count` TCP connects to `target` (bash, in the namespace).
    fn connects(&self, target: SocketAddr, count: usize) -> Vec<String> {
        let run = tcp_connects_in(&self.cgroup, &self.netns, target, count);
        assert_eq!(run.answers.len(), count, "stderr: {}", run.stderr);
        run.answers
    }
}

#[test]
fn tcp_connects_to_an_ipv6_vip_reach_every_backend() {
    let mut setup = Setup::new();
    let backends = setup.tcp_backends(3);
    let web = frontend(vip(80), Protocol::Tcp);
    setup
        .lb
        .maps()
        .upsert_service(web, &entry(backends.iter().map(|b| b.addr), SessionAffinity::None))
        .expect("upsert");

    let answers = setup.connects(vip(80), 45);

    let seen: BTreeSet<&str> = answers.iter().map(String::as_str).collect();
    let expected: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(seen, expected.iter().map(String::as_str).collect(), "every backend picked, nothing else");
}

#[test]
fn a_backend_on_the_ipv6_loopback_is_reached() {
    let mut setup = Setup::new();
    let local = TcpBackend::start_in(&setup.netns, IpAddr::V6(Ipv6Addr::LOCALHOST));
    let web = frontend(vip(8080), Protocol::Tcp);
    setup.lb.maps().upsert_service(web, &entry([local.addr], SessionAffinity::None)).expect("upsert");

    assert_eq!(setup.connects(vip(8080), 3), vec![local.addr.to_string(); 3]);
}

#[test]
fn an_ipv6_service_without_backends_refuses_connects_and_sends() {
    let mut setup = Setup::new();
    let mut maps = setup.lb.maps();
    maps.upsert_service(frontend(vip(81), Protocol::Tcp), &ServiceEntry::default()).expect("tcp");
    maps.upsert_service(frontend(vip(10053), Protocol::Udp), &ServiceEntry::default()).expect("udp");

    let run = tcp_connects_in(&setup.cgroup, &setup.netns, vip(81), 2);
    assert_eq!(run.answers, ["refused", "refused"]);
    assert!(run.stderr.contains("Connection refused"), "stderr: {}", run.stderr);

    let mut client = SocketClient::udp6(&setup.cgroup, &setup.netns);
    let error = client.send_to(vip(10053), "query").expect_err("refused");
    assert!(error.contains("Connection refused"), "{error}");
    assert!(setup.lb.reverse_nat().expect("reverse").is_empty());
}

#[test]
fn other_ipv6_destinations_are_left_alone() {
    let mut setup = Setup::new();
    let direct = setup.tcp_backends(1).remove(0);
    let other = TcpBackend::start_in(&setup.netns, IpAddr::V6(Ipv6Addr::LOCALHOST));
    let web = frontend(vip(80), Protocol::Tcp);
    setup.lb.maps().upsert_service(web, &entry([other.addr], SessionAffinity::None)).expect("upsert");

    assert_eq!(setup.connects(direct.addr, 3), vec![direct.addr.to_string(); 3]);
    // The VIP on another port is no Service: not rewritten, and unroutable in the namespace.
    let run = tcp_connects_in(&setup.cgroup, &setup.netns, vip(81), 1);
    assert_eq!(run.answers, ["refused"], "stderr: {}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "no route to the VIP itself: {}", run.stderr);
}

#[test]
fn udp_datagrams_to_an_ipv6_vip_reach_a_backend_and_replies_come_from_the_vip() {
    let mut setup = Setup::new();
    let dns = setup.udp_backends(3);
    let service = frontend(vip(10053), Protocol::Udp);
    setup.lb.maps().upsert_service(service, &entry(dns.iter().map(|b| b.addr), SessionAffinity::None)).expect("upsert");
    let backends: BTreeSet<String> = dns.iter().map(|b| b.addr.to_string()).collect();

    let mut client = SocketClient::udp6(&setup.cgroup, &setup.netns);
    let mut answered = BTreeSet::new();
    for query in 0..5 {
        client.send_to(vip(10053), &format!("query{query}")).expect("sendto the vip");
        let (from, data) = client.recv_from(WAIT).expect("a reply");
        assert_eq!(from, vip(10053), "recvfrom shows the Service address, not the backend ({data})");
        assert!(data.ends_with(&format!(" query{query}")), "{data}");
        answered.insert(answered_by(&data));
    }
    assert_eq!(answered.len(), 1, "one socket's datagrams stay on one backend: {answered:?}");

    for query in 0..12 {
        let mut other = SocketClient::udp6(&setup.cgroup, &setup.netns);
        other.send_to(vip(10053), "hello").expect("sendto");
        let (from, data) = other.recv_from(WAIT).expect("a reply");
        assert_eq!(from, vip(10053), "socket {query}: {data}");
        answered.insert(answered_by(&data));
    }
    assert!(answered.len() > 1 && answered.is_subset(&backends), "spread over the backends: {answered:?}");
    let reverse = setup.lb.reverse_nat().expect("reverse");
    assert!(
        reverse.iter().all(|e| e.frontend == vip(10053) && backends.contains(&e.backend.to_string())),
        "{reverse:?}"
    );
}

#[test]
fn connected_ipv6_sockets_see_the_vip_as_their_peer() {
    let mut setup = Setup::new();
    let dns = setup.udp_backends(1);
    let web = setup.tcp_backends(1);
    let mut maps = setup.lb.maps();
    maps.upsert_service(frontend(vip(10053), Protocol::Udp), &entry([dns[0].addr], SessionAffinity::None))
        .expect("udp");
    maps.upsert_service(frontend(vip(80), Protocol::Tcp), &entry([web[0].addr], SessionAffinity::None)).expect("tcp");

    let mut udp = SocketClient::udp6(&setup.cgroup, &setup.netns);
    udp.connect(vip(10053)).expect("connect udp");
    assert_eq!(udp.peer_addr().expect("getpeername"), vip(10053));
    udp.send("ping").expect("send");
    assert_eq!(udp.recv_from(WAIT), Some((vip(10053), format!("{} ping", dns[0].addr))));

    let mut tcp = SocketClient::tcp6(&setup.cgroup, &setup.netns);
    tcp.connect(vip(80)).expect("connect tcp");
    assert_eq!(tcp.read_line(), web[0].addr.to_string(), "reached the backend");
    assert_eq!(tcp.peer_addr().expect("getpeername"), vip(80));
    let reverse = setup.lb.reverse_nat().expect("reverse");
    assert!(reverse.iter().any(|e| (e.backend, e.frontend) == (web[0].addr, vip(80))), "{reverse:?}");
}

#[test]
fn a_dual_stack_socket_dialling_an_ipv4_mapped_vip_is_served_by_the_ipv4_service() {
    let mut setup = Setup::new();
    let web = TcpBackend::start_in(&setup.netns, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let dns = UdpEchoBackend::start_in(&setup.netns, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let (web_vip, dns_vip) = (SocketAddr::from((VIP4, 80)), SocketAddr::from((VIP4, 10053)));
    let mut maps = setup.lb.maps();
    maps.upsert_service(frontend(web_vip, Protocol::Tcp), &entry([web.addr], SessionAffinity::None)).expect("tcp");
    maps.upsert_service(frontend(dns_vip, Protocol::Udp), &entry([dns.addr], SessionAffinity::None)).expect("udp");
    let mapped = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        SocketAddr::V6(_) => addr,
    };

    let mut tcp = SocketClient::tcp6(&setup.cgroup, &setup.netns);
    tcp.connect(mapped(web_vip)).expect("connect to ::ffff:vip");
    assert_eq!(tcp.read_line(), web.addr.to_string(), "reached the IPv4 backend");
    assert_eq!(tcp.peer_addr().expect("getpeername"), mapped(web_vip), "the address dialled, still mapped");

    let mut udp = SocketClient::udp6(&setup.cgroup, &setup.netns);
    udp.send_to(mapped(dns_vip), "query").expect("sendto ::ffff:vip");
    assert_eq!(udp.recv_from(WAIT), Some((mapped(dns_vip), format!("{} query", dns.addr))), "reply from the vip");

    let reverse = setup.lb.reverse_nat().expect("reverse");
    let pairs: BTreeSet<(SocketAddr, SocketAddr)> = reverse.iter().map(|e| (e.backend, e.frontend)).collect();
    assert_eq!(pairs, BTreeSet::from([(web.addr, web_vip), (dns.addr, dns_vip)]), "IPv4 entries, not mapped ones");
}

#[test]
fn with_client_ip_affinity_every_ipv6_connect_reaches_the_same_backend() {
    let mut setup = Setup::new();
    let backends = setup.tcp_backends(3);
    let web = frontend(vip(80), Protocol::Tcp);
    let sticky = SessionAffinity::ClientIp { timeout_seconds: 10_800 };
    setup.lb.maps().upsert_service(web, &entry(backends.iter().map(|b| b.addr), sticky)).expect("upsert");

    let first = setup.connects(vip(80), 20);
    assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 1, "one backend for all 20 connects: {first:?}");
    let remembered = setup.lb.affinity().expect("affinity");
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    assert_eq!((remembered[0].frontend, remembered[0].backend.to_string()), (web, first[0].clone()));

    // A new revision keeping the backend, at another slot: the client keeps it.
    let mut reordered: Vec<SocketAddr> = backends.iter().map(|b| b.addr).rev().collect();
    reordered.rotate_left(1);
    setup.lb.maps().upsert_service(web, &entry(reordered, sticky)).expect("replace");
    assert_eq!(setup.connects(vip(80), 5), vec![first[0].clone(); 5], "still the first backend");

    // Without it, connects spread (all 20 on one of 3 at random: about 1e-9).
    let plain = frontend(vip(81), Protocol::Tcp);
    setup
        .lb
        .maps()
        .upsert_service(plain, &entry(backends.iter().map(|b| b.addr), SessionAffinity::None))
        .expect("plain");
    let spread = setup.connects(vip(81), 20);
    assert!(spread.iter().collect::<BTreeSet<_>>().len() >= 2, "{spread:?}");
}

#[test]
fn ipv4_and_ipv6_frontends_are_written_and_read_back_side_by_side() {
    require_root();
    let mut lb = SockLb::load().expect("load");
    let mut maps = lb.maps();
    let v4 = frontend(SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 53)), Protocol::Udp);
    let v6 = frontend(SocketAddr::from((Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 10), 53)), Protocol::Udp);
    let v6_tcp = Frontend { protocol: Protocol::Tcp, ..v6 };
    let v4_entry = entry([SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 5353))], SessionAffinity::None);
    let sticky = SessionAffinity::ClientIp { timeout_seconds: 30 };
    let v6_entry = entry([SocketAddr::from((backend_ip(0), 5353)), SocketAddr::from((backend_ip(1), 5353))], sticky);
    maps.upsert_service(v4, &v4_entry).expect("v4");
    maps.upsert_service(v6, &v6_entry).expect("v6");
    maps.upsert_service(v6_tcp, &ServiceEntry::default()).expect("v6 tcp, no backends");
    let replaced = entry([SocketAddr::from((backend_ip(2), 53))], SessionAffinity::None);
    maps.upsert_service(v6_tcp, &replaced).expect("replace v6 tcp");

    let mut expected = vec![(v4, v4_entry.clone()), (v6, v6_entry), (v6_tcp, replaced)];
    expected.sort();
    assert_eq!(maps.services().expect("services"), expected, "IPv4 first, each family sorted");

    maps.remove_service(&v6).expect("remove v6");
    maps.remove_service(&v6).expect("removing twice is fine");
    maps.remove_service(&v6_tcp).expect("remove v6 tcp");
    assert_eq!(maps.services().expect("services"), [(v4, v4_entry)], "the IPv4 frontend untouched");

    let mixed = entry([SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 53))], SessionAffinity::None);
    let error = maps.upsert_service(v6, &mixed).expect_err("ipv4 backend of an ipv6 frontend");
    assert!(matches!(error, EbpfError::AddressFamilyMismatch { .. }), "{error}");
    let error = maps.remove_service(&frontend("[::ffff:10.96.0.10]:53".parse().expect("addr"), Protocol::Udp));
    assert!(matches!(error, Err(EbpfError::Ipv4MappedAddress { .. })), "{error:?}");
}
