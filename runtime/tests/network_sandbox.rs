//! Pod sandbox networks on the real kernel (needs root): setup, idempotency, teardown,
//! address reuse and exhaustion, rollback, recovery from half-done state.
//!
//! Subnets used here: 10.244.1.0 to 10.244.19.0 (one per test).

mod network_support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use network_support::{ip, is_mount_point, link_exists, Fixture};
use nodelet_runtime::network::{NetworkError, PodNetwork};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_builds_bridge_veth_netns_address_and_route() {
    let fx = Fixture::new(1, 24);
    let net = fx.network().await;
    let a = fx.id("a");
    let b = fx.id("b");

    let sa = net.setup(&a).await.expect("setup a");
    let sb = net.setup(&b).await.expect("setup b");

    assert_eq!(sa.ip, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(sb.ip, Ipv4Addr::new(10, 244, 1, 3));
    assert_eq!((sa.prefix_len, sa.gateway), (24, Ipv4Addr::new(10, 244, 1, 1)));
    assert_eq!(sa.netns_path, fx.netns_path(&a));
    assert!(sa.host_veth.len() <= 15);

    // The bridge: up, with the gateway address.
    let bridge = ip(None, &["-d", "addr", "show", "dev", &fx.config.bridge]).unwrap();
    assert!(bridge.contains("inet 10.244.1.1/24"), "{bridge}");
    assert!(bridge.contains("bridge"), "{bridge}");
    assert!(bridge.contains(",UP"), "{bridge}");

    for s in [&sa, &sb] {
        let host_end = ip(None, &["link", "show", "dev", &s.host_veth]).unwrap();
        assert!(host_end.contains(&format!("master {}", fx.config.bridge)), "{host_end}");
        assert!(host_end.contains("mtu 1400") && host_end.contains(",UP"), "{host_end}");

        assert!(is_mount_point(&s.netns_path), "{} not mounted", s.netns_path.display());
        let ns = Some(s.netns_path.as_path());
        let eth0 = ip(ns, &["addr", "show", "dev", "eth0"]).unwrap();
        assert!(eth0.contains(&format!("inet {}/24", s.ip)), "{eth0}");
        assert!(eth0.contains("mtu 1400") && eth0.contains(",UP"), "{eth0}");
        let lo = ip(ns, &["link", "show", "dev", "lo"]).unwrap();
        assert!(lo.contains(",UP"), "{lo}");
        let routes = ip(ns, &["route", "show", "default"]).unwrap();
        assert!(routes.contains("default via 10.244.1.1 dev eth0"), "{routes}");
        // The peer was created straight in the sandbox: the host end points to another netns.
        assert!(host_end.contains("link-netns"), "{host_end}");
        assert_eq!(std::fs::read_to_string(fx.ip_file(s.ip)).unwrap(), s.id);
    }

    let listed = net.list().unwrap();
    assert_eq!(listed, vec![sa, sb]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_new_are_idempotent() {
    let fx = Fixture::new(2, 24);
    let net = fx.network().await;
    let _again = fx.network().await; // the bridge exists already: fine
    let a = fx.id("a");

    let first = net.setup(&a).await.expect("first setup");
    let second = net.setup(&a).await.expect("second setup");
    assert_eq!(first, second);
    assert_eq!(net.list().unwrap().len(), 1);
    let addrs = ip(Some(&first.netns_path), &["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_setups_get_distinct_addresses() {
    let fx = Fixture::new(3, 24);
    let net = fx.network().await;
    let ids: Vec<String> = (0..6).map(|i| fx.id(&format!("c{i}"))).collect();

    let results = futures::future::join_all(ids.iter().map(|id| net.setup(id))).await;
    let ips: BTreeSet<Ipv4Addr> = results.into_iter().map(|r| r.expect("setup").ip).collect();
    assert_eq!(ips.len(), ids.len());
    for id in &ids {
        net.teardown(id).await.expect("teardown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_leaves_nothing_and_is_idempotent() {
    let fx = Fixture::new(4, 24);
    let net = fx.network().await;
    let a = fx.id("a");
    let s = net.setup(&a).await.expect("setup");

    net.teardown(&a).await.expect("teardown");
    assert!(!link_exists(&s.host_veth, None), "host veth left");
    assert!(!is_mount_point(&s.netns_path), "netns still mounted");
    assert!(!s.netns_path.exists(), "netns file left");
    assert!(!fx.ip_file(s.ip).exists(), "address record left");
    assert!(net.list().unwrap().is_empty());

    net.teardown(&a).await.expect("second teardown");
    net.teardown(&fx.id("never-set-up")).await.expect("teardown of unknown id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_copes_with_half_removed_sandbox() {
    let fx = Fixture::new(5, 24);
    let net = fx.network().await;
    let a = fx.id("a");
    let s = net.setup(&a).await.expect("setup");

    // Someone removed the namespace already (which takes the veth pair with it).
    nix::mount::umount2(&s.netns_path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(&s.netns_path).unwrap();

    net.teardown(&a).await.expect("teardown of half-removed sandbox");
    assert!(!fx.ip_file(s.ip).exists());
    assert!(!link_exists(&s.host_veth, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_reused_after_teardown() {
    let fx = Fixture::new(6, 24);
    let net = fx.network().await;
    let (a, b, c) = (fx.id("a"), fx.id("b"), fx.id("c"));
    let sa = net.setup(&a).await.unwrap();
    let sb = net.setup(&b).await.unwrap();

    net.teardown(&a).await.unwrap();
    let sc = net.setup(&c).await.unwrap();
    assert_eq!(sc.ip, sa.ip, "lowest free address is handed out again");
    assert_ne!(sc.ip, sb.ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_cidr_is_exhausted_with_a_clear_error() {
    // A /30 has one address left after network, gateway and broadcast.
    let fx = Fixture::new(7, 30);
    let net = fx.network().await;
    let (a, b) = (fx.id("a"), fx.id("b"));
    let sa = net.setup(&a).await.expect("the one address");
    assert_eq!(sa.ip, Ipv4Addr::new(10, 244, 7, 2));

    let err = net.setup(&b).await.expect_err("second sandbox cannot fit");
    assert!(matches!(err, NetworkError::AddressesExhausted { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no free address") && msg.contains("10.244.7.0/30"), "{msg}");
    // Nothing was left behind for the failed sandbox.
    assert!(!fx.netns_path(&b).exists());
    assert_eq!(net.list().unwrap().len(), 1);

    net.teardown(&a).await.unwrap();
    assert_eq!(net.setup(&b).await.expect("fits after teardown").ip, sa.ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_setup_is_rolled_back() {
    let fx = Fixture::new(8, 24);
    let net = fx.network().await;
    let a = fx.id("a");
    let blocker = nodelet_runtime::network::host_veth_name(&a);
    // A foreign link already holds the name of the host veth: setup fails after it has
    // allocated an address and created the namespace.
    ip(None, &["link", "add", &blocker, "type", "bridge"]).expect("create blocker");

    let err = net.setup(&a).await.expect_err("veth name is taken");
    let msg = err.to_string();
    assert!(msg.contains(&blocker) && msg.contains("EEXIST"), "{msg}");
    assert!(net.list().unwrap().is_empty(), "address not released");
    assert!(!fx.netns_path(&a).exists(), "netns left");
    assert!(std::fs::read_dir(&fx.config.netns_dir).unwrap().next().is_none());
    assert!(std::fs::read_dir(&fx.config.state_dir).unwrap().next().is_none());
    // The foreign link is not ours to delete, not even by teardown.
    net.teardown(&a).await.unwrap();
    assert!(link_exists(&blocker, None), "rollback removed a link it did not create");

    ip(None, &["link", "del", &blocker]).unwrap();
    net.setup(&a).await.expect("setup once the name is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_repairs_an_interrupted_sandbox() {
    let fx = Fixture::new(9, 24);
    let net = fx.network().await;
    let a = fx.id("a");
    let s = net.setup(&a).await.unwrap();

    // The host veth vanished (e.g. the agent died mid-setup last time).
    ip(None, &["link", "del", &s.host_veth]).unwrap();
    let repaired = net.setup(&a).await.expect("setup again");
    assert_eq!(repaired, s);
    assert!(link_exists(&s.host_veth, None));
    let eth0 = ip(Some(&s.netns_path), &["addr", "show", "dev", "eth0"]).unwrap();
    assert!(eth0.contains(&format!("inet {}/24", s.ip)), "{eth0}");
    assert_eq!(net.list().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_survive_an_agent_restart() {
    let fx = Fixture::new(10, 24);
    let a = fx.id("a");
    let s = {
        let net = fx.network().await;
        net.setup(&a).await.unwrap()
    };
    let restarted = fx.network().await;
    assert_eq!(restarted.list().unwrap(), vec![s.clone()]);
    assert_eq!(restarted.setup(&a).await.unwrap(), s);
    assert!(link_exists(&s.host_veth, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_bridge_is_idempotent() {
    let fx = Fixture::new(11, 24);
    let net = fx.network().await;
    assert!(link_exists(&fx.config.bridge, None));
    net.remove_bridge().await.unwrap();
    assert!(!link_exists(&fx.config.bridge, None));
    net.remove_bridge().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_before_touching_the_host() {
    let fx = Fixture::new(12, 24);
    let mut cfg = fx.config.clone();
    cfg.bridge = "a-name-longer-than-15".to_string();
    assert!(matches!(PodNetwork::new(cfg).await, Err(NetworkError::InvalidConfig { .. })));

    let net = fx.network().await;
    let err = net.setup("../escape").await.expect_err("path in id");
    assert!(matches!(err, NetworkError::InvalidSandboxId { .. }), "{err:?}");
}

/// The agent shares one PodNetwork between pod workers and spawns their futures.
#[allow(dead_code)]
fn pod_network_is_shareable_and_its_futures_are_send(net: &'static PodNetwork) {
    fn check<T: Send + Sync>(_: &T) {}
    fn check_send<T: Send>(_: T) {}
    check(net);
    check_send(net.setup("x"));
    check_send(net.teardown("x"));
    check_send(net.remove_bridge());
    check_send(PodNetwork::new(Fixture::new(0, 24).config.clone()));
}
