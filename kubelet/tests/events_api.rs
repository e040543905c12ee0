//! The event recorder against the test API server, as a node: events are created in the
//! pod's namespace with kubelet's source, and repeats raise the count of the same object.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use nodelet_kubelet::events::{pod_reference, ApiEventSink, EventRecorder, EventType};
use nodelet_tests::apiserver::TestApiServer;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_node_records_pod_events_and_counts_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    let node = server.node_client("n1").await.expect("node client");
    let shutdown = CancellationToken::new();
    let recorder = EventRecorder::start(Arc::new(ApiEventSink::new(node)), "n1", shutdown.clone());

    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }))
    .expect("pod");
    let container = pod_reference(&pod, Some("app"));
    recorder.record(container.clone(), EventType::Normal, "Pulling", "Pulling image \"busybox\"");
    for _ in 0..3 {
        recorder.record(container.clone(), EventType::Warning, "BackOff", "Back-off restarting failed container");
    }

    let events: Api<Event> = Api::namespaced(server.admin_client().await.expect("admin"), "default");
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = events.list(&ListParams::default()).await.expect("list").items;
        if listed.iter().any(|e| e.reason.as_deref() == Some("BackOff") && e.count == Some(3)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.len(), 2, "{listed:?}");
    let back_off = listed.iter().find(|e| e.reason.as_deref() == Some("BackOff")).expect("BackOff");
    assert_eq!(back_off.count, Some(3));
    assert_eq!(back_off.involved_object.field_path.as_deref(), Some("spec.containers{app}"));
    assert_eq!(back_off.involved_object.uid.as_deref(), Some("u-1"));
    let source = back_off.source.as_ref().expect("source");
    assert_eq!((source.component.as_deref(), source.host.as_deref()), (Some("kubelet"), Some("n1")));
    let pulling = listed.iter().find(|e| e.reason.as_deref() == Some("Pulling")).expect("Pulling");
    assert_eq!(pulling.type_.as_deref(), Some("Normal"));
    shutdown.cancel();
    server.shutdown().await;
}
