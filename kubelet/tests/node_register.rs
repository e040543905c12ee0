//! Registration against a fake API: create, reconcile an existing Node, retry, cancel.

mod node_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_support::{condition, config, facts, FakeApi, Op};
use nodelet_kubelet::node::{register_with, ApiErrorKind, NodeError, NodeReadiness};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn creates_the_node_as_kubelet_would() {
    let api = FakeApi::default();
    let node = register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered");
    assert_eq!(node.metadata.uid.as_deref(), Some("uid-created"));
    let labels = node.metadata.labels.clone().expect("labels");
    assert_eq!(labels["kubernetes.io/hostname"], "host-a");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    assert_eq!(labels["beta.kubernetes.io/arch"], "amd64");
    assert_eq!(labels["node-role.kubernetes.io/worker"], "");
    let annotations = node.metadata.annotations.clone().expect("annotations");
    assert_eq!(annotations["volumes.kubernetes.io/controller-managed-attach-detach"], "true");
    assert!(node.spec.is_none(), "kubelet sets no spec.podCIDR");

    let status = node.status.clone().expect("status");
    let capacity = status.capacity.expect("capacity");
    assert_eq!(capacity["cpu"].0, "2");
    assert_eq!(capacity["memory"].0, "8148064Ki");
    assert_eq!(capacity["pods"].0, "110");
    assert_eq!(capacity["ephemeral-storage"].0, "100Gi");
    assert_eq!(capacity["hugepages-2Mi"].0, "0");
    assert_eq!(capacity["hugepages-1Gi"].0, "0");
    let allocatable = status.allocatable.expect("allocatable");
    assert_eq!(allocatable["memory"].0, "8045664Ki", "capacity minus 100Mi eviction threshold");
    assert_eq!(allocatable["cpu"].0, "2");
    assert_eq!(allocatable["ephemeral-storage"].0, "90Gi", "minus the 10% nodefs threshold");
    let addresses = status.addresses.expect("addresses");
    assert_eq!(addresses[0].type_, "InternalIP");
    assert_eq!(addresses[0].address, "192.0.2.2");
    assert_eq!(addresses[1].type_, "Hostname");
    assert_eq!(addresses[1].address, "host-a");
    let info = status.node_info.expect("node info");
    assert_eq!(info.operating_system, "linux");
    assert_eq!(info.machine_id, "0123456789abcdef");
    assert_eq!(info.boot_id, "boot-1");
    assert!(info.kubelet_version.starts_with("v1.32.0-nodelet."));
    assert!(info.container_runtime_version.starts_with("nodelet://"));
    let endpoint = status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).expect("endpoint");
    assert_eq!(endpoint.port, 10250);
    assert_eq!(condition(&node, "Ready").status, "True");
    assert_eq!(api.count(Op::CreateNode), 1);
    assert_eq!(api.count(Op::PatchNodeStatus), 0);
}

#[tokio::test(start_paused = true)]
async fn reconciles_an_existing_node() {
    let api = FakeApi::default();
    api.set_node(Node {
        metadata: ObjectMeta {
            name: Some("worker-1".into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), "old-host".into()),
                ("team".into(), "blue".into()),
            ])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    });
    let node = register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered");
    assert_eq!(node.metadata.uid.as_deref(), Some("uid-preexisting"));
    let labels = node.metadata.labels.clone().expect("labels");
    assert_eq!(labels["kubernetes.io/hostname"], "host-a");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["team"], "blue", "labels set by others stay");
    assert_eq!(api.count(Op::PatchNode), 1);
    assert_eq!(api.count(Op::PatchNodeStatus), 1);
    let status = node.status.expect("status patched at registration");
    assert_eq!(status.capacity.expect("capacity")["pods"].0, "110");

    // A second registration finds nothing to change.
    register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered again");
    assert_eq!(api.count(Op::PatchNode), 1);
    assert_eq!(api.count(Op::PatchNodeStatus), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_with_kubelet_backoff() {
    let api = FakeApi::default();
    api.fail(Op::CreateNode, ApiErrorKind::Other, 4);
    let started = tokio::time::Instant::now();
    register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered after failures");
    let creates: Vec<Duration> =
        api.calls().iter().filter(|(op, _)| *op == Op::CreateNode).map(|(_, at)| *at - started).collect();
    let millis: Vec<u128> = creates.iter().map(Duration::as_millis).collect();
    assert_eq!(millis, [0, 100, 300, 700, 1500]);
}

#[tokio::test(start_paused = true)]
async fn stops_on_shutdown() {
    let api = FakeApi::default();
    api.fail(Op::CreateNode, ApiErrorKind::Other, 1000);
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        cancel.cancel();
    });
    let result = register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &shutdown).await;
    assert!(matches!(result, Err(NodeError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn reservations_and_hugepages_come_off_allocatable() {
    let api = FakeApi::default();
    let mut cfg = config();
    cfg.system_reserved =
        Some(nodelet_kubelet::node::ResourceReservation::parse("cpu=500m,memory=1Gi").expect("reservation"));
    let mut facts = facts();
    facts.hugepages[0].count = 512; // 1Gi of 2Mi pages
    let node = register_with(&api, &cfg, &facts, &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered");
    let status = node.status.expect("status");
    assert_eq!(status.capacity.expect("capacity")["hugepages-2Mi"].0, "1Gi");
    let allocatable = status.allocatable.expect("allocatable");
    assert_eq!(allocatable["cpu"].0, "1500m");
    // 8148064Ki - 1Gi reserved - 100Mi eviction - 1Gi huge pages
    assert_eq!(allocatable["memory"].0, format!("{}Ki", 8_148_064 - 2 * 1_048_576 - 102_400));
}
