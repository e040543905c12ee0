//! Pod egress, in a node of the test's own: the pod network runs inside a network namespace
//! that plays the node (so the host's firewall and forwarding are never touched), joined by a
//! veth pair to another namespace that plays a host outside the cluster, which has no route
//! to the pod CIDR. A pod's connection reaches it from the node's address (masqueraded) and
//! gets its answer; removing the network removes the rules.

mod network_support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use network_support::Fixture;
use nix::sched::CloneFlags;
use nodelet_runtime::network::PodNetwork;

const NODE_IP: &str = "10.253.0.1";
const OUTSIDE_IP: &str = "10.253.0.2";
const PORT: &str = "7000";

/// The two namespaces and the outside server; all removed on drop, also when the test fails.
struct Topology {
    node: String,
    outside: String,
    server: Option<Child>,
}

impl Topology {
    fn create(tag: &str) -> Topology {
        let topology = Topology { node: format!("nle-{tag}-n"), outside: format!("nle-{tag}-o"), server: None };
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        run(&["netns", "add", &topology.node]);
        run(&["netns", "add", &topology.outside]);
        // Both ends are created inside the namespaces: nothing appears on the host.
        let (node_if, outside_if) = (format!("nle{tag}n"), format!("nle{tag}o"));
        run(&[
            "link",
            "add",
            &node_if,
            "netns",
            &topology.node,
            "type",
            "veth",
            "peer",
            "name",
            &outside_if,
            "netns",
            &topology.outside,
        ]);
        run(&["-n", &topology.node, "addr", "add", &format!("{NODE_IP}/24"), "dev", &node_if]);
        run(&["-n", &topology.outside, "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", &outside_if]);
        for (ns, link) in [(&topology.node, &node_if), (&topology.outside, &outside_if)] {
            run(&["-n", ns, "link", "set", "lo", "up"]);
            run(&["-n", ns, "link", "set", link, "up"]);
        }
        topology
    }

    /// One connection served outside: it answers with the address it came from.
    fn start_server(&mut self) {
        let script = format!(
            "import socket, sys\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{OUTSIDE_IP}', {PORT})); s.listen(1); print('ready', flush=True)\n\
             c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.outside, "python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready");
        self.server = Some(child);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in [&self.node, &self.outside] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// `iptables -t nat -S` as the calling thread's network namespace sees it.
fn nat_rules() -> String {
    let out = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connect from the pod's namespace to the outside server; what it answered.
fn connect_from(netns: &Path) -> String {
    let script = format!(
        "import socket\ns = socket.create_connection(('{OUTSIDE_IP}', {PORT}), timeout=5)\n\
         print(s.recv(100).decode())\n"
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["python3", "-c", &script])
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "pod connection failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pod_egress_leaves_masqueraded_and_the_rules_go_with_the_network() {
    let mut fixture = Fixture::new(30, 24);
    fixture.config.masquerade = true;
    let tag = fixture.config.bridge[3..9].to_string();
    let mut topology = Topology::create(&tag);
    topology.start_server();
    let config = fixture.config.clone();
    let id = fixture.id("egress");
    let node_ns = Path::new("/run/netns").join(&topology.node);

    // Everything of the pod network happens on a thread inside the node's namespace: its
    // netlink sockets, the iptables it runs, the forwarding sysctl it writes.
    let (answer, rules_while_up, rules_after) = std::thread::spawn(move || {
        let node = File::open(&node_ns).expect("open node netns");
        nix::sched::setns(&node, CloneFlags::CLONE_NEWNET).expect("enter node netns");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let network = PodNetwork::new(config).await.expect("pod network");
            let sandbox = network.setup(&id).await.expect("sandbox");
            let rules_while_up = nat_rules();
            let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
            assert_eq!(forwarding.trim(), "1", "forwarding on in the node's namespace");
            let answer = connect_from(&sandbox.netns_path);
            network.teardown(&id).await.expect("teardown");
            network.remove_bridge().await.expect("remove");
            (answer, rules_while_up, nat_rules())
        })
    })
    .join()
    .expect("node thread");

    assert_eq!(answer, NODE_IP, "the outside host saw the pod's connection come from the node");
    assert!(
        rules_while_up.contains("-A POSTROUTING -m comment --comment \"nodelet pod egress\" -j NODELET-POSTROUTING"),
        "{rules_while_up}"
    );
    assert!(rules_while_up.contains("-A NODELET-POSTROUTING -s 10.244.30.0/24 -j MASQUERADE"), "{rules_while_up}");
    assert!(!rules_after.contains("NODELET"), "rules left behind:\n{rules_after}");
}
