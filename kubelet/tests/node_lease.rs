//! The Lease heartbeat: create, renew with resourceVersion, conflicts, backoff schedule.

mod node_support;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use node_support::{FakeApi, Op};
use nodelet_kubelet::node::{run_lease_loop, ApiErrorKind, LeaseHeartbeat, NodeMetrics};
use tokio_util::sync::CancellationToken;

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("time")
}

#[tokio::test]
async fn creates_then_renews_the_lease() {
    let api = FakeApi::default();
    let mut heartbeat = LeaseHeartbeat::new("worker-1", 40, Some("uid-1".into()));
    heartbeat.renew(&api, at(0)).await.expect("first renew");
    let lease = api.lease().expect("lease created");
    assert_eq!(lease.metadata.name.as_deref(), Some("worker-1"));
    assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
    let spec = lease.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("worker-1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(spec.renew_time.map(|t| t.0), Some(at(0)));
    let owner = &lease.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!((owner.api_version.as_str(), owner.kind.as_str()), ("v1", "Node"));
    assert_eq!((owner.name.as_str(), owner.uid.as_str()), ("worker-1", "uid-1"));
    assert_eq!(api.count(Op::CreateLease), 1);
    assert_eq!(api.count(Op::ReplaceLease), 0);

    heartbeat.renew(&api, at(10)).await.expect("second renew");
    let renewed = api.lease().expect("lease");
    assert_eq!(renewed.spec.and_then(|s| s.renew_time).map(|t| t.0), Some(at(10)));
    assert_ne!(renewed.metadata.resource_version, lease.metadata.resource_version);
    assert_eq!(api.count(Op::ReplaceLease), 1);
    assert_eq!(api.count(Op::GetLease), 1, "renewal from the latest lease needs no get");
}

#[tokio::test]
async fn conflict_falls_back_to_get_and_update() {
    let api = FakeApi::default();
    let mut heartbeat = LeaseHeartbeat::new("worker-1", 40, None);
    heartbeat.renew(&api, at(0)).await.expect("create");
    api.bump_lease_version();
    heartbeat.renew(&api, at(10)).await.expect("renew after conflict");
    assert_eq!(api.count(Op::ReplaceLease), 2, "stale update, then fresh update");
    assert_eq!(api.count(Op::GetLease), 2);
    let lease = api.lease().expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.renew_time).map(|t| t.0), Some(at(10)));
    assert!(lease.metadata.owner_references.is_none(), "no uid, no owner");
}

#[tokio::test]
async fn adopts_an_existing_lease_and_sets_the_owner() {
    let api = FakeApi::default();
    LeaseHeartbeat::new("worker-1", 40, None).renew(&api, at(0)).await.expect("create without owner");
    let mut heartbeat = LeaseHeartbeat::new("worker-1", 40, Some("uid-2".into()));
    heartbeat.renew(&api, at(5)).await.expect("renew existing");
    let lease = api.lease().expect("lease");
    assert_eq!(lease.metadata.owner_references.expect("owner")[0].uid, "uid-2");
}

#[tokio::test(start_paused = true)]
async fn renews_every_interval_and_backs_off_on_failure() {
    let api = FakeApi::default();
    let shutdown = CancellationToken::new();
    let metrics = NodeMetrics::default();
    let started = tokio::time::Instant::now();
    // t=0 create; t=10 update ok; t=20 update and get fail -> retry 200ms, 400ms later.
    let loop_api = &api;
    let run = run_lease_loop(
        loop_api,
        LeaseHeartbeat::new("worker-1", 40, None),
        Duration::from_secs(10),
        &metrics,
        &shutdown,
    );
    let drive = async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        api.fail(Op::ReplaceLease, ApiErrorKind::Other, 1);
        api.fail(Op::GetLease, ApiErrorKind::Other, 2);
        tokio::time::sleep(Duration::from_secs(20)).await;
        shutdown.cancel();
    };
    tokio::join!(run, drive);
    let writes: Vec<u128> = api
        .calls()
        .iter()
        .filter(|(op, _)| matches!(op, Op::CreateLease | Op::ReplaceLease | Op::GetLease))
        .map(|(op, t)| {
            let _ = op;
            (*t - started).as_millis()
        })
        .collect();
    // get+create at 0, replace at 10s, failing replace+get at 20s, get at 20.2s (fails),
    // get+replace at 20.6s, then replace at 30.6s.
    assert_eq!(writes, [0, 0, 10_000, 20_000, 20_000, 20_200, 20_600, 20_600, 30_600]);
    assert_eq!(metrics.lease_renewals(nodelet_kubelet::node::HeartbeatResult::Error), 2);
}
