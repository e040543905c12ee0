//! The proxy's ingress datapath (the tc programs of `--nodeport-devices`) over the real
//! kernel, as root, fed through the proxy's own sync path: a client host, a node, its pods
//! and a pod of another node, each a network namespace of the test's own (ebpf's
//! `NodePortTopology`), the programs attached in the node's namespace only. The socket
//! half is the fake: nothing is attached to a cgroup.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use nodelet_ebpf::test_support::{
    ask, pod_ip, require_root, NodePortTopology, PodTcpServer, TestNetns, CLIENT_IP, EXTERNAL_INTERFACE, NODE_IP,
    NODE_IP_TO_REMOTE, OTHER_CLIENT_IP, POD_BRIDGE, REMOTE_INTERFACE, REMOTE_POD_IP,
};
use nodelet_ebpf::NodePortMapSizes;
use nodelet_proxy::datapath::{EbpfIngress, FakeDatapath};
use nodelet_proxy::{parse_service_objects, Changes, NodeTopology, Reconciler, ServiceObjects};

const POD_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(2);
/// How long a connection the datapath drops is given before it counts as dropped.
const DROPPED: Duration = Duration::from_millis(700);

/// `local`: NodePort 30080, externalTrafficPolicy Local, an endpoint in pod `local_pod` and
/// one on node-b. `cluster`: NodePort 30081, eTP Cluster, its one endpoint on node-b.
/// `restricted`: LoadBalancer on the node's address (port 80, NodePort 30082) open to
/// CLIENT_IP only, its endpoint in pod 1.
fn objects(local_pod: usize) -> ServiceObjects {
    let (local, remote, lb_pod) = (pod_ip(local_pod), REMOTE_POD_IP, pod_ip(1));
    let yaml = format!(
        "
kind: Service
apiVersion: v1
metadata: {{name: local, namespace: default}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
  ports: [{{name: http, port: 80, nodePort: 30080}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: local-1, namespace: default, labels: {{kubernetes.io/service-name: local}}}}
addressType: IPv4
ports: [{{name: http, port: {POD_PORT}}}]
endpoints:
  - {{addresses: [{local}], nodeName: node-a}}
  - {{addresses: [{remote}], nodeName: node-b}}
---
kind: Service
apiVersion: v1
metadata: {{name: cluster, namespace: default}}
spec:
  type: NodePort
  clusterIP: 10.96.0.11
  ports: [{{name: http, port: 80, nodePort: 30081}}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: cluster-1, namespace: default, labels: {{kubernetes.io/service-name: cluster}}}}
addressType: IPv4
ports: [{{name: http, port: {POD_PORT}}}]
endpoints: [{{addresses: [{remote}], nodeName: node-b}}]
---
kind: Service
apiVersion: v1
metadata: {{name: restricted, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  loadBalancerSourceRanges: [{CLIENT_IP}/32]
  ports: [{{name: http, port: 80, nodePort: 30082}}]
status: {{loadBalancer: {{ingress: [{{ip: {NODE_IP}}}]}}}}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: restricted-1, namespace: default, labels: {{kubernetes.io/service-name: restricted}}}}
addressType: IPv4
ports: [{{name: http, port: {POD_PORT}}}]
endpoints: [{{addresses: [{lb_pod}], nodeName: node-a}}]
"
    );
    parse_service_objects(&yaml, "test").expect("parse")
}

fn node() -> NodeTopology {
    NodeTopology { name: Some("node-a".into()), zone: None, node_port_addresses: vec![IpAddr::V4(NODE_IP)] }
}

fn at(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP, port)
}

/// Field order is drop order: detach (with the reconciler), stop the servers, then delete
/// the namespaces.
struct Setup {
    reconciler: Option<Reconciler<FakeDatapath>>,
    servers: Vec<PodTcpServer>,
    _remote_server: PodTcpServer,
    topology: NodePortTopology,
}

impl Setup {
    /// Two pods and the remote one serving, the ingress datapath attached in the node to
    /// both external interfaces and the pod bridge, the objects synced.
    fn new() -> Setup {
        require_root();
        let topology = NodePortTopology::create(2);
        let servers = (0..2).map(|n| PodTcpServer::start(&topology.pods[n], pod_ip(n), POD_PORT)).collect();
        let remote_server = PodTcpServer::start(&topology.remote, REMOTE_POD_IP, POD_PORT);
        let sizes = NodePortMapSizes { services: 64, source_ranges: 64, conntrack: 1024 };
        let ingress = topology
            .node
            .run(|| EbpfIngress::new(&[EXTERNAL_INTERFACE, REMOTE_INTERFACE], POD_BRIDGE, sizes))
            .expect("attach the ingress datapath in the node namespace");
        let mut reconciler = Reconciler::new(FakeDatapath::new()).with_ingress(ingress);
        let ServiceObjects { services, slices } = objects(0);
        reconciler.sync(&services, &slices, &node()).expect("first sync");
        Setup { reconciler: Some(reconciler), servers, _remote_server: remote_server, topology }
    }

    /// Who served a connection from `source` to `target`, and whom it saw.
    fn served(&self, source: std::net::Ipv4Addr, target: SocketAddrV4) -> (SocketAddr, IpAddr) {
        let mut stream = self.topology.tcp_connect(source, target, WAIT).expect("connect");
        ask(&mut stream, "hello").expect("an answer")
    }
}

#[test]
fn node_ports_reach_pods_as_the_traffic_policies_say() {
    let setup = Setup::new();
    for _ in 0..4 {
        let (pod, peer) = setup.served(CLIENT_IP, at(30080));
        assert_eq!(pod, setup.servers[0].addr, "externalTrafficPolicy Local: this node's pod only");
        assert_eq!(peer, IpAddr::V4(CLIENT_IP), "the pod sees the client");
    }
    let (pod, peer) = setup.served(CLIENT_IP, at(30081));
    assert_eq!(pod.ip(), IpAddr::V4(REMOTE_POD_IP), "Cluster: the other node's pod");
    assert_eq!(peer, IpAddr::V4(NODE_IP_TO_REMOTE), "reached behind the node's address");
}

#[test]
fn source_ranges_drop_other_clients_of_load_balancer_ips_only() {
    let setup = Setup::new();
    let (pod, peer) = setup.served(CLIENT_IP, at(80));
    assert_eq!((pod, peer), (setup.servers[1].addr, IpAddr::V4(CLIENT_IP)));
    let dropped = setup.topology.tcp_connect(OTHER_CLIENT_IP, at(80), DROPPED);
    assert!(dropped.is_err(), "a client outside loadBalancerSourceRanges got through");
    let (pod, _) = setup.served(OTHER_CLIENT_IP, at(30082));
    assert_eq!(pod, setup.servers[1].addr, "the Service's NodePort is not restricted");
}

#[test]
fn a_partial_sync_moves_the_node_port_and_dropping_detaches() {
    let mut setup = Setup::new();
    let ServiceObjects { slices, .. } = objects(1);
    let moved = slices.into_iter().find(|s| s.metadata.name.as_deref() == Some("local-1")).expect("the slice");
    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(moved));
    let reconciler = setup.reconciler.as_mut().expect("running");
    let stats = reconciler.apply_changes(changes).expect("partial sync");
    assert_eq!(stats.upserted, 3, "the socket's ClusterIP and NodePort, and the NodePort's ingress entry");
    let (pod, _) = setup.served(CLIENT_IP, at(30080));
    assert_eq!(pod, setup.servers[1].addr);

    setup.reconciler = None;
    let refused = setup.topology.tcp_connect(CLIENT_IP, at(30080), WAIT);
    assert!(refused.is_err(), "the node has no listener on the NodePort once the programs are detached");
}

#[test]
fn a_missing_device_fails_the_attach_naming_it() {
    require_root();
    // A namespace with nothing but its loopback: neither interface exists there.
    let netns = TestNetns::create();
    let sizes = NodePortMapSizes { services: 8, source_ranges: 8, conntrack: 64 };
    let error = match netns.run(|| EbpfIngress::new(&["ext0"], "nodelet0", sizes)) {
        Ok(_) => panic!("attached to interfaces that do not exist"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(message.contains("devices ext0 and pod bridge nodelet0"), "{message}");
}
