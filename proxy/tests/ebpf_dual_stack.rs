//! A dual-stack Service over the real eBPF datapath, as root: the proxy attached to a cgroup
//! of the test's own, clients and backends in a network namespace of the test's own (its
//! loopback only, so that nothing dialled here can leave the host). The Service's IPv4
//! frontends reach its IPv4 backend and its IPv6 frontends (cluster IP and NodePort) its
//! IPv6 backend, each family fed by its own EndpointSlice; the datapath reads both
//! families back, and removing the Service removes both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nodelet_ebpf::test_support::{require_root, tcp_connects_in, TcpBackend, TestCgroup, TestNetns};
use nodelet_proxy::datapath::EbpfDatapath;
use nodelet_proxy::table::node_port_addresses;
use nodelet_proxy::{parse_service_objects, IpFamily, NodeTopology, ProxyConfig, Reconciler};

/// The Service's IPv4 cluster IP: in 127.0.0.0/8, so it stays on loopback if untranslated.
const VIP4: Ipv4Addr = Ipv4Addr::new(127, 96, 6, 20);
/// Its IPv6 cluster IP: nothing in the test namespace routes it.
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd6e, 0x96, 0, 0, 0, 0, 0, 0x20);
/// The IPv6 backend, on the namespace's loopback.
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd6e, 0x244, 0, 0, 0, 0, 0, 0x2);
/// The node's IPv6 InternalIP, on the namespace's loopback (its NodePorts are served there).
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd6e, 0x2, 0, 0, 0, 0, 0, 0x1);
const NODE_PORT: u16 = 30620;

fn dual_stack_objects(backend4: SocketAddr, backend6: SocketAddr) -> String {
    format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIPs: [{VIP4}, \"{VIP6}\"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{{name: http, port: 80, nodePort: {NODE_PORT}}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-v4, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port4}}}]
endpoints: [{{addresses: [\"{ip4}\"]}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-v6, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv6
ports: [{{name: http, port: {port6}}}]
endpoints: [{{addresses: [\"{ip6}\"]}}]
",
        port4 = backend4.port(),
        ip4 = backend4.ip(),
        port6 = backend6.port(),
        ip6 = backend6.ip(),
    )
}

#[test]
fn each_family_of_a_dual_stack_service_reaches_its_own_backends() {
    require_root();
    let cgroup = TestCgroup::create();
    let netns = TestNetns::create();
    netns.add_address(IpAddr::V6(BACKEND6));
    netns.add_address(IpAddr::V6(NODE6));
    let backend4 = TcpBackend::start_in(&netns, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let backend6 = TcpBackend::start_in(&netns, IpAddr::V6(BACKEND6));
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    let node = NodeTopology {
        node_port_addresses: node_port_addresses(&[IpAddr::V6(NODE6), IpAddr::V6(Ipv6Addr::LOCALHOST)], &[]),
        ..NodeTopology::named("node-a")
    };
    let objects = parse_service_objects(&dual_stack_objects(backend4.addr, backend6.addr), "test").expect("parse");
    reconciler.sync(&objects.services, &objects.slices, &node).expect("sync");

    let expect = |target: SocketAddr, backend: &TcpBackend| {
        let run = tcp_connects_in(&cgroup, &netns, target, 2);
        assert_eq!(run.answers, vec![backend.addr.to_string(); 2], "{target}: stderr: {}", run.stderr);
    };
    expect(SocketAddr::from((VIP4, 80)), &backend4);
    expect(SocketAddr::from((Ipv4Addr::LOCALHOST, NODE_PORT)), &backend4);
    expect(SocketAddr::from((VIP6, 80)), &backend6);
    expect(SocketAddr::from((NODE6, NODE_PORT)), &backend6);

    let programmed = reconciler.datapath_mut().read_back().expect("read back");
    let families: Vec<(IpFamily, Vec<IpFamily>)> = programmed
        .iter()
        .map(|(frontend, entry)| {
            (IpFamily::of(frontend.ip), entry.backends.iter().map(|backend| IpFamily::of(backend.ip)).collect())
        })
        .collect();
    let v4 = (IpFamily::V4, vec![IpFamily::V4]);
    let v6 = (IpFamily::V6, vec![IpFamily::V6]);
    assert_eq!(families, [v4.clone(), v4, v6.clone(), v6], "{programmed:?}: no NodePort on ::1");

    reconciler.sync(&[], &[], &node).expect("sync without the Service");
    assert!(reconciler.datapath_mut().read_back().expect("read back").is_empty());
    for target in [SocketAddr::from((VIP6, 80)), SocketAddr::from((NODE6, NODE_PORT))] {
        let run = tcp_connects_in(&cgroup, &netns, target, 1);
        assert_eq!(run.answers, ["refused"], "{target}: no longer rewritten, nothing listens there");
    }
}
