//! The reconciler and its loop over the in-memory and failing datapaths.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_proxy::datapath::{FailingDatapath, FakeDatapath, SyncStats};
use nodelet_proxy::{
    parse_service_objects, run_static_with, Changes, Frontend, NodeTopology, Reconciler, ServiceEntry, SyncTiming,
};
use tokio_util::sync::CancellationToken;

const WEB: &str = "
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
kind: Service
apiVersion: v1
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.5]}]
";

fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
    let objects = parse_service_objects(WEB, "test").expect("parse");
    (objects.services, objects.slices)
}

fn fast_timing() -> SyncTiming {
    SyncTiming {
        min_interval: Duration::from_millis(5),
        full_resync: Duration::from_secs(3600),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
    }
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2s");
}

const DUAL_STACK: &str = "
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec:
  clusterIPs: [10.96.0.20, \"fd00:96::20\"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: web-v4, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.5]}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [\"fd00:244::5\"]}]
";

/// `ip:port/proto -> backends` of every frontend the fake holds.
fn programmed(fake: &FakeDatapath) -> Vec<String> {
    let table = fake.table();
    let line = |(frontend, entry): (&Frontend, &ServiceEntry)| {
        let backends: Vec<String> = entry.backends.iter().map(ToString::to_string).collect();
        format!("{frontend} -> {}", backends.join(" "))
    };
    table.iter().map(line).collect()
}

#[test]
fn both_families_are_programmed_and_changed_apart() {
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let objects = parse_service_objects(DUAL_STACK, "test").expect("parse");
    reconciler.sync(&objects.services, &objects.slices, &NodeTopology::default()).expect("first sync");
    assert_eq!(
        programmed(&fake),
        ["10.96.0.20:80/tcp -> 10.244.0.5:8080", "[fd00:96::20]:80/tcp -> [fd00:244::5]:8080"]
    );

    // An IPv6 endpoint change rewrites the IPv6 frontend only.
    let mut moved = objects.slices[1].clone();
    moved.endpoints[0].addresses = vec![String::from("fd00:244::6")];
    let mut changes = Changes::new();
    changes.slice_applied(Arc::new(moved));
    let stats = reconciler.apply_changes(changes).expect("partial sync");
    assert_eq!(stats, SyncStats { upserted: 1, removed: 0, unchanged: 0 });
    assert_eq!(
        programmed(&fake),
        ["10.96.0.20:80/tcp -> 10.244.0.5:8080", "[fd00:96::20]:80/tcp -> [fd00:244::6]:8080"]
    );

    // Back to SingleStack IPv4: the IPv6 frontend goes.
    let mut single = objects.services[0].clone();
    let spec = single.spec.as_mut().expect("spec");
    spec.cluster_ips = Some(vec![String::from("10.96.0.20")]);
    spec.ip_families = Some(vec![String::from("IPv4")]);
    spec.ip_family_policy = Some(String::from("SingleStack"));
    let mut changes = Changes::new();
    changes.service_applied(Arc::new(single));
    let stats = reconciler.apply_changes(changes).expect("partial sync");
    assert_eq!(stats, SyncStats { upserted: 0, removed: 1, unchanged: 0 });
    assert_eq!(programmed(&fake), ["10.96.0.20:80/tcp -> 10.244.0.5:8080"]);
}

#[test]
fn only_changed_frontends_are_written() {
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let (services, mut slices) = objects();

    let first = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("first sync");
    assert_eq!(first, SyncStats { upserted: 2, removed: 0, unchanged: 0 });
    let again = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("same objects");
    assert_eq!(again, SyncStats { upserted: 0, removed: 0, unchanged: 2 });

    slices[0].endpoints[0].addresses = vec![String::from("10.244.0.6")];
    let changed = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("slice changed");
    assert_eq!(changed, SyncStats { upserted: 1, removed: 0, unchanged: 1 });

    let removed = reconciler.sync(&services[..1], &slices, &NodeTopology::default()).expect("api deleted");
    assert_eq!(removed, SyncStats { upserted: 0, removed: 1, unchanged: 1 });
    let table = fake.table();
    assert_eq!(table.len(), 1);
    let web = table.values().next().expect("web");
    assert_eq!(web.backends[0].to_string(), "10.244.0.6:8080");
    assert_eq!(fake.writes(), 4);
}

#[test]
fn a_bad_service_is_reported_and_the_rest_is_programmed() {
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let (mut services, slices) = objects();
    let api = services[1].spec.as_mut().expect("spec");
    api.cluster_ip = Some(String::from("10.96.0.300"));

    let stats = reconciler.sync(&services, &slices, &NodeTopology::default()).expect("sync");

    assert_eq!(stats, SyncStats { upserted: 1, removed: 0, unchanged: 0 }, "web is programmed");
    let problems: Vec<String> = reconciler.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems, ["Service default/api: clusterIP \"10.96.0.300\" is not an IP address: skipped"]);

    let (services, slices) = objects();
    reconciler.sync(&services, &slices, &NodeTopology::default()).expect("fixed");
    assert!(reconciler.problems().is_empty());
    assert_eq!(fake.table().len(), 2);
}

#[test]
fn the_node_decides_which_endpoints_are_local() {
    let local = "
kind: Service
apiVersion: v1
metadata: {name: local, namespace: default}
spec:
  clusterIP: 10.96.0.12
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80}]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: local-1, namespace: default, labels: {kubernetes.io/service-name: local}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.5], nodeName: node-a}, {addresses: [10.244.1.5], nodeName: node-b}]
";
    let objects = parse_service_objects(local, "test").expect("parse");
    let fake = FakeDatapath::new();
    let mut reconciler = Reconciler::new(fake.clone());
    let backends = |fake: &FakeDatapath| -> Vec<String> {
        fake.table().values().flat_map(|entry| entry.backends.iter().map(ToString::to_string)).collect()
    };

    reconciler.sync(&objects.services, &objects.slices, &NodeTopology::named("node-b")).expect("sync");
    assert_eq!(backends(&fake), ["10.244.1.5:8080"]);
    reconciler.sync(&objects.services, &objects.slices, &NodeTopology::default()).expect("no node name");
    assert!(backends(&fake).is_empty(), "without a node name no endpoint is local");
}

#[tokio::test]
async fn static_mode_programs_the_objects_once_and_stops_on_shutdown() {
    let fake = FakeDatapath::new();
    let (services, slices) = objects();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_static_with(
        fake.clone(),
        services,
        slices,
        NodeTopology::default(),
        fast_timing(),
        shutdown.clone(),
    ));

    wait_for(|| fake.table().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.applies(), 1, "nothing changes in static mode: one sync");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("loop stops on shutdown").expect("loop task");
}

#[tokio::test]
async fn failing_datapath_is_retried_with_backoff_not_fatal() {
    let failing = FailingDatapath::new();
    let (services, slices) = objects();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_static_with(
        failing.clone(),
        services,
        slices,
        NodeTopology::default(),
        fast_timing(),
        shutdown.clone(),
    ));

    wait_for(|| failing.attempts() >= 4).await;
    assert!(!task.is_finished(), "a failing datapath does not end the loop");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("loop stops on shutdown").expect("loop task");
}

#[tokio::test]
async fn shutdown_during_a_retry_wait_returns_promptly() {
    let failing = FailingDatapath::new();
    let (services, slices) = objects();
    let shutdown = CancellationToken::new();
    let slow = SyncTiming { retry_min: Duration::from_secs(60), retry_max: Duration::from_secs(60), ..fast_timing() };
    let task = tokio::spawn(run_static_with(
        failing.clone(),
        services,
        slices,
        NodeTopology::default(),
        slow,
        shutdown.clone(),
    ));

    wait_for(|| failing.attempts() == 1).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("returns on shutdown").expect("loop task");
    assert_eq!(failing.attempts(), 1, "no retry before the delay");
}
