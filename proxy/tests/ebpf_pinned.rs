//! The proxy restarted over a pinned datapath, as root: pins on a bpffs of the test's own,
//! the program on a cgroup of the test's own. The VIP keeps answering between the two
//! proxies, the second one starts from what the maps hold (nothing rewritten), and a
//! changed endpoint still takes effect.

use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_ebpf::test_support::{
    attached_program_count, require_root, tcp_connects_from, TcpBackend, TestBpffs, TestCgroup, UnpinOnDrop,
    PROGRAM_NAMES,
};
use nodelet_proxy::datapath::{EbpfDatapath, SyncStats};
use nodelet_proxy::{parse_service_objects, NodeTopology, ProxyConfig, Reconciler, SockLb};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);

fn objects(backend_ports: &[u16]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {VIP}
  ports: [{{name: http, port: 80}}]
"
    );
    for (index, port) in backend_ports.iter().enumerate() {
        yaml.push_str(&format!(
            "---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-{index}, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"
        ));
    }
    let objects = parse_service_objects(&yaml, "test").expect("parse");
    (objects.services, objects.slices)
}

fn answers(cgroup: &TestCgroup) -> Vec<String> {
    let run = tcp_connects_from(cgroup, SocketAddr::from((VIP, 80)), 4);
    assert_eq!(run.answers.len(), 4, "stderr: {}", run.stderr);
    run.answers
}

#[test]
fn a_restarted_proxy_resumes_from_the_pinned_maps() {
    require_root();
    let bpffs = TestBpffs::mount();
    let cgroup = TestCgroup::create();
    let pin_dir = bpffs.path.join("nodelet");
    let _cleanup = UnpinOnDrop(&pin_dir);
    let cfg =
        ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: Some(pin_dir.clone()), ..ProxyConfig::default() };
    let (first, second) = (TcpBackend::start(), TcpBackend::start());
    let (services, slices) = objects(&[first.port]);

    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    assert_eq!(reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync").upserted, 1);
    drop(reconciler); // the proxy exits
    assert_eq!(answers(&cgroup), vec![first.port.to_string(); 4], "served while no proxy runs");

    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath again"));
    let stats = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("same table");
    assert_eq!(stats, SyncStats { upserted: 0, removed: 0, unchanged: 1 }, "nothing rewritten");
    let (services, slices) = objects(&[second.port]);
    assert_eq!(reconciler.sync(&services, &slices, &NodeTopology::default()).expect("changed backend").upserted, 1);
    assert_eq!(answers(&cgroup), vec![second.port.to_string(); 4]);
    drop(reconciler);
    assert_eq!(attached_program_count(&cgroup), PROGRAM_NAMES.len(), "the pinned links were reused, not duplicated");

    SockLb::unpin_and_detach(&pin_dir).expect("cleanup");
    assert_eq!(cgroup.attached_programs(), "");
    assert!(!pin_dir.exists());
}
