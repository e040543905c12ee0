//! The proxy over the real eBPF datapath, as root, attached to a cgroup of
//! the test's own: a Service + EndpointSlice pointing at loopback listeners
//! make the VIP reachable; an EndpointSlice change moves it to a new backend;
//! a UDP Service answers from its ClusterIP; NodePorts, externalIPs and LoadBalancer IPs
//! (loopback addresses standing in for the node's and the Service's) reach the backends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_ebpf::test_support::{
    require_root, tcp_connects_from, SocketClient, TcpBackend, TestCgroup, UdpEchoBackend,
};
use nodelet_proxy::datapath::EbpfDatapath;
use nodelet_proxy::table::node_port_addresses;
use nodelet_proxy::{
    parse_service_objects, run_static, Backend, Changes, Frontend, NodeTopology, Protocol, ProxyConfig, Reconciler,
    ServiceEntry, SessionAffinity,
};
use tokio_util::sync::CancellationToken;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// A VIP for tests that may connect before it is programmed: unprogrammed it
/// is plain loopback (refused at once), so no packet leaves the host.
const LOOPBACK_VIP: Ipv4Addr = Ipv4Addr::new(127, 96, 0, 10);

/// A Service on `vip`:80 whose slice points at 127.0.0.1:`backend_port`.
fn web_objects(vip: Ipv4Addr, backend_port: u16) -> (Vec<Service>, Vec<EndpointSlice>) {
    let yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {vip}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"
    );
    let objects = parse_service_objects(&yaml, "test").expect("parse");
    (objects.services, objects.slices)
}

fn vip() -> SocketAddr {
    SocketAddr::from((VIP, 80))
}

fn loopback_vip() -> SocketAddr {
    SocketAddr::from((LOOPBACK_VIP, 80))
}

#[test]
fn slice_changes_move_the_vip_to_the_new_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let first = TcpBackend::start();
    let second = TcpBackend::start();
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));

    let (services, slices) = web_objects(VIP, first.port);
    reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync first");
    let run = tcp_connects_from(&cgroup, vip(), 4);
    assert_eq!(run.answers, vec![first.port.to_string(); 4], "stderr: {}", run.stderr);

    let (services, slices) = web_objects(VIP, second.port);
    let stats = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync second");
    assert_eq!(stats.upserted, 1);
    let run = tcp_connects_from(&cgroup, vip(), 4);
    assert_eq!(run.answers, vec![second.port.to_string(); 4], "stderr: {}", run.stderr);

    let programmed = reconciler.datapath_mut().read_back().expect("read back");
    assert_eq!(programmed.len(), 1);

    reconciler.sync(&services, &[], &NodeTopology::default()).expect("sync without endpoints");
    let run = tcp_connects_from(&cgroup, vip(), 1);
    assert_eq!(run.answers, ["refused"], "no ready endpoint: ECONNREFUSED");

    drop(reconciler);
    assert_eq!(cgroup.attached_programs(), "", "dropping the datapath detaches");
}

#[test]
fn partial_syncs_move_the_vip_and_remove_a_deleted_service() {
    require_root();
    let cgroup = TestCgroup::create();
    let first = TcpBackend::start();
    let second = TcpBackend::start();
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    let (services, slices) = web_objects(VIP, first.port);
    reconciler.sync(&services, &slices, &NodeTopology::default()).expect("full sync");

    let (_, moved) = web_objects(VIP, second.port);
    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(moved[0].clone()));
    let stats = reconciler.apply_changes(changes).expect("slice changed");
    assert_eq!((stats.upserted, stats.removed), (1, 0));
    let run = tcp_connects_from(&cgroup, vip(), 4);
    assert_eq!(run.answers, vec![second.port.to_string(); 4], "stderr: {}", run.stderr);

    let mut changes = Changes::new();
    changes.service_deleted(&services[0]);
    let stats = reconciler.apply_changes(changes).expect("service deleted");
    assert_eq!((stats.upserted, stats.removed), (0, 1));
    assert!(reconciler.datapath_mut().read_back().expect("read back").is_empty());
    let problems: Vec<String> = reconciler.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems, ["EndpointSlice default/web-1: its Service default/web does not exist: not used"]);
}

#[tokio::test]
async fn run_static_serves_the_vip_until_shutdown() {
    require_root();
    let cgroup = TestCgroup::create();
    let backend = TcpBackend::start();
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let (services, slices) = web_objects(LOOPBACK_VIP, backend.port);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_static(services, slices, cfg, shutdown.clone()));

    let mut answers = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answers = tcp_connects_from(&cgroup, loopback_vip(), 1).answers;
        if answers == [backend.port.to_string()] {
            break;
        }
    }
    assert_eq!(answers, [backend.port.to_string()]);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .expect("task")
        .expect("run_static");
    assert_eq!(cgroup.attached_programs(), "", "detached after shutdown");
}

/// kube-dns' UDP port on `vip`:10053, its slice pointing at `backend` (a loopback echo).
fn dns_objects(vip: Ipv4Addr, backend: Option<SocketAddr>) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: kube-dns, namespace: kube-system}}
spec:
  clusterIP: {vip}
  ports: [{{name: dns, port: 10053, protocol: UDP, targetPort: dns}}]
"
    );
    if let Some(backend) = backend {
        yaml.push_str(&format!(
            "---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: kube-dns-1, namespace: kube-system, labels: {{kubernetes.io/service-name: kube-dns}}}}
addressType: IPv4
ports: [{{name: dns, port: {port}, protocol: UDP}}]
endpoints: [{{addresses: ['{ip}']}}]
",
            port = backend.port(),
            ip = backend.ip(),
        ));
    }
    let objects = parse_service_objects(&yaml, "test").expect("parse");
    (objects.services, objects.slices)
}

#[test]
fn a_udp_cluster_ip_is_balanced_and_answers_from_its_address() {
    require_root();
    let cgroup = TestCgroup::create();
    let dns = UdpEchoBackend::start(Ipv4Addr::new(127, 0, 0, 2));
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    // A loopback ClusterIP: a datagram left unrewritten stays on this host.
    let cluster_ip = SocketAddr::from((LOOPBACK_VIP, 10053));
    let wait = Duration::from_secs(2);

    let (services, slices) = dns_objects(LOOPBACK_VIP, Some(dns.addr));
    reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync");
    let programmed = reconciler.datapath_mut().read_back().expect("read back");
    let frontend = Frontend { ip: IpAddr::V4(LOOPBACK_VIP), port: 10053, protocol: Protocol::Udp };
    let backend = Backend { ip: dns.addr.ip(), port: dns.addr.port() };
    assert_eq!(programmed.into_iter().collect::<Vec<_>>(), [(frontend, ServiceEntry::new(vec![backend]))]);

    let mut unconnected = SocketClient::udp(&cgroup);
    unconnected.send_to(cluster_ip, "query").expect("sendto");
    assert_eq!(unconnected.recv_from(wait), Some((cluster_ip, format!("{} query", dns.addr))));
    let mut connected = SocketClient::udp(&cgroup);
    connected.connect(cluster_ip).expect("connect");
    assert_eq!(connected.peer_addr().expect("getpeername"), cluster_ip);
    connected.send("query").expect("send");
    assert_eq!(connected.recv_from(wait), Some((cluster_ip, format!("{} query", dns.addr))));

    let (services, slices) = dns_objects(LOOPBACK_VIP, None);
    reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync without endpoints");
    let error = unconnected.send_to(cluster_ip, "query").expect_err("no ready endpoint");
    assert!(error.contains("Connection refused"), "{error}");

    reconciler.sync(&[], &[], &NodeTopology::default()).expect("sync without the Service");
    unconnected.send_to(cluster_ip, "query").expect("sendto, not rewritten");
    assert_eq!(unconnected.recv_from(Duration::from_millis(300)), None, "nothing listens at the ClusterIP itself");
}

/// A Service on `vip`:80 with `sessionAffinity: ClientIP` (and `internalTrafficPolicy: Local`
/// on node-a), one slice per backend (each on its own port), the last backend on node-b.
fn sticky_objects(vip: Ipv4Addr, backends: &[&TcpBackend]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: sticky, namespace: default}}
spec:
  clusterIP: {vip}
  sessionAffinity: ClientIP
  internalTrafficPolicy: Local
  ports: [{{name: http, port: 80, targetPort: http}}]
"
    );
    for (index, backend) in backends.iter().enumerate() {
        let node = if index + 1 == backends.len() { "node-b" } else { "node-a" };
        yaml.push_str(&format!(
            "---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: sticky-{index}, namespace: default, labels: {{kubernetes.io/service-name: sticky}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ['{ip}'], nodeName: {node}}}]
",
            port = backend.addr.port(),
            ip = backend.addr.ip(),
        ));
    }
    let objects = parse_service_objects(&yaml, "test").expect("parse");
    (objects.services, objects.slices)
}

#[test]
fn a_client_ip_service_keeps_a_client_on_one_local_backend() {
    require_root();
    let cgroup = TestCgroup::create();
    let backends: Vec<TcpBackend> = (2..=5).map(|last| TcpBackend::start_on(Ipv4Addr::new(127, 0, 0, last))).collect();
    let cfg = ProxyConfig {
        attach_cgroup: cgroup.path.clone(),
        node_name: Some(String::from("node-a")),
        ..ProxyConfig::default()
    };
    let node = NodeTopology::named("node-a");
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    let (services, slices) = sticky_objects(LOOPBACK_VIP, &backends.iter().collect::<Vec<_>>());

    reconciler.sync(&services, &slices, &node).expect("sync");
    let run = tcp_connects_from(&cgroup, loopback_vip(), 20);

    assert_eq!(run.answers.len(), 20, "stderr: {}", run.stderr);
    assert!(run.answers.iter().all(|answer| *answer == run.answers[0]), "one backend: {:?}", run.answers);
    let remote = backends[3].addr.to_string();
    assert_ne!(run.answers[0], remote, "node-b's endpoint is not used by node-a's ClusterIP");
    let programmed = reconciler.datapath_mut().read_back().expect("read back");
    let entry = programmed.values().next().expect("the frontend");
    assert_eq!(entry.affinity, SessionAffinity::ClientIp { timeout_seconds: 10_800 }, "the API default");
    assert_eq!(entry.backends.len(), 3, "the three endpoints of node-a");
}

/// A LoadBalancer Service with an externalIP and an ingress IP (127.0.0.77 and .78: left
/// unrewritten, a connection to them stays on this host), nodePort 30080, and one endpoint
/// at 127.0.0.1:`backend_port`.
fn load_balancer_objects(backend_port: u16) -> (Vec<Service>, Vec<EndpointSlice>) {
    let yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: lb, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: {LOOPBACK_VIP}
  externalIPs: [127.0.0.77]
  externalTrafficPolicy: Local
  ports: [{{name: http, port: 80, nodePort: 30080}}]
status:
  loadBalancer:
    ingress: [{{ip: 127.0.0.78}}, {{ip: 127.0.0.79, ipMode: Proxy}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: lb-1, namespace: default, labels: {{kubernetes.io/service-name: lb}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], nodeName: node-b}}]
"
    );
    let objects = parse_service_objects(&yaml, "test").expect("parse");
    (objects.services, objects.slices)
}

#[test]
fn node_ports_external_ips_and_load_balancer_ips_reach_the_backends() {
    require_root();
    let cgroup = TestCgroup::create();
    let backend = TcpBackend::start();
    let cfg = ProxyConfig { attach_cgroup: cgroup.path.clone(), pin_dir: None, ..ProxyConfig::default() };
    let mut reconciler = Reconciler::new(EbpfDatapath::new(&cfg).expect("datapath"));
    // The node's addresses: 127.0.0.2 as its InternalIP, and 127.0.0.1 as kube-proxy adds.
    let node = NodeTopology {
        node_port_addresses: node_port_addresses(&[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))], &[]),
        ..NodeTopology::named("node-a")
    };
    let (services, slices) = load_balancer_objects(backend.port);
    reconciler.sync(&services, &slices, &node).expect("sync");

    let targets = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, 30080)),
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 30080)),
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 77), 80)),
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 78), 80)),
        loopback_vip(),
    ];
    for target in targets {
        let run = tcp_connects_from(&cgroup, target, 2);
        // externalTrafficPolicy: Local, and the only endpoint is on node-b: traffic that
        // starts on this node still reaches it, as kube-proxy sends it.
        assert_eq!(run.answers, vec![backend.port.to_string(); 2], "{target}: stderr: {}", run.stderr);
    }
    let run = tcp_connects_from(&cgroup, SocketAddr::from((Ipv4Addr::new(127, 0, 0, 79), 80)), 1);
    assert_eq!(run.answers, ["refused"], "an ipMode: Proxy ingress IP is left to the load-balancer");
    let kinds: Vec<String> = reconciler.kinds().values().map(ToString::to_string).collect();
    assert_eq!(kinds, ["NodePort", "NodePort", "ExternalIP", "LoadBalancer", "ClusterIP"]);

    reconciler.sync(&[], &[], &node).expect("sync without the Service");
    assert!(reconciler.datapath_mut().read_back().expect("read back").is_empty());
    for target in targets {
        let run = tcp_connects_from(&cgroup, target, 1);
        assert_eq!(run.answers, ["refused"], "{target}: no longer rewritten, nothing listens there");
    }
}

#[test]
fn a_non_cgroup2_attach_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ProxyConfig { attach_cgroup: dir.path().to_path_buf(), pin_dir: None, ..ProxyConfig::default() };
    let error = EbpfDatapath::new(&cfg).err().expect("not a cgroup2 dir");
    assert!(error.to_string().contains("not a cgroup2 directory"), "{error}");
}
