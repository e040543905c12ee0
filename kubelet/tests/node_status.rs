//! Node status updates: when they patch, transition times, the 5-minute report, readiness.

mod node_support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use node_support::{condition, config, facts, FakeApi, Op};
use nodelet_kubelet::node::{
    register_with, run_node_with, HeartbeatResult, NodeImage, NodeMetrics, NodeReadiness, StatusReporter, StatusSync,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("time")
}

async fn registered() -> FakeApi {
    let api = FakeApi::default();
    register_with(&api, &config(), &facts(), &NodeReadiness::ready(), &CancellationToken::new())
        .await
        .expect("registered");
    api
}

#[tokio::test(start_paused = true)]
async fn patches_on_change_and_at_least_every_report_period() {
    let api = registered().await;
    let mut reporter = StatusReporter::new(config(), facts());
    let ready = NodeReadiness::ready();
    // The first sync always reports.
    assert_eq!(reporter.sync(&api, &ready, at(0)).await.expect("sync"), StatusSync::Patched);
    let transition = condition(&api.node().expect("node"), "Ready").last_transition_time.clone();

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &ready, at(10)).await.expect("sync"), StatusSync::Unchanged);

    let not_ready = NodeReadiness::not_ready("container runtime network not ready", "no bridge");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &not_ready, at(20)).await.expect("sync"), StatusSync::Patched);
    let node = api.node().expect("node");
    let ready_condition = condition(&node, "Ready");
    assert_eq!(ready_condition.status, "False");
    assert_eq!(ready_condition.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(ready_condition.message.as_deref(), Some("container runtime network not ready: no bridge"));
    assert_eq!(ready_condition.last_transition_time, Some(Time(at(20))));
    assert_ne!(ready_condition.last_transition_time, transition);
    assert_eq!(
        condition(&node, "MemoryPressure").last_transition_time,
        transition,
        "unchanged conditions keep their transition time"
    );

    // Unchanged until five minutes after the last report, then a heartbeat.
    tokio::time::advance(Duration::from_secs(290)).await;
    assert_eq!(reporter.sync(&api, &not_ready, at(310)).await.expect("sync"), StatusSync::Unchanged);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &not_ready, at(320)).await.expect("sync"), StatusSync::Patched);
    let node = api.node().expect("node");
    assert_eq!(condition(&node, "Ready").last_heartbeat_time, Some(Time(at(320))));
    assert_eq!(condition(&node, "Ready").last_transition_time, Some(Time(at(20))));
}

#[tokio::test(start_paused = true)]
async fn reports_the_node_images_largest_first_and_patches_when_they_change() {
    let api = registered().await;
    let (images_tx, images) = watch::channel(Vec::new());
    let mut reporter = StatusReporter::new(config(), facts()).with_images(images);
    let ready = NodeReadiness::ready();
    assert_eq!(reporter.sync(&api, &ready, at(0)).await.expect("sync"), StatusSync::Patched);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &ready, at(10)).await.expect("sync"), StatusSync::Unchanged, "no image yet");

    let image = |name: &str, size_bytes| NodeImage {
        names: vec![format!("{name}@sha256:0123"), format!("{name}:1")],
        size_bytes,
    };
    images_tx.send_replace(vec![image("r/small", 10), image("r/big", 1000)]);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &ready, at(20)).await.expect("sync"), StatusSync::Patched, "an image appeared");
    let listed = api.node().expect("node").status.expect("status").images.expect("images");
    let names: Vec<Vec<String>> = listed.iter().map(|i| i.names.clone().unwrap_or_default()).collect();
    assert_eq!(names, [vec!["r/big@sha256:0123", "r/big:1"], vec!["r/small@sha256:0123", "r/small:1"]]);
    assert_eq!(listed[0].size_bytes, Some(1000));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(reporter.sync(&api, &ready, at(30)).await.expect("sync"), StatusSync::Unchanged);
}

#[tokio::test(start_paused = true)]
async fn retries_within_one_update() {
    let api = registered().await;
    let mut reporter = StatusReporter::new(config(), facts());
    api.fail(Op::PatchNodeStatus, nodelet_kubelet::node::ApiErrorKind::Conflict, 2);
    assert_eq!(reporter.sync(&api, &NodeReadiness::ready(), at(0)).await.expect("sync"), StatusSync::Patched);
    assert_eq!(api.count(Op::PatchNodeStatus), 3);
    api.fail(Op::GetNode, nodelet_kubelet::node::ApiErrorKind::Other, 5);
    assert!(reporter.sync(&api, &NodeReadiness::ready(), at(1)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn run_node_registers_heartbeats_and_follows_readiness() {
    let api = FakeApi::default();
    let (readiness_tx, readiness_rx) = watch::channel(NodeReadiness::not_ready("container runtime not ready", ""));
    let shutdown = CancellationToken::new();
    let metrics = NodeMetrics::default();
    let run = run_node_with(&api, config(), facts(), readiness_rx, None, &metrics, &shutdown);
    let drive = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let node = api.node().expect("registered");
        assert_eq!(condition(&node, "Ready").status, "False");
        assert!(api.lease().is_some(), "lease created at start");

        readiness_tx.send(NodeReadiness::ready()).expect("send");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let node = api.node().expect("node");
        assert_eq!(condition(&node, "Ready").status, "True", "readiness is reported at once");

        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, drive);
    result.expect("run_node ends cleanly on shutdown");
    // 61 s: the lease renewed at 0,10,...,60.
    assert_eq!(api.count(Op::CreateLease) + api.count(Op::ReplaceLease), 7);
    assert!(metrics.status_updates(HeartbeatResult::Unchanged) >= 5);
    let lease = api.lease().expect("lease");
    assert_eq!(lease.metadata.owner_references.expect("owner")[0].uid, "uid-created");
}
