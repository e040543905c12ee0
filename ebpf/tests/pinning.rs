//! The pinned load-balancer, as root: it keeps serving after the loader is dropped (an
//! agent exiting), a second load reuses its maps and links, and cleanup removes everything.
//! Pins live on a bpffs of the test's own; the program only on a cgroup of the test's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nodelet_ebpf::test_support::{
    attached_program_count, pin_hash_map_of_layout, pin_services_map_of_12_byte_values, require_root,
    tcp_connects_from, tcp_connects_in, unpin_ipv6_part, SocketClient, TcpBackend, TestBpffs, TestCgroup, TestNetns,
    UdpEchoBackend, UnpinOnDrop, PROGRAM_NAMES,
};
use nodelet_ebpf::{Backend, Frontend, MapSizes, Protocol, ServiceEntry, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

fn frontend(port: u16) -> Frontend {
    Frontend { ip: IpAddr::V4(VIP), port, protocol: Protocol::Tcp }
}

fn loopback(port: u16) -> Backend {
    Backend { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port }
}

/// `backends` without session affinity.
fn entry(backends: &[Backend]) -> ServiceEntry {
    ServiceEntry::new(backends.to_vec())
}

fn answers(cgroup: &TestCgroup, port: u16, count: usize) -> Vec<String> {
    let run = tcp_connects_from(cgroup, SocketAddr::from((VIP, port)), count);
    assert_eq!(run.answers.len(), count, "stderr: {}", run.stderr);
    run.answers
}

#[test]
fn pinned_load_balancer_survives_its_loader_and_is_reused() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let (first, second) = (TcpBackend::start(), TcpBackend::start());

    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");
        assert!(!lb.maps_reused());
        let attachment = lb.attach(&cgroup.path).expect("attach");
        assert!(attachment.is_pinned() && !attachment.reused_pinned_link());
        for name in PROGRAM_NAMES.iter().map(|name| format!("{name}_link")).chain(
            ["lb4_reverse_sk", "lb4_affinity", "lb6_services", "lb6_reverse_sk", "lb6_affinity"].map(String::from),
        ) {
            assert!(pin_dir.join(&name).exists(), "{name} pinned");
        }
        lb.maps().upsert_service(frontend(80), &entry(&[loopback(first.port)])).expect("upsert");
    } // the loader is gone, as when the agent exits

    assert_eq!(answers(&cgroup, 80, 5), vec![first.port.to_string(); 5], "still served");
    let pinned = SockLb::pinned_services(&pin_dir).expect("read pinned").expect("something pinned");
    assert_eq!(pinned, [(frontend(80), entry(&[loopback(first.port)]))]);

    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load again");
        assert!(lb.maps_reused());
        assert_eq!(lb.maps().services().expect("read back"), pinned, "the maps kept their contents");
        let attachment = lb.attach(&cgroup.path).expect("attach again");
        assert!(attachment.reused_pinned_link());
        lb.maps().upsert_service(frontend(80), &entry(&[loopback(second.port)])).expect("upsert");
    }
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len(), "the links were reused, not duplicated");
    assert_eq!(answers(&cgroup, 80, 5), vec![second.port.to_string(); 5], "the change took effect");

    let unpinned = SockLb::unpin_and_detach(&pin_dir).expect("cleanup");
    assert!(unpinned.link);
    assert_eq!(unpinned.maps, 6, "lb4_services, lb4_reverse_sk, lb4_affinity and their lb6 twins");
    assert_eq!(cgroup.attached_programs(), "", "nothing attached");
    assert!(!pin_dir.exists(), "no pin left");
    assert_eq!(SockLb::pinned_services(&pin_dir).expect("read"), None);
    assert_eq!(SockLb::unpin_and_detach(&pin_dir).expect("cleanup again"), Default::default());
}

#[test]
fn udp_replies_are_translated_back_across_a_restart() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let dns = UdpEchoBackend::start(Ipv4Addr::new(127, 0, 0, 2));
    // In 127.0.0.0/8: a datagram left unrewritten stays on this host.
    let service = SocketAddr::from((Ipv4Addr::new(127, 96, 0, 20), 10053));
    let udp = Frontend { ip: service.ip(), port: service.port(), protocol: Protocol::Udp };
    let wait = Duration::from_secs(2);
    let mut client = SocketClient::udp(&cgroup);

    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");
        let _attachment = lb.attach(&cgroup.path).expect("attach");
        lb.maps().upsert_service(udp, &entry(&[Backend { ip: dns.addr.ip(), port: dns.addr.port() }])).expect("upsert");
        client.send_to(service, "before").expect("sendto");
    } // the agent exits with the reply waiting in the client's socket

    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load again");
    assert!(lb.attach(&cgroup.path).expect("attach again").reused_pinned_link());
    assert_eq!(client.recv_from(wait), Some((service, format!("{} before", dns.addr))), "translated back");
    client.send_to(service, "after").expect("sendto");
    assert_eq!(client.recv_from(wait), Some((service, format!("{} after", dns.addr))));
    assert_eq!(lb.reverse_nat().expect("reverse").len(), 1, "the entry written before the restart serves on");
}

#[test]
fn a_pinned_attach_that_fails_halfway_leaves_nothing_attached() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");
    // Something that is not a link where the third program's link is to be pinned: the
    // first two are attached and pinned, then pinning the third fails.
    let squatter = pin_dir.join(format!("{}_link", PROGRAM_NAMES[2]));
    std::os::unix::fs::symlink("nowhere", &squatter).expect("symlink on bpffs");

    let error = lb.attach(&cgroup.path).err().expect("the pin is taken");
    assert_eq!(error.to_string(), format!("pin the pinned bpf object {}", squatter.display()));
    assert_eq!(cgroup.attached_programs(), "", "the programs attached before the failure were detached");
    for name in PROGRAM_NAMES {
        let pin = pin_dir.join(format!("{name}_link"));
        assert!(pin == squatter || !pin.exists(), "{} unpinned", pin.display());
    }
    std::fs::remove_file(&squatter).expect("remove the squatter");
    let attachment = lb.attach(&cgroup.path).expect("attach once the pin is free");
    assert!(!attachment.reused_pinned_link());
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len());
}

#[test]
fn a_services_map_pinned_with_the_layout_before_affinity_is_recreated_with_its_services() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let web = TcpBackend::start();
    // In 127.0.0.0/8: a connect the programs failed to rewrite stays on this host.
    let vip = SocketAddr::from((Ipv4Addr::new(127, 96, 3, 20), 80));
    let service = Frontend { ip: vip.ip(), port: vip.port(), protocol: Protocol::Tcp };
    std::fs::create_dir(&pin_dir).expect("pin dir");
    // What the previous nodelet left: 12-byte values, no affinity fields.
    pin_services_map_of_12_byte_values(&pin_dir, service, &[loopback(web.port)]);
    let error = SockLb::pinned_services(&pin_dir).expect_err("another layout");
    assert!(error.to_string().contains("another layout"), "{error}");

    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");

    assert!(lb.maps_reused(), "the services were carried over");
    let carried = [(service, entry(&[loopback(web.port)]))];
    assert_eq!(lb.maps().services().expect("read back"), carried, "entries copied, no affinity");
    assert_eq!(SockLb::pinned_services(&pin_dir).expect("the new map").expect("pinned"), carried);
    let _attachment = lb.attach(&cgroup.path).expect("attach");
    let run = tcp_connects_from(&cgroup, vip, 3);
    assert_eq!(run.answers, vec![web.port.to_string(); 3], "served from the new map; stderr: {}", run.stderr);
}

#[test]
fn a_pinned_map_of_an_unknown_layout_is_recreated_empty() {
    require_root();
    let bpffs = TestBpffs::mount();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    std::fs::create_dir(&pin_dir).expect("pin dir");
    pin_hash_map_of_layout(&pin_dir, "lb4_services", 20, 12);
    pin_hash_map_of_layout(&pin_dir, "lb4_affinity", 16, 32);
    pin_hash_map_of_layout(&pin_dir, "lb6_services", 28, 16);
    pin_hash_map_of_layout(&pin_dir, "lb6_reverse_sk", 20, 20);

    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");

    assert!(!lb.maps_reused(), "nothing could be carried over");
    assert!(lb.maps().services().expect("read back").is_empty());
    assert!(lb.affinity().expect("the new affinity map").is_empty());
    assert!(lb.reverse_nat().expect("the new reverse maps").is_empty());
    assert_eq!(SockLb::pinned_services(&pin_dir).expect("the new maps"), Some(vec![]));
}

#[test]
fn a_pin_dir_outside_bpffs_is_refused() {
    require_root();
    let dir = std::env::temp_dir().join(format!("nodelet-not-bpffs-{}", std::process::id()));
    let error = SockLb::load_pinned(MapSizes::default(), &dir).err().expect("refused");
    assert!(error.to_string().contains("not on a bpffs"), "{error}");
    assert!(!dir.exists());
}

/// An IPv6 Service address: nothing routes it in the test network namespace.
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd6e, 0x96, 0, 0, 0, 0, 0, 0x20);

fn answers_in(cgroup: &TestCgroup, netns: &TestNetns, target: SocketAddr, count: usize) -> Vec<String> {
    let run = tcp_connects_in(cgroup, netns, target, count);
    assert_eq!(run.answers.len(), count, "stderr: {}", run.stderr);
    run.answers
}

#[test]
fn pinned_ipv6_services_survive_the_loader_and_are_read_back() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let netns = TestNetns::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let first = TcpBackend::start_in(&netns, IpAddr::V6(Ipv6Addr::LOCALHOST));
    let second = TcpBackend::start_in(&netns, IpAddr::V6(Ipv6Addr::LOCALHOST));
    let web = Frontend { ip: IpAddr::V6(VIP6), port: 80, protocol: Protocol::Tcp };
    let vip = SocketAddr::from((VIP6, 80));
    let v6_entry = |backend: &TcpBackend| entry(&[Backend { ip: backend.addr.ip(), port: backend.port }]);

    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");
        let _attachment = lb.attach(&cgroup.path).expect("attach");
        lb.maps().upsert_service(frontend(80), &entry(&[loopback(first.port)])).expect("upsert v4");
        lb.maps().upsert_service(web, &v6_entry(&first)).expect("upsert v6");
    } // the agent exits

    assert_eq!(answers_in(&cgroup, &netns, vip, 3), vec![first.addr.to_string(); 3], "still served");
    let pinned = SockLb::pinned_services(&pin_dir).expect("read pinned").expect("something pinned");
    assert_eq!(pinned, [(frontend(80), entry(&[loopback(first.port)])), (web, v6_entry(&first))], "both families");

    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load again");
    assert!(lb.maps_reused());
    assert_eq!(lb.maps().services().expect("read back"), pinned, "the maps kept their contents");
    assert!(lb.attach(&cgroup.path).expect("attach again").reused_pinned_link());
    lb.maps().upsert_service(web, &v6_entry(&second)).expect("upsert");
    assert_eq!(answers_in(&cgroup, &netns, vip, 3), vec![second.addr.to_string(); 3], "the change took effect");
}

#[test]
fn a_pin_dir_from_before_ipv6_gains_the_ipv6_maps_and_links_and_keeps_serving_ipv4() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let netns = TestNetns::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let web4 = TcpBackend::start();
    let web6 = TcpBackend::start_in(&netns, IpAddr::V6(Ipv6Addr::LOCALHOST));
    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load pinned");
        let _attachment = lb.attach(&cgroup.path).expect("attach");
        lb.maps().upsert_service(frontend(80), &entry(&[loopback(web4.port)])).expect("upsert");
    }
    unpin_ipv6_part(&pin_dir);
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len() / 2, "{}", cgroup.attached_programs());

    let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load over the old pins");

    assert!(lb.maps_reused(), "the IPv4 services map was there");
    assert_eq!(lb.maps().services().expect("read back"), [(frontend(80), entry(&[loopback(web4.port)]))]);
    let attachment = lb.attach(&cgroup.path).expect("attach");
    assert!(!attachment.reused_pinned_link(), "the IPv6 links are new");
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len(), "the IPv4 links reused, not duplicated");
    assert_eq!(answers(&cgroup, 80, 3), vec![web4.port.to_string(); 3], "IPv4 served throughout");
    let web = Frontend { ip: IpAddr::V6(VIP6), port: 80, protocol: Protocol::Tcp };
    lb.maps().upsert_service(web, &entry(&[Backend { ip: web6.addr.ip(), port: web6.port }])).expect("upsert v6");
    assert_eq!(answers_in(&cgroup, &netns, SocketAddr::from((VIP6, 80)), 3), vec![web6.addr.to_string(); 3]);
}
