//! Partial syncs must leave exactly what a full rebuild gives: random sequences of Service
//! and EndpointSlice adds, updates and deletes, applied as changes, checked after every
//! step against `build_table` of the objects at that point (table, frontend kinds, health
//! checks, problems, the ingress table, and what the fake datapaths hold). The objects are drawn from small
//! pools, so that Services contend for frontends (cluster IPs, externalIPs, LoadBalancer
//! IPs and NodePorts on the node's addresses alike, of both IP families), IPv4, IPv6 and
//! dual-stack Services come and go with IPv4, IPv6 and FQDN slices, slices move between
//! Services and bad objects come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::Reconciler;
use crate::datapath::{FailingDatapath, FakeDatapath, FakeIngress, SyncStats};
use crate::table::{build_table, Changes, IpFamily, NodeTopology, Problem, SERVICE_NAME_LABEL};

const NAMESPACES: [&str; 2] = ["a", "b"];
const SERVICES: [&str; 5] = ["s0", "s1", "s2", "s3", "s4"];
const SLICES: [&str; 6] = ["e0", "e1", "e2", "e3", "e4", "e5"];
const CLUSTER_IPS: [&str; 6] = ["10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.300", "None", ""];
/// IPv6 cluster IPs, and the node's IPv6 address (which contends with its NodePorts).
const CLUSTER_IPS_V6: [&str; 4] = ["fd00:96::1", "fd00:96::2", "fd00::a", "fd00:96::zz"];
/// `ipFamilyPolicy`: unset, the API's three, and one it would refuse.
const FAMILY_POLICIES: [Option<&str>; 5] =
    [None, Some("SingleStack"), Some("PreferDualStack"), Some("RequireDualStack"), Some("Elsewhere")];
/// (name, port, protocol): the Service ports, and the slice ports with the same name.
const PORTS: [(&str, i32, &str); 4] = [("http", 80, "TCP"), ("https", 443, "TCP"), ("dns", 53, "UDP"), ("", 80, "TCP")];
/// Service types, ExternalName now and then.
const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ClusterIP"];
/// nodePorts: 80 and the node address among the externalIPs make NodePorts contend with
/// externalIPs; 0 is none, 70000 invalid.
const NODE_PORTS: [i32; 5] = [30000, 30001, 80, 0, 30000];
/// externalIPs and ingress IPs: cluster IPs and a node address among them, so that kinds
/// contend for frontends.
const EXTERNAL_IPS: [&str; 8] =
    ["192.168.0.1", "10.96.0.1", "10.96.0.2", "198.51.100.1", "198.51.100.2", "fd00::1", "fd00::a", "fd00:96::1"];
const IP_MODES: [Option<&str>; 3] = [None, Some("VIP"), Some("Proxy")];
const ADDRESSES: [&str; 7] =
    ["10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.1.1", "10.244.1.2", "fd00::1", "not-an-ip"];
const ADDRESSES_V6: [&str; 5] = ["fd00:244::1", "fd00:244::2", "fd00:244:1::1", "10.244.0.1", "fd00::1"];
/// Slice address types: mostly IPv4 and IPv6, now and then FQDN.
const ADDRESS_TYPES: [&str; 5] = ["IPv4", "IPv6", "IPv4", "IPv6", "FQDN"];

type Key = (String, String);

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some(namespace.into()), name: Some(name.into()), ..ObjectMeta::default() }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("non-empty pool")
}

/// A few of `pool`, and now and then something that is not an IP address.
fn some_ips(rng: &mut StdRng, pool: &[&str]) -> Vec<String> {
    let mut ips: Vec<String> = (0..rng.gen_range(0..=2)).map(|_| (*pick(rng, pool)).to_owned()).collect();
    if rng.gen_ratio(1, 30) {
        ips.push("not-an-ip".into());
    }
    ips
}

fn random_ingress(rng: &mut StdRng) -> Option<ServiceStatus> {
    let ingress = some_ips(rng, &EXTERNAL_IPS)
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip),
            ip_mode: pick(rng, &IP_MODES).map(str::to_owned),
            ..LoadBalancerIngress::default()
        })
        .collect();
    rng.gen_ratio(2, 3).then(|| ServiceStatus {
        load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }),
        ..ServiceStatus::default()
    })
}

/// `clusterIP`, `clusterIPs` and `ipFamilies`: IPv4, IPv6 or dual-stack in either order, and
/// now and then what the API would refuse (two of one family, families that do not match).
fn random_cluster_ips(rng: &mut StdRng) -> (Option<String>, Option<Vec<String>>, Option<Vec<String>>) {
    let v4 = (*pick(rng, &CLUSTER_IPS)).to_owned();
    let v6 = (*pick(rng, &CLUSTER_IPS_V6)).to_owned();
    let (ips, families) = match rng.gen_range(0..6) {
        0 => return (Some(v4), None, None),
        1 => (vec![v4], vec!["IPv4"]),
        2 => (vec![v6], vec!["IPv6"]),
        3 => (vec![v4, v6], vec!["IPv4", "IPv6"]),
        4 => (vec![v6, v4], vec!["IPv6", "IPv4"]),
        _ => (vec![v4, (*pick(rng, &CLUSTER_IPS)).to_owned()], vec!["IPv4", "IPv6"]),
    };
    let families = rng.gen_ratio(4, 5).then(|| families.into_iter().map(str::to_owned).collect());
    (ips.first().cloned(), Some(ips), families)
}

fn random_service(rng: &mut StdRng, namespace: &str, name: &str) -> Service {
    let ports = (0..rng.gen_range(0..=2))
        .map(|_| {
            let (port_name, number, protocol) = *pick(rng, &PORTS);
            ServicePort {
                name: Some(port_name.into()),
                // Now and then a port the API would refuse.
                port: if rng.gen_ratio(1, 20) { 0 } else { number },
                protocol: Some(if rng.gen_ratio(1, 25) { "FOO" } else { protocol }.into()),
                node_port: rng.gen_ratio(2, 3).then(|| {
                    if rng.gen_ratio(1, 30) {
                        70_000
                    } else {
                        *pick(rng, &NODE_PORTS)
                    }
                }),
                ..ServicePort::default()
            }
        })
        .collect();
    let type_ = if rng.gen_ratio(1, 15) { "ExternalName" } else { *pick(rng, &TYPES) };
    let affinity = rng.gen_ratio(1, 4).then(|| SessionAffinityConfig {
        client_ip: Some(ClientIPConfig { timeout_seconds: Some(*pick(rng, &[60, 0, 10_800])) }),
    });
    let (cluster_ip, cluster_ips, ip_families) = random_cluster_ips(rng);
    Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip,
            cluster_ips,
            ip_families,
            ip_family_policy: pick(rng, &FAMILY_POLICIES).map(str::to_owned),
            ports: Some(ports),
            external_ips: rng.gen_ratio(1, 3).then(|| some_ips(rng, &EXTERNAL_IPS)),
            session_affinity: affinity.is_some().then(|| "ClientIP".into()),
            session_affinity_config: affinity,
            internal_traffic_policy: rng.gen_ratio(1, 4).then(|| "Local".into()),
            external_traffic_policy: rng
                .gen_ratio(1, 3)
                .then(|| *pick(rng, &["Local", "Cluster", "Elsewhere"]))
                .map(Into::into),
            health_check_node_port: rng.gen_ratio(1, 2).then(|| *pick(rng, &[32000, 32001, 0, -1])),
            allocate_load_balancer_node_ports: rng.gen_ratio(1, 5).then(|| rng.gen()),
            load_balancer_source_ranges: rng.gen_ratio(1, 6).then(|| random_source_ranges(rng)),
            publish_not_ready_addresses: rng.gen_ratio(1, 6).then_some(true),
            ..ServiceSpec::default()
        }),
        status: random_ingress(rng),
    }
}

/// `loadBalancerSourceRanges`: IPv4 and IPv6 ones, now and then one that is no CIDR.
fn random_source_ranges(rng: &mut StdRng) -> Vec<String> {
    let pool = ["203.0.113.0/24", "198.51.100.7/32", "fd00::/8"];
    let ranges = (0..rng.gen_range(0..=2)).map(|_| {
        let range = if rng.gen_ratio(1, 20) { "not-a-cidr" } else { *pick(rng, &pool) };
        range.to_owned()
    });
    ranges.collect()
}

fn random_slice(rng: &mut StdRng, namespace: &str, name: &str) -> EndpointSlice {
    let mut metadata = meta(namespace, name);
    metadata.labels = match rng.gen_range(0..12) {
        0 => None,
        1 => Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), String::new())])),
        _ => Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), (*pick(rng, &SERVICES)).to_owned())])),
    };
    let ports = (0..rng.gen_range(0..=2))
        .map(|_| {
            let (port_name, number, protocol) = *pick(rng, &PORTS);
            EndpointPort {
                name: Some(port_name.into()),
                port: Some(if rng.gen_ratio(1, 20) { 0 } else { number * 100 + rng.gen_range(0..2) }),
                protocol: Some(protocol.into()),
                ..EndpointPort::default()
            }
        })
        .collect();
    let address_type = *pick(rng, &ADDRESS_TYPES);
    let addresses: &[&str] = if address_type == "IPv6" { &ADDRESSES_V6 } else { &ADDRESSES };
    let endpoints = (0..rng.gen_range(0..=4))
        .map(|_| Endpoint {
            addresses: vec![(*pick(rng, addresses)).into()],
            conditions: rng.gen_ratio(2, 3).then(|| EndpointConditions {
                ready: Some(rng.gen_ratio(2, 3)),
                serving: Some(rng.gen()),
                terminating: Some(rng.gen()),
            }),
            node_name: Some((*pick(rng, &["node-a", "node-b"])).into()),
            hints: rng
                .gen_ratio(1, 3)
                .then(|| EndpointHints { for_zones: Some(vec![ForZone { name: (*pick(rng, &["z1", "z2"])).into() }]) }),
            ..Endpoint::default()
        })
        .collect();
    EndpointSlice { metadata, address_type: address_type.into(), endpoints, ports: Some(ports) }
}

/// The objects as the API holds them, and the same as changes not yet synced.
#[derive(Default)]
struct World {
    services: BTreeMap<Key, Service>,
    slices: BTreeMap<Key, EndpointSlice>,
}

impl World {
    /// One random add, update or delete, recorded in `changes`.
    fn step(&mut self, rng: &mut StdRng, changes: &mut Changes) {
        let namespace = *pick(rng, &NAMESPACES);
        match rng.gen_range(0..10) {
            0..=2 => {
                let name = *pick(rng, &SERVICES);
                let service = random_service(rng, namespace, name);
                changes.service_applied(Arc::new(service.clone()));
                self.services.insert((namespace.into(), name.into()), service);
            }
            3 => {
                let key = (namespace.to_owned(), (*pick(rng, &SERVICES)).to_owned());
                // Deleting what does not exist happens too (a stale delete).
                let service = self
                    .services
                    .remove(&key)
                    .unwrap_or_else(|| Service { metadata: meta(&key.0, &key.1), ..Service::default() });
                changes.service_deleted(&service);
            }
            4..=8 => {
                let name = *pick(rng, &SLICES);
                let slice = random_slice(rng, namespace, name);
                changes.slice_applied(Arc::new(slice.clone()));
                self.slices.insert((namespace.into(), name.into()), slice);
            }
            _ => {
                let key = (namespace.to_owned(), (*pick(rng, &SLICES)).to_owned());
                let slice = self
                    .slices
                    .remove(&key)
                    .unwrap_or_else(|| EndpointSlice { metadata: meta(&key.0, &key.1), ..EndpointSlice::default() });
                changes.slice_deleted(&slice);
            }
        }
    }
}

fn node() -> NodeTopology {
    let node_port_addresses =
        ["127.0.0.1", "192.168.0.1", "fd00::a"].iter().map(|ip| ip.parse().expect("ip")).collect();
    NodeTopology { name: Some("node-a".into()), zone: Some("z1".into()), node_port_addresses }
}

#[test]
fn partial_syncs_equal_a_full_rebuild() {
    let mut conflicts_seen = false;
    let mut kinds_seen = BTreeSet::new();
    let mut families_seen = BTreeSet::new();
    let mut health_checks_seen = 0;
    let mut ingress_seen = IngressSeen::default();
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let fake = FakeDatapath::new();
        let ingress = FakeIngress::new();
        let mut reconciler = Reconciler::new(fake.clone()).with_ingress(ingress.clone());
        let mut world = World::default();
        reconciler.sync(world.services.values(), world.slices.values(), &node()).expect("first sync");
        for step in 0..40 {
            let mut changes = Changes::new();
            for _ in 0..rng.gen_range(1..=4) {
                world.step(&mut rng, &mut changes);
            }
            reconciler.apply_changes(changes).expect("partial sync");

            let expected = build_table(world.services.values(), world.slices.values(), &node());
            let context = format!("seed {seed}, step {step}");
            assert_eq!(reconciler.table(), &expected.table, "{context}: table");
            assert_eq!(fake.table(), expected.table, "{context}: what the datapath holds");
            assert_eq!(reconciler.kinds(), &expected.kinds, "{context}: frontend kinds");
            assert_eq!(reconciler.health_checks(), expected.health_checks, "{context}: health checks");
            assert_eq!(reconciler.ingress_table(), &expected.ingress, "{context}: ingress table");
            assert_eq!(ingress.table(), expected.ingress, "{context}: what the ingress datapath holds");
            ingress_seen.note(&expected.ingress);
            kinds_seen.extend(expected.kinds.iter().map(|(frontend, kind)| (IpFamily::of(frontend.ip), *kind)));
            families_seen.extend(expected.table.iter().flat_map(|(frontend, entry)| {
                entry.backends.iter().map(|backend| (IpFamily::of(frontend.ip), IpFamily::of(backend.ip)))
            }));
            health_checks_seen += expected.health_checks.len();
            let problems: BTreeSet<Problem> = expected.problems.iter().cloned().collect();
            assert_eq!(reconciler.problems(), &problems, "{context}: problems");
            conflicts_seen |= problems.iter().any(|p| p.message.contains("already belongs to"));
        }
        assert_eq!(fake.applies(), 1, "seed {seed}: only the first sync applies the whole table");
        assert_eq!(ingress.applies(), 1, "seed {seed}: the ingress table too");
    }
    assert!(ingress_seen.local && ingress_seen.remote && ingress_seen.ranges, "{ingress_seen:?}");
    assert!(conflicts_seen, "the pools make Services contend for frontends");
    assert_eq!(kinds_seen.len(), 8, "every kind of frontend was built, of both families: {kinds_seen:?}");
    let same_family = BTreeSet::from([(IpFamily::V4, IpFamily::V4), (IpFamily::V6, IpFamily::V6)]);
    assert_eq!(families_seen, same_family, "backends of both families, each for its own family's frontends");
    assert!(health_checks_seen > 0, "health checks were built");
}

/// What the ingress tables of a run held at some point.
#[derive(Debug, Default)]
struct IngressSeen {
    local: bool,
    remote: bool,
    ranges: bool,
}

impl IngressSeen {
    fn note(&mut self, table: &crate::table::IngressTable) {
        for service in table.values() {
            self.local |= !service.backends.is_empty();
            self.remote |= !service.remote_backends.is_empty();
            self.ranges |= !service.source_ranges.is_empty();
        }
    }
}

#[test]
fn a_full_sync_after_partial_ones_changes_nothing() {
    let mut rng = StdRng::seed_from_u64(7);
    let fake = FakeDatapath::new();
    let ingress = FakeIngress::new();
    let mut reconciler = Reconciler::new(fake.clone()).with_ingress(ingress.clone());
    let mut world = World::default();
    reconciler.sync(world.services.values(), world.slices.values(), &node()).expect("first sync");
    for _ in 0..100 {
        let mut changes = Changes::new();
        world.step(&mut rng, &mut changes);
        reconciler.apply_changes(changes).expect("partial sync");
    }
    let (writes, ingress_writes) = (fake.writes(), ingress.writes());
    let stats = reconciler.sync(world.services.values(), world.slices.values(), &node()).expect("resync");
    assert_eq!((stats.upserted, stats.removed), (0, 0), "{stats:?}");
    assert_eq!((fake.writes(), ingress.writes()), (writes, ingress_writes));
}

#[test]
fn one_endpoint_change_writes_one_ingress_frontend() {
    let service = |name: &str, ip: &str, node_port: i32| Service {
        metadata: meta("a", name),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port: Some(node_port),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let services = [service("s0", "10.96.1.0", 30000), service("s1", "10.96.1.1", 30001)];
    let slice = |node: &str| EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), "s0".to_owned())])),
            ..meta("a", "s0-x")
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["10.244.0.1".into()],
            node_name: Some(node.into()),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..EndpointPort::default() }]),
    };
    let ingress = FakeIngress::new();
    let mut reconciler = Reconciler::new(FakeDatapath::new()).with_ingress(ingress.clone());
    reconciler.sync(&services, &[slice("node-b")], &node()).expect("first sync");
    let at = |table: &crate::table::IngressTable| {
        let frontend = table.keys().find(|f| f.port == 30000 && f.ip.to_string() == "192.168.0.1").copied();
        table[&frontend.expect("the NodePort on the node address")].clone()
    };
    assert_eq!((at(&ingress.table()).backends.len(), at(&ingress.table()).remote_backends.len()), (0, 1));
    let writes = ingress.writes();

    // The endpoint moves to this node: local now; the socket entry (same backend) is unchanged.
    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(slice("node-a")));
    let stats = reconciler.apply_changes(changes).expect("partial sync");
    assert_eq!(stats, SyncStats { upserted: 1, removed: 0, unchanged: 0 }, "one ingress frontend, nothing else");
    assert_eq!((ingress.applies(), ingress.deltas(), ingress.writes() - writes), (1, 1, 1));
    assert_eq!((at(&ingress.table()).backends.len(), at(&ingress.table()).remote_backends.len()), (1, 0));
}

#[test]
fn a_failed_ingress_write_fails_the_sync_and_is_retried_whole() {
    let failing = FailingDatapath::new();
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone()).with_ingress(failing.clone());
    let mut rng = StdRng::seed_from_u64(3);
    let mut world = World::default();
    let mut changes = Changes::new();
    for _ in 0..10 {
        world.step(&mut rng, &mut changes);
    }
    let error = reconciler.sync(world.services.values(), world.slices.values(), &node()).expect_err("ingress refused");
    assert!(error.to_string().contains("refused"), "{error}");
    assert_eq!(fake.table(), reconciler.table().clone(), "the socket datapath is programmed regardless");
    reconciler.apply_changes(changes).expect_err("refused again");
    assert_eq!((fake.applies(), fake.deltas()), (1, 1), "the socket side went on with partial syncs");
    assert_eq!(failing.attempts(), 2, "the ingress side was tried again, whole");
}

#[test]
fn one_endpoint_change_writes_one_frontend() {
    let mut world = World::default();
    for (index, name) in SERVICES.iter().enumerate() {
        let mut service = Service { metadata: meta("a", name), ..Service::default() };
        service.spec = Some(ServiceSpec {
            cluster_ip: Some(format!("10.96.1.{index}")),
            ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..ServicePort::default() }]),
            ..ServiceSpec::default()
        });
        world.services.insert(("a".into(), (*name).into()), service);
    }
    let slice = |address: &str| EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), "s0".to_owned())])),
            ..meta("a", "s0-x")
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint { addresses: vec![address.into()], ..Endpoint::default() }],
        ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..EndpointPort::default() }]),
    };
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let slices = [slice("10.244.0.1")];
    reconciler.sync(world.services.values(), &slices, &node()).expect("first sync");

    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(slice("10.244.0.2")));
    let stats = reconciler.apply_changes(changes).expect("partial sync");
    assert_eq!(stats, SyncStats { upserted: 1, removed: 0, unchanged: 0 });
    assert_eq!((fake.applies(), fake.deltas()), (1, 1));
    let backends: Vec<String> =
        fake.table().values().flat_map(|e| e.backends.iter().map(ToString::to_string)).collect();
    assert_eq!(backends, ["10.244.0.2:8080"]);
}

#[test]
fn after_a_failed_write_the_next_sync_applies_the_whole_table() {
    let failing = FailingDatapath::new();
    let mut reconciler = Reconciler::new(failing.clone());
    reconciler.sync(std::iter::empty(), std::iter::empty(), &node()).expect_err("refused");
    let mut rng = StdRng::seed_from_u64(1);
    let mut changes = Changes::new();
    World::default().step(&mut rng, &mut changes);
    reconciler.apply_changes(changes).expect_err("refused again");
    assert_eq!(failing.attempts(), 2);

    // Over a datapath that works, a partial sync after a failure is a full apply.
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let mut world = World::default();
    let mut changes = Changes::new();
    for _ in 0..20 {
        world.step(&mut rng, &mut changes);
    }
    reconciler.apply_changes(changes).expect("no full sync yet: a full apply");
    assert_eq!((fake.applies(), fake.deltas()), (1, 0));
    let node = NodeTopology::default();
    assert_eq!(fake.table(), build_table(world.services.values(), world.slices.values(), &node).table);
}
