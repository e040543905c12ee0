//! The tc datapath for traffic entering the node, end to end, as root: a client host, a
//! node and pods, each a network namespace of the test's own (see `NodePortTopology`),
//! the programs attached in the node's namespace (`np4_ingress` on its external
//! interface, `np4_reply` on its pod bridge). Packets go client → node:NodePort → pod and
//! back for real; nothing leaves the test's namespaces.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use aya::programs::tc::TcAttachType;
use aya::programs::SchedClassifier;

use nodelet_ebpf::test_support::{
    ask, pod_ip, require_root, NodePortTopology, PodTcpServer, UdpEchoBackend, CLIENT_IP, EXTERNAL_INTERFACE, NODE_IP,
    NODE_IP_TO_REMOTE, OTHER_CLIENT_IP, POD_BRIDGE, REMOTE_INTERFACE, REMOTE_POD_IP,
};
use nodelet_ebpf::{
    Backend, Frontend, NodePortError, NodePortLb, NodePortMapSizes, NodePortService, Protocol, SourceRange,
    TcAttachment, MAX_BACKENDS, SNAT_PORTS,
};

const NODE_PORT: u16 = 30080;
const POD_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(2);
/// How long a connection the datapath drops is given before it counts as dropped.
const DROPPED: Duration = Duration::from_millis(700);

fn frontend(protocol: Protocol) -> Frontend {
    Frontend { ip: IpAddr::V4(NODE_IP), port: NODE_PORT, protocol }
}

fn frontend_addr() -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP, NODE_PORT)
}

fn backend(addr: SocketAddr) -> Backend {
    Backend { ip: addr.ip(), port: addr.port() }
}

fn service(backends: impl IntoIterator<Item = SocketAddr>) -> NodePortService {
    NodePortService { backends: backends.into_iter().map(backend).collect(), ..NodePortService::default() }
}

fn remote_service(remote: impl IntoIterator<Item = SocketAddr>) -> NodePortService {
    NodePortService { remote_backends: remote.into_iter().map(backend).collect(), ..NodePortService::default() }
}

/// The programs attached in the node of a fresh topology, with a TCP server on port 8080
/// of every pod and of the remote pod. Field order is drop order: detach, unload, stop the servers, then delete
/// the namespaces.
struct Setup {
    attachment: Option<TcAttachment>,
    lb: NodePortLb,
    servers: Vec<PodTcpServer>,
    remote_server: PodTcpServer,
    topology: NodePortTopology,
}

impl Setup {
    fn new(pods: usize) -> Setup {
        require_root();
        let topology = NodePortTopology::create(pods);
        let servers = (0..pods).map(|n| PodTcpServer::start(&topology.pods[n], pod_ip(n), POD_PORT)).collect();
        let remote_server = PodTcpServer::start(&topology.remote, REMOTE_POD_IP, POD_PORT);
        let sizes = NodePortMapSizes { services: 64, source_ranges: 64, conntrack: 1024 };
        let mut lb = NodePortLb::load_with(sizes).expect("load the nodeport load-balancer");
        let attachment = topology
            .node
            .run(|| lb.attach(&[EXTERNAL_INTERFACE, REMOTE_INTERFACE], &[POD_BRIDGE]))
            .expect("attach in the node namespace");
        Setup { attachment: Some(attachment), lb, servers, remote_server, topology }
    }

    fn pod(&self, n: usize) -> SocketAddr {
        self.servers[n].addr
    }

    fn remote_pod(&self) -> SocketAddr {
        self.remote_server.addr
    }

    fn connect(&self, source: Ipv4Addr) -> std::net::TcpStream {
        self.topology.tcp_connect(source, frontend_addr(), WAIT).expect("connect to the NodePort")
    }

    /// The tcx ingress programs of the node's external interface and pod bridge, as
    /// `interface:program` (bpftool 7.1 does not list tcx links yet).
    fn node_tc_programs(&self) -> Vec<String> {
        self.topology.node.run(|| {
            let mut listed = Vec::new();
            for interface in [EXTERNAL_INTERFACE, REMOTE_INTERFACE, POD_BRIDGE] {
                let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress).expect("query tcx");
                for program in programs {
                    listed.push(format!("{interface}:{}", program.name_as_str().unwrap_or_default()));
                }
            }
            listed
        })
    }
}

#[test]
fn tcp_to_a_node_port_reaches_the_pod_with_the_clients_address_and_replies_come_from_the_frontend() {
    let mut setup = Setup::new(1);
    let tcp = frontend(Protocol::Tcp);
    setup.lb.set_service(&tcp, &service([setup.pod(0)])).unwrap();

    let mut stream = setup.connect(CLIENT_IP);
    // The handshake completed, so the SYN-ACK came from the address dialled.
    assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(frontend_addr()));
    let (served_by, client_seen) = ask(&mut stream, "hello").unwrap();
    assert_eq!(served_by, setup.pod(0));
    // No SNAT: the pod sees the client's own address (externalTrafficPolicy: Local).
    assert_eq!(client_seen, IpAddr::V4(CLIENT_IP));

    let local = stream.local_addr().unwrap();
    let flows = setup.lb.conntrack().unwrap();
    let flow = flows.iter().find(|f| SocketAddr::V4(f.client) == local).expect("the flow is tracked");
    assert_eq!(
        (flow.protocol, flow.frontend, SocketAddr::V4(flow.backend)),
        (Protocol::Tcp, frontend_addr(), setup.pod(0))
    );

    // Other ports of the node are none of the datapath's business.
    let closed = setup.topology.tcp_connect(CLIENT_IP, SocketAddrV4::new(NODE_IP, NODE_PORT + 1), WAIT);
    assert_eq!(closed.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn udp_to_a_node_port_is_answered_from_the_frontend() {
    let mut setup = Setup::new(1);
    let echo = UdpEchoBackend::start_in(&setup.topology.pods[0], IpAddr::V4(pod_ip(0)));
    setup.lb.set_service(&frontend(Protocol::Udp), &service([echo.addr])).unwrap();

    let socket = setup.topology.udp_socket(CLIENT_IP);
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    for n in 0..3 {
        socket.send_to(format!("ping {n}").as_bytes(), frontend_addr()).unwrap();
        let (len, from) = socket.recv_from(&mut buf).expect("an answer to the datagram");
        assert_eq!(from, SocketAddr::V4(frontend_addr()), "answers come from the frontend");
        assert_eq!(String::from_utf8_lossy(&buf[..len]), format!("{} ping {n}", echo.addr));
    }
    let flows = setup.lb.conntrack().unwrap();
    assert_eq!(flows.len(), 1, "one flow for the socket's datagrams: {flows:?}");
    assert_eq!(flows[0].protocol, Protocol::Udp);
}

#[test]
fn conntrack_keeps_flows_on_their_backend_when_the_maglev_table_changes() {
    let mut setup = Setup::new(3);
    let tcp = frontend(Protocol::Tcp);
    setup.lb.set_service(&tcp, &service([setup.pod(0)])).unwrap();
    let mut old: Vec<_> = (0..8).map(|_| setup.connect(CLIENT_IP)).collect();
    for stream in &mut old {
        assert_eq!(ask(stream, "before").unwrap().0, setup.pod(0));
    }

    setup.lb.set_service(&tcp, &service([setup.pod(0), setup.pod(1), setup.pod(2)])).unwrap();
    // The new table gives each of these flows pod 1 or 2 with odds 2/3: conntrack keeps
    // them all on pod 0.
    for stream in &mut old {
        assert_eq!(ask(stream, "after").unwrap().0, setup.pod(0), "a tracked flow changed backend");
    }
    let mut served = BTreeSet::new();
    for _ in 0..24 {
        let mut stream = setup.connect(CLIENT_IP);
        served.insert(ask(&mut stream, "new").unwrap().0);
    }
    assert!(served.len() > 1, "new flows use the new table: all went to {served:?}");

    // A backend removed: its flows are forgotten, the others kept.
    setup.lb.set_service(&tcp, &service([setup.pod(1), setup.pod(2)])).unwrap();
    let flows = setup.lb.conntrack().unwrap();
    assert!(flows.iter().all(|f| SocketAddr::V4(f.backend) != setup.pod(0)), "{flows:?}");
    assert!(!flows.is_empty());
}

#[test]
fn source_ranges_drop_other_clients() {
    let mut setup = Setup::new(1);
    let tcp = frontend(Protocol::Tcp);
    let pod = backend(setup.pod(0));
    let only = |ranges: &[&str]| NodePortService {
        backends: vec![pod],
        remote_backends: Vec::new(),
        source_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
    };
    let allowed = only(&["10.90.0.2/32"]);
    setup.lb.set_service(&tcp, &allowed).unwrap();
    let mut stream = setup.connect(CLIENT_IP);
    assert_eq!(ask(&mut stream, "allowed").unwrap().1, IpAddr::V4(CLIENT_IP));
    let refused = setup.topology.tcp_connect(OTHER_CLIENT_IP, frontend_addr(), DROPPED);
    assert!(refused.is_err(), "a client outside the source ranges got through");

    // A wider range lets it in; the old entry is replaced, not kept besides.
    let widened = only(&["10.90.0.0/30"]);
    setup.lb.set_service(&tcp, &widened).unwrap();
    let mut stream = setup.topology.tcp_connect(OTHER_CLIENT_IP, frontend_addr(), WAIT).unwrap();
    assert_eq!(ask(&mut stream, "now allowed").unwrap().1, IpAddr::V4(OTHER_CLIENT_IP));
    let read_back = setup.lb.services().unwrap();
    assert_eq!(read_back, vec![(tcp, widened)]);

    // A range that covers neither address, then none at all (everyone allowed).
    setup.lb.set_service(&tcp, &only(&["192.0.2.0/24"])).unwrap();
    assert!(setup.topology.tcp_connect(CLIENT_IP, frontend_addr(), DROPPED).is_err());
    setup.lb.set_service(&tcp, &only(&[])).unwrap();
    assert!(setup.topology.tcp_connect(OTHER_CLIENT_IP, frontend_addr(), WAIT).is_ok());
    assert_eq!(setup.lb.services().unwrap()[0].1.source_ranges, Vec::<SourceRange>::new());
}

#[test]
fn a_frontend_without_backends_drops_and_a_removed_one_is_forgotten() {
    let mut setup = Setup::new(1);
    let tcp = frontend(Protocol::Tcp);
    setup.lb.set_service(&tcp, &service([setup.pod(0)])).unwrap();
    let mut stream = setup.connect(CLIENT_IP);
    ask(&mut stream, "hello").unwrap();

    setup.lb.set_service(&tcp, &service([])).unwrap();
    assert!(setup.lb.conntrack().unwrap().is_empty(), "flows of the removed backend are forgotten");
    assert!(setup.topology.tcp_connect(CLIENT_IP, frontend_addr(), DROPPED).is_err());

    setup.lb.set_service(&tcp, &service([setup.pod(0)])).unwrap();
    ask(&mut setup.connect(CLIENT_IP), "again").unwrap();
    setup.lb.remove_service(&tcp).unwrap();
    assert_eq!(setup.lb.services().unwrap(), Vec::new());
    assert!(setup.lb.conntrack().unwrap().is_empty());
    // Removing again is no error.
    setup.lb.remove_service(&tcp).unwrap();
    // Without a frontend the node's own stack answers: nothing listens there.
    let refused = setup.topology.tcp_connect(CLIENT_IP, frontend_addr(), WAIT);
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_remote_backend_is_reached_with_snat_and_answers_from_the_frontend() {
    let mut setup = Setup::new(0);
    let tcp = frontend(Protocol::Tcp);
    setup.lb.set_service(&tcp, &remote_service([setup.remote_pod()])).unwrap();

    let mut stream = setup.connect(CLIENT_IP);
    assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(frontend_addr()));
    for n in 0..3 {
        let (served_by, client_seen) = ask(&mut stream, &format!("request {n}")).unwrap();
        assert_eq!(served_by, setup.remote_pod());
        // SNAT: the remote pod sees the node's address towards it (externalTrafficPolicy: Cluster).
        assert_eq!(client_seen, IpAddr::V4(NODE_IP_TO_REMOTE));
    }
    let flows = setup.lb.conntrack().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let snat = flows[0].snat.expect("the flow is SNATed");
    assert_eq!(*snat.ip(), NODE_IP_TO_REMOTE);
    assert!(SNAT_PORTS.contains(&snat.port()), "{snat}");
    assert_eq!(SocketAddr::V4(flows[0].client), stream.local_addr().unwrap());
    assert_eq!(setup.lb.services().unwrap()[0].1, remote_service([setup.remote_pod()]));

    // UDP too.
    let echo = UdpEchoBackend::start_in(&setup.topology.remote, IpAddr::V4(REMOTE_POD_IP));
    setup.lb.set_service(&frontend(Protocol::Udp), &remote_service([echo.addr])).unwrap();
    let socket = setup.topology.udp_socket(CLIENT_IP);
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    socket.send_to(b"ping", frontend_addr()).unwrap();
    let (len, from) = socket.recv_from(&mut buf).expect("an answer from the remote backend");
    assert_eq!(from, SocketAddr::V4(frontend_addr()));
    assert_eq!(String::from_utf8_lossy(&buf[..len]), format!("{} ping", echo.addr));
}

#[test]
fn a_remote_backend_behind_the_clients_interface_is_reached_by_hairpin() {
    let mut setup = Setup::new(0);
    // The backend is on the client's link (another address of the client host): the
    // packets leave by the interface they came in by.
    let server = PodTcpServer::start(&setup.topology.client, OTHER_CLIENT_IP, POD_PORT);
    setup.lb.set_service(&frontend(Protocol::Tcp), &remote_service([server.addr])).unwrap();
    let mut stream = setup.connect(CLIENT_IP);
    assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(frontend_addr()));
    assert_eq!(ask(&mut stream, "hairpin").unwrap(), (server.addr, IpAddr::V4(NODE_IP)));
}

#[test]
fn cluster_policy_spreads_over_local_and_remote_backends() {
    let mut setup = Setup::new(1);
    let tcp = frontend(Protocol::Tcp);
    let both = NodePortService {
        backends: vec![backend(setup.pod(0))],
        remote_backends: vec![backend(setup.remote_pod())],
        ..NodePortService::default()
    };
    setup.lb.set_service(&tcp, &both).unwrap();
    let mut seen = BTreeSet::new();
    for n in 0..16 {
        let mut stream = setup.connect(CLIENT_IP);
        seen.insert(ask(&mut stream, &format!("request {n}")).unwrap());
    }
    // The local pod sees the client, the remote one the node.
    let expected =
        BTreeSet::from([(setup.pod(0), IpAddr::V4(CLIENT_IP)), (setup.remote_pod(), IpAddr::V4(NODE_IP_TO_REMOTE))]);
    assert_eq!(seen, expected);

    // The remote backend removed: its SNATed flows are forgotten, the local ones kept.
    setup.lb.set_service(&tcp, &service([setup.pod(0)])).unwrap();
    let flows = setup.lb.conntrack().unwrap();
    assert!(!flows.is_empty() && flows.iter().all(|f| f.snat.is_none()), "{flows:?}");
}

#[test]
fn bad_frontends_and_backends_are_refused_by_name() {
    require_root();
    let mut lb = NodePortLb::load_with(NodePortMapSizes { services: 4, source_ranges: 4, conntrack: 16 }).unwrap();
    let v6 = Frontend { ip: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 80, protocol: Protocol::Tcp };
    assert!(matches!(lb.set_service(&v6, &NodePortService::default()), Err(NodePortError::NotIpv4Frontend { .. })));
    let sctp = Frontend { protocol: Protocol::Sctp, ..frontend(Protocol::Tcp) };
    assert!(matches!(
        lb.set_service(&sctp, &NodePortService::default()),
        Err(NodePortError::UnsupportedProtocol { .. })
    ));
    let v6_backend = service([SocketAddr::from((Ipv6Addr::LOCALHOST, 80))]);
    let error = lb.set_service(&frontend(Protocol::Tcp), &v6_backend).unwrap_err();
    assert!(error.to_string().contains("[::1]:80"), "{error}");
    let many = service((0..=MAX_BACKENDS as u32).map(|n| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + n), 80))));
    assert!(matches!(lb.set_service(&frontend(Protocol::Tcp), &many), Err(NodePortError::TooManyBackends { .. })));
    assert_eq!(lb.services().unwrap(), Vec::new(), "nothing was written");
}

#[test]
fn attaching_is_all_or_none_and_dropping_the_guard_detaches() {
    let mut setup = Setup::new(1);
    let attached = vec![
        format!("{EXTERNAL_INTERFACE}:np4_ingress"),
        format!("{REMOTE_INTERFACE}:np4_ingress"),
        format!("{POD_BRIDGE}:np4_reply"),
    ];
    // tcx links (Linux 6.6 and later: this test's kernel).
    assert_eq!(setup.node_tc_programs(), attached);

    setup.attachment.take().expect("attached").detach().unwrap();
    assert_eq!(setup.node_tc_programs(), Vec::<String>::new(), "detached");

    // An interface that does not exist: what was attached before it is undone.
    let lb = &mut setup.lb;
    let failed = setup.topology.node.run(|| lb.attach(&[EXTERNAL_INTERFACE, "nosuch0"], &[POD_BRIDGE]));
    assert!(matches!(&failed, Err(NodePortError::Attach { interface, .. }) if interface == "nosuch0"), "{failed:?}");
    drop(failed);
    assert_eq!(setup.node_tc_programs(), Vec::<String>::new(), "nothing left attached");
    assert!(matches!(setup.lb.attach(&[], &[POD_BRIDGE]), Err(NodePortError::NoInterfaces { side: "external" })));

    // Dropped: detached.
    let external = [EXTERNAL_INTERFACE, REMOTE_INTERFACE];
    let attachment = setup.topology.node.run(|| setup.lb.attach(&external, &[POD_BRIDGE])).unwrap();
    assert_eq!(
        attachment.interfaces(),
        vec![(POD_BRIDGE, "np4_reply"), (EXTERNAL_INTERFACE, "np4_ingress"), (REMOTE_INTERFACE, "np4_ingress")]
    );
    assert_eq!(setup.node_tc_programs(), attached);
    drop(attachment);
    assert_eq!(setup.node_tc_programs(), Vec::<String>::new());
}
