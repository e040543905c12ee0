//! Watches against the test API server: events, bookmarks, 410 Gone for a compacted
//! resourceVersion, kube's watcher recovering from it, and field-selector transitions.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use nodelet_tests::apiserver::{Options, TestApiServer};
use serde_json::json;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .expect("pod")
}

async fn next_event<S>(stream: &mut S) -> WatchEvent<Pod>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event")
}

#[tokio::test]
async fn watch_events_bookmarks_and_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { bookmark_interval: Duration::from_millis(200), ..Options::default() };
    let server = TestApiServer::start_with(dir.path(), options).await.expect("start");
    let pods: Api<Pod> = Api::namespaced(server.admin_client().await.expect("client"), "default");

    let list = pods.list(&ListParams::default()).await.expect("list");
    let start_version = list.metadata.resource_version.clone().expect("rv");
    let mut stream = pods
        .watch(&WatchParams::default().fields("spec.nodeName=n1").timeout(30), &start_version)
        .await
        .expect("watch")
        .boxed();

    pods.create(&PostParams::default(), &pod("a", "n1")).await.expect("a");
    pods.create(&PostParams::default(), &pod("other", "n2")).await.expect("other");
    match next_event(&mut stream).await {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("a")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    pods.patch_status("a", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running"}})))
        .await
        .expect("patch");
    loop {
        match next_event(&mut stream).await {
            WatchEvent::Modified(p) => {
                assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));
                break;
            }
            WatchEvent::Bookmark(_) => continue,
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }
    let bookmark_version = loop {
        if let WatchEvent::Bookmark(b) = next_event(&mut stream).await {
            break b.metadata.resource_version;
        }
    };
    assert_eq!(bookmark_version, server.resource_version().to_string());
    pods.delete("a", &DeleteParams::default().grace_period(0)).await.expect("delete");
    loop {
        match next_event(&mut stream).await {
            WatchEvent::Deleted(p) => {
                assert_eq!(p.metadata.name.as_deref(), Some("a"));
                break;
            }
            WatchEvent::Bookmark(_) => continue,
            other => panic!("expected DELETED, got {other:?}"),
        }
    }

    // After a compaction the old resourceVersion is gone.
    server.compact();
    pods.create(&PostParams::default(), &pod("b", "n1")).await.expect("b");
    let mut stale = pods.watch(&WatchParams::default(), &start_version).await.expect("watch").boxed();
    match next_event(&mut stale).await {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected ERROR 410, got {other:?}"),
    }

    // A bounded history: old versions fall out of it.
    server.set_event_history(3);
    let version_before = server.resource_version().to_string();
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("h{i}"), "n3")).await.expect("create");
    }
    let mut stale = pods.watch(&WatchParams::default(), &version_before).await.expect("watch").boxed();
    match next_event(&mut stale).await {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn kube_watcher_recovers_from_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    let pods: Api<Pod> = Api::namespaced(server.admin_client().await.expect("client"), "default");
    pods.create(&PostParams::default(), &pod("first", "n1")).await.expect("first");

    let config = watcher::Config::default().fields("spec.nodeName=n1");
    let mut objects = watcher(pods.clone(), config).default_backoff().applied_objects().boxed();
    let seen = tokio::time::timeout(Duration::from_secs(10), objects.try_next()).await.expect("in time").expect("ok");
    assert_eq!(seen.and_then(|p| p.metadata.name).as_deref(), Some("first"));

    // End the watch, then move history past the watcher's resourceVersion: its re-watch gets
    // 410 Gone, and it must re-list and see the new pod.
    server.close_watches();
    pods.create(&PostParams::default(), &pod("second", "n1")).await.expect("second");
    server.compact();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = objects.next().await {
            if let Ok(p) = event {
                if p.metadata.name.as_deref() == Some("second") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("watcher recovered in time");
    assert!(found);
    let gone = server.audit().iter().filter(|e| e.verb == "list" && e.resource == "pods").count();
    assert!(gone >= 2, "the watcher re-listed ({gone} lists)");
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_list_initial_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    let pods: Api<Pod> = Api::namespaced(server.admin_client().await.expect("client"), "default");
    pods.create(&PostParams::default(), &pod("x", "n1")).await.expect("x");
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(pods, config).boxed();
    let mut init_done = false;
    let mut saw_x = false;
    while !init_done {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        match event {
            watcher::Event::InitApply(p) => saw_x |= p.metadata.name.as_deref() == Some("x"),
            watcher::Event::InitDone => init_done = true,
            _ => {}
        }
    }
    assert!(saw_x);
    server.shutdown().await;
}
