//! The pinned load-balancer, as root: it keeps serving after the loader is dropped (an
//! agent exiting), a second load reuses its maps and link, and cleanup removes everything.
//! Pins live on a bpffs of the test's own; the program only on a cgroup of the test's own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use nodelet_ebpf::test_support::{
    attached_program_count, require_root, tcp_connects_from, TcpBackend, TestBpffs, TestCgroup, UnpinOnDrop,
};
use nodelet_ebpf::{Backend, Frontend, MapSizes, Protocol, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

fn frontend(port: u16) -> Frontend {
    Frontend { ip: IpAddr::V4(VIP), port, protocol: Protocol::Tcp }
}

fn loopback(port: u16) -> Backend {
    Backend { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port }
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
        lb.maps().upsert_service(frontend(80), &[loopback(first.port)]).expect("upsert");
    } // the loader is gone, as when the agent exits

    assert_eq!(answers(&cgroup, 80, 5), vec![first.port.to_string(); 5], "still served");
    let pinned = SockLb::pinned_services(&pin_dir).expect("read pinned").expect("something pinned");
    assert_eq!(pinned, [(frontend(80), vec![loopback(first.port)])]);

    {
        let mut lb = SockLb::load_pinned(MapSizes::default(), &pin_dir).expect("load again");
        assert!(lb.maps_reused());
        assert_eq!(lb.maps().services().expect("read back"), pinned, "the maps kept their contents");
        let attachment = lb.attach(&cgroup.path).expect("attach again");
        assert!(attachment.reused_pinned_link());
        lb.maps().upsert_service(frontend(80), &[loopback(second.port)]).expect("upsert");
    }
    assert_eq!(attached_program_count(&cgroup), 1, "the link was reused, not duplicated");
    assert_eq!(answers(&cgroup, 80, 5), vec![second.port.to_string(); 5], "the change took effect");

    let unpinned = SockLb::unpin_and_detach(&pin_dir).expect("cleanup");
    assert!(unpinned.link);
    assert_eq!(unpinned.maps, 1);
    assert_eq!(cgroup.attached_programs(), "", "nothing attached");
    assert!(!pin_dir.exists(), "no pin left");
    assert_eq!(SockLb::pinned_services(&pin_dir).expect("read"), None);
    assert_eq!(SockLb::unpin_and_detach(&pin_dir).expect("cleanup again"), Default::default());
}

#[test]
fn a_pin_dir_outside_bpffs_is_refused() {
    require_root();
    let dir = std::env::temp_dir().join(format!("nodelet-not-bpffs-{}", std::process::id()));
    let error = SockLb::load_pinned(MapSizes::default(), &dir).err().expect("refused");
    assert!(error.to_string().contains("not on a bpffs"), "{error}");
    assert!(!dir.exists());
}
