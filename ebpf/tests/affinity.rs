//! Session affinity (`sessionAffinity: ClientIP`) end to end, as root: the programs
//! attached to a cgroup of the test's own, clients in that cgroup (all in the host's network
//! namespace: one client identity), TCP and UDP backends on 127.0.0.2-5. The VIP is in
//! 127.0.0.0/8 too, so that a connection the programs failed to rewrite stays on loopback.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use nodelet_ebpf::test_support::{
    require_root, tcp_connects_from, SocketClient, TcpBackend, TestCgroup, UdpEchoBackend,
};
use nodelet_ebpf::{Backend, EbpfError, Frontend, Protocol, ServiceEntry, SessionAffinity, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(127, 96, 2, 10);
const STICKY: SessionAffinity = SessionAffinity::ClientIp { timeout_seconds: 10_800 };
const WAIT: Duration = Duration::from_secs(2);

fn frontend(port: u16, protocol: Protocol) -> Frontend {
    Frontend { ip: IpAddr::V4(VIP), port, protocol }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

/// TCP backends on 127.0.0.2, 127.0.0.3, ...; each answers with its address.
fn tcp_backends(count: u8) -> Vec<TcpBackend> {
    (0..count).map(|i| TcpBackend::start_on(Ipv4Addr::new(127, 0, 0, 2 + i))).collect()
}

fn backend(addr: SocketAddr) -> Backend {
    Backend { ip: addr.ip(), port: addr.port() }
}

fn service(backends: &[&TcpBackend], affinity: SessionAffinity) -> ServiceEntry {
    ServiceEntry::with_affinity(backends.iter().map(|b| backend(b.addr)).collect(), affinity)
}

/// The backend addresses that answered `count` connects to the VIP from the test cgroup.
fn answers(cgroup: &TestCgroup, port: u16, count: usize) -> Vec<String> {
    let run = tcp_connects_from(cgroup, vip(port), count);
    assert_eq!(run.answers.len(), count, "stderr: {}", run.stderr);
    run.answers
}

fn distinct(answers: &[String]) -> BTreeSet<&str> {
    answers.iter().map(String::as_str).collect()
}

#[test]
fn with_client_ip_affinity_every_connect_of_a_client_reaches_the_same_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends = tcp_backends(3);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let web = frontend(80, Protocol::Tcp);
    lb.maps().upsert_service(web, &service(&backends.iter().collect::<Vec<_>>(), STICKY)).expect("upsert");

    let got = answers(&cgroup, 80, 20);

    assert_eq!(distinct(&got).len(), 1, "one backend for all 20 connects: {got:?}");
    let remembered = lb.affinity().expect("affinity map");
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    assert_eq!(remembered[0].frontend, web);
    assert_eq!(remembered[0].backend.to_string(), got[0], "the map names the backend reached");
    assert_ne!(remembered[0].client_netns, 0, "keyed by the client's network namespace");
}

#[test]
fn without_affinity_the_connects_of_a_client_spread() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends = tcp_backends(3);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let entry = service(&backends.iter().collect::<Vec<_>>(), SessionAffinity::None);
    lb.maps().upsert_service(frontend(81, Protocol::Tcp), &entry).expect("upsert");

    let got = answers(&cgroup, 81, 20);

    // All 20 on one of 3 backends at random: 3 * (1/3)^20, about 1e-9.
    assert!(distinct(&got).len() >= 2, "connects spread over the backends: {got:?}");
    assert!(lb.affinity().expect("affinity map").is_empty(), "nothing remembered");
}

#[test]
fn after_the_timeout_a_client_may_get_another_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends = tcp_backends(3);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let short = SessionAffinity::ClientIp { timeout_seconds: 1 };
    lb.maps()
        .upsert_service(frontend(82, Protocol::Tcp), &service(&backends.iter().collect::<Vec<_>>(), short))
        .expect("upsert");

    let first = answers(&cgroup, 82, 5);
    assert_eq!(distinct(&first).len(), 1, "sticky within the timeout: {first:?}");

    // Each round waits past the timeout, so its connect picks afresh: 1 in 3 picks the
    // same backend again; 15 rounds all on it: (1/3)^15, about 7e-8.
    let mut seen = vec![first[0].clone()];
    for _ in 0..15 {
        thread::sleep(Duration::from_millis(1_300));
        let next = answers(&cgroup, 82, 1).remove(0);
        if next != first[0] {
            return;
        }
        seen.push(next);
    }
    panic!("every connect after the timeout reached the first backend again: {seen:?}");
}

#[test]
fn an_affinity_entry_to_a_removed_backend_is_not_used() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends = tcp_backends(3);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let web = frontend(83, Protocol::Tcp);
    lb.maps().upsert_service(web, &service(&backends.iter().collect::<Vec<_>>(), STICKY)).expect("upsert");
    let first = answers(&cgroup, 83, 3);
    assert_eq!(distinct(&first).len(), 1, "{first:?}");

    let remaining: Vec<&TcpBackend> = backends.iter().filter(|b| b.addr.to_string() != first[0]).collect();
    assert_eq!(remaining.len(), 2);
    lb.maps().upsert_service(web, &service(&remaining, STICKY)).expect("remove the remembered backend");
    let after = answers(&cgroup, 83, 10);

    let allowed: BTreeSet<String> = remaining.iter().map(|b| b.addr.to_string()).collect();
    assert!(after.iter().all(|answer| allowed.contains(answer)), "the removed backend is not used: {after:?}");
    assert_eq!(distinct(&after).len(), 1, "a new backend, remembered in turn: {after:?}");
    let remembered = lb.affinity().expect("affinity map");
    assert_eq!(remembered.iter().map(|e| e.backend.to_string()).collect::<Vec<_>>(), [after[0].clone()]);
}

#[test]
fn affinity_survives_a_replace_that_keeps_the_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends = tcp_backends(4);
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let web = frontend(84, Protocol::Tcp);
    lb.maps().upsert_service(web, &service(&[&backends[0], &backends[1], &backends[2]], STICKY)).expect("upsert");
    let first = answers(&cgroup, 84, 3);
    assert_eq!(distinct(&first).len(), 1, "{first:?}");

    // New revisions with one more backend and the backends at other slots each time: the
    // remembered backend is found where it went. (A client that lost its entry would pick
    // afresh: the same backend by chance 1 in 4 per round, 1 in 1024 for all five.)
    for round in 0..5 {
        let mut reordered = vec![&backends[3], &backends[2], &backends[1], &backends[0]];
        reordered.rotate_left(round);
        lb.maps().upsert_service(web, &service(&reordered, STICKY)).expect("replace");
        let after = answers(&cgroup, 84, 4);
        assert_eq!(after, vec![first[0].clone(); 4], "round {round}: still the first backend");
    }
}

#[test]
fn udp_sockets_of_one_client_share_its_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns: Vec<UdpEchoBackend> = (0..3).map(|i| UdpEchoBackend::start(Ipv4Addr::new(127, 0, 0, 2 + i))).collect();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let entry = ServiceEntry::with_affinity(dns.iter().map(|b| backend(b.addr)).collect(), STICKY);
    lb.maps().upsert_service(frontend(10053, Protocol::Udp), &entry).expect("upsert");

    // Without affinity each socket would hash to a backend of its own.
    let mut answered_by = BTreeSet::new();
    for query in 0..8 {
        let mut client = SocketClient::udp(&cgroup);
        client.send_to(vip(10053), &format!("q{query}")).expect("sendto the vip");
        let (from, data) = client.recv_from(WAIT).expect("a reply");
        assert_eq!(from, vip(10053), "the reply comes from the Service address");
        answered_by.insert(data.split_once(' ').map_or(data.clone(), |(by, _)| by.to_owned()));
    }
    assert_eq!(answered_by.len(), 1, "every socket of the client reached one backend: {answered_by:?}");
}

#[test]
fn affinity_is_read_back_and_a_zero_timeout_is_refused() {
    require_root();
    let mut lb = SockLb::load().expect("load");
    let mut maps = lb.maps();
    let web = frontend(85, Protocol::Tcp);
    let sticky = ServiceEntry::with_affinity(vec![backend(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)))], STICKY);
    maps.upsert_service(web, &sticky).expect("upsert");
    assert_eq!(maps.services().expect("services"), [(web, sticky.clone())]);

    let plain = ServiceEntry::new(sticky.backends.clone());
    maps.upsert_service(web, &plain).expect("affinity off");
    assert_eq!(maps.services().expect("services"), [(web, plain)]);

    let zero = ServiceEntry::with_affinity(vec![], SessionAffinity::ClientIp { timeout_seconds: 0 });
    let error = maps.upsert_service(frontend(86, Protocol::Tcp), &zero).expect_err("zero timeout");
    assert!(matches!(error, EbpfError::AffinityTimeout { .. }), "{error}");
    assert_eq!(maps.services().expect("services").len(), 1, "nothing written for the refused frontend");
}
