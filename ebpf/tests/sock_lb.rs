//! The connect4 load-balancer end to end, as root: loaded, attached to a
//! cgroup of the test's own, clients in that cgroup dialing a VIP reach
//! loopback backends. Nothing is attached anywhere else.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use nodelet_ebpf::test_support::{
    attached_program_count, require_root, tcp_connects_from, udp_sends_from, TcpBackend, TestCgroup, UdpBackend,
    PROGRAM_NAMES,
};
use nodelet_ebpf::{Backend, EbpfError, Frontend, Protocol, ServiceEntry, SockLb, MAX_BACKENDS};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn frontend(port: u16, protocol: Protocol) -> Frontend {
    Frontend { ip: IpAddr::V4(VIP), port, protocol }
}

fn loopback(port: u16) -> Backend {
    Backend { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port }
}

/// `backends` without session affinity.
fn entry(backends: &[Backend]) -> ServiceEntry {
    ServiceEntry::new(backends.to_vec())
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

fn ports(backends: &[TcpBackend]) -> BTreeSet<String> {
    backends.iter().map(|b| b.port.to_string()).collect()
}

#[test]
fn tcp_connects_to_a_vip_reach_every_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends: Vec<TcpBackend> = (0..3).map(|_| TcpBackend::start()).collect();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let service: Vec<Backend> = backends.iter().map(|b| loopback(b.port)).collect();
    lb.maps().upsert_service(frontend(80, Protocol::Tcp), &entry(&service)).expect("upsert");

    let run = tcp_connects_from(&cgroup, vip(80), 60);

    assert_eq!(run.answers.len(), 60, "stderr: {}", run.stderr);
    let seen: BTreeSet<String> = run.answers.into_iter().collect();
    assert_eq!(seen, ports(&backends), "every backend picked, nothing else");
}

#[test]
fn service_without_backends_refuses_connections() {
    require_root();
    let cgroup = TestCgroup::create();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(81, Protocol::Tcp), &entry(&[])).expect("upsert");

    let run = tcp_connects_from(&cgroup, vip(81), 2);

    assert_eq!(run.answers, ["refused", "refused"]);
    assert!(run.stderr.contains("Connection refused"), "stderr: {}", run.stderr);
}

#[test]
fn other_destinations_are_left_alone() {
    require_root();
    let cgroup = TestCgroup::create();
    let direct = TcpBackend::start();
    let other = TcpBackend::start();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    lb.maps().upsert_service(frontend(80, Protocol::Tcp), &entry(&[loopback(other.port)])).expect("upsert");

    let run = tcp_connects_from(&cgroup, SocketAddr::from((Ipv4Addr::LOCALHOST, direct.port)), 3);

    assert_eq!(run.answers, vec![direct.port.to_string(); 3], "stderr: {}", run.stderr);
}

#[test]
fn backend_changes_apply_without_reloading() {
    require_root();
    let cgroup = TestCgroup::create();
    let first = TcpBackend::start();
    let second = TcpBackend::start();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let web = frontend(80, Protocol::Tcp);

    lb.maps().upsert_service(web, &entry(&[loopback(first.port)])).expect("upsert first");
    let run = tcp_connects_from(&cgroup, vip(80), 5);
    assert_eq!(run.answers, vec![first.port.to_string(); 5], "stderr: {}", run.stderr);

    lb.maps().upsert_service(web, &entry(&[loopback(second.port)])).expect("upsert second");
    let run = tcp_connects_from(&cgroup, vip(80), 5);
    assert_eq!(run.answers, vec![second.port.to_string(); 5], "stderr: {}", run.stderr);

    lb.maps().remove_service(&web).expect("remove");
    assert!(lb.maps().services().expect("services").is_empty());
}

#[test]
fn udp_connect_is_balanced_too() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns: Vec<UdpBackend> = (0..2).map(|_| UdpBackend::start()).collect();
    let mut lb = SockLb::load().expect("load");
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let service: Vec<Backend> = dns.iter().map(|b| loopback(b.port)).collect();
    lb.maps().upsert_service(frontend(53, Protocol::Udp), &entry(&service)).expect("upsert");

    udp_sends_from(&cgroup, vip(53), 40);

    let counts: Vec<usize> = dns.iter().map(|b| b.received().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 40, "every datagram reached a backend: {counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "both backends picked: {counts:?}");
}

#[test]
fn readers_never_see_a_torn_service_while_it_is_replaced() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends: Vec<TcpBackend> = (0..4).map(|_| TcpBackend::start()).collect();
    let lb = Arc::new(Mutex::new(SockLb::load().expect("load")));
    let _attachment = lb.lock().expect("lock").attach(&cgroup.path).expect("attach");
    let web = frontend(80, Protocol::Tcp);
    let set_a = [loopback(backends[0].port), loopback(backends[1].port)];
    let set_b = [loopback(backends[2].port), loopback(backends[3].port), loopback(backends[2].port)];
    lb.lock().expect("lock").maps().upsert_service(web, &entry(&set_a)).expect("upsert");

    let done = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (lb, done) = (lb.clone(), done.clone());
        thread::spawn(move || {
            let mut flips = 0u32;
            while !done.load(Ordering::SeqCst) {
                let set: &[Backend] = if flips & 1 == 0 { &set_b } else { &set_a };
                lb.lock().expect("lock").maps().upsert_service(web, &entry(set)).expect("flip");
                flips += 1;
            }
            flips
        })
    };
    let run = tcp_connects_from(&cgroup, vip(80), 300);
    done.store(true, Ordering::SeqCst);
    let flips = flipper.join().expect("flipper");

    assert!(flips > 10, "the service was replaced while clients connected ({flips} flips)");
    assert_eq!(run.answers.len(), 300, "stderr: {}", run.stderr);
    let allowed = ports(&backends);
    assert!(
        run.answers.iter().all(|answer| allowed.contains(answer)),
        "every connection reached a backend: {:?}\nstderr: {}",
        run.answers,
        run.stderr
    );
}

#[test]
fn maps_read_back_what_was_written() {
    require_root();
    let mut lb = SockLb::load().expect("load");
    let mut maps = lb.maps();
    let web = frontend(80, Protocol::Tcp);
    let dns = frontend(53, Protocol::Udp);
    let empty = frontend(8080, Protocol::Sctp);
    maps.upsert_service(web, &entry(&[loopback(1), loopback(2)])).expect("web");
    maps.upsert_service(dns, &entry(&[loopback(3)])).expect("dns");
    maps.upsert_service(empty, &entry(&[])).expect("empty");
    maps.upsert_service(web, &entry(&[loopback(4)])).expect("replace web");

    let mut services = maps.services().expect("services");
    services.sort();
    let mut expected = vec![(web, entry(&[loopback(4)])), (dns, entry(&[loopback(3)])), (empty, entry(&[]))];
    expected.sort();
    assert_eq!(services, expected);

    maps.remove_service(&dns).expect("remove");
    maps.remove_service(&dns).expect("removing twice is fine");
    assert_eq!(maps.services().expect("services").len(), 2);
}

#[test]
fn mixed_family_mapped_and_oversized_services_are_rejected_clearly() {
    require_root();
    let mut lb = SockLb::load().expect("load");
    let mut maps = lb.maps();
    let v6 = Frontend { ip: "fd00::10".parse().expect("ip"), port: 80, protocol: Protocol::Tcp };
    let error = maps.upsert_service(v6, &entry(&[loopback(80)])).expect_err("ipv4 backend of an ipv6 frontend");
    assert!(matches!(error, EbpfError::AddressFamilyMismatch { .. }), "{error}");
    assert!(error.to_string().contains("address family"), "{error}");

    let mapped = Frontend { ip: "::ffff:10.96.0.10".parse().expect("ip"), port: 80, protocol: Protocol::Tcp };
    let error = maps.upsert_service(mapped, &entry(&[])).expect_err("mapped");
    assert!(matches!(error, EbpfError::Ipv4MappedAddress { .. }), "{error}");

    let too_many = vec![loopback(1); MAX_BACKENDS + 1];
    let error = maps.upsert_service(frontend(80, Protocol::Tcp), &entry(&too_many)).expect_err("too many");
    assert!(matches!(error, EbpfError::TooManyBackends { .. }), "{error}");
    assert!(maps.services().expect("services").is_empty(), "nothing written");
}

#[test]
fn every_program_is_attached_together_and_detached_on_drop() {
    require_root();
    let cgroup = TestCgroup::create();
    let mut lb = SockLb::load().expect("load");

    let attachment = lb.attach(&cgroup.path).expect("attach");
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len(), "{}", cgroup.attached_programs());
    for hook in [
        "cgroup_inet4_connect",
        "cgroup_udp4_sendmsg",
        "cgroup_udp4_recvmsg",
        "cgroup_inet4_getpeername",
        "cgroup_inet6_connect",
        "cgroup_udp6_sendmsg",
        "cgroup_udp6_recvmsg",
        "cgroup_inet6_getpeername",
    ] {
        assert!(cgroup.attached_programs().contains(hook), "{hook}: {}", cgroup.attached_programs());
    }
    attachment.detach().expect("detach");
    assert_eq!(cgroup.attached_programs(), "");

    let attachment = lb.attach(&cgroup.path).expect("attach again");
    assert_eq!(attachment.cgroup(), cgroup.path);
    assert!(!attachment.is_pinned());
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len());
    drop(attachment);
    assert_eq!(cgroup.attached_programs(), "");
}

#[test]
fn attaching_to_a_directory_that_is_no_cgroup_leaves_nothing_behind() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lb = SockLb::load().expect("load");
    let error = lb.attach(dir.path()).err().expect("not a cgroup");
    assert!(matches!(error, EbpfError::Attach { name: "sock4_recvmsg", .. }), "{error}");
    assert!(error.to_string().contains("sock4_recvmsg"), "{error}");
}
