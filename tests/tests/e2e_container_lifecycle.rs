//! End to end, a container's life around its main process:
//! - init containers and sidecars: an init container writes a file into an emptyDir, a
//!   sidecar (a restartable init container) starts before the app and keeps running, the app
//!   starts only after both and reads the file; the pod is Ready with every init container's
//!   status reported, and deleting it stops everything;
//! - lifecycle hooks: postStart runs before the pod is reported running, preStop runs before
//!   the stop signal on deletion, and a failing postStart kills and restarts the container
//!   with a FailedPostStartHook event.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{DeleteParams, PostParams};
use nodelet_tests::harness::{pod_ready, wait_for, TestNode};
use serde_json::json;

const POD_CIDR: &str = "10.245.15.0/24";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_first_and_sidecars_keep_running() {
    let mut node = TestNode::start("init", POD_CIDR).await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    pods.create(&PostParams::default(), &pod(&node.node_name, &image)).await.expect("create pod");

    let ready = wait_for("the pod to be Ready", Duration::from_secs(90), || async {
        let pod = pods.get("with-init").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    node.assert_agent_running();
    let status = ready.status.expect("status");
    let inits = status.init_container_statuses.clone().expect("init container statuses");
    let by_name = |name: &str| -> ContainerStatus {
        inits.iter().find(|s| s.name == name).cloned().unwrap_or_else(|| panic!("no status for {name}: {inits:?}"))
    };
    let setup = by_name("setup");
    let completed = setup.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("setup terminated");
    assert_eq!((completed.exit_code, completed.reason.as_deref()), (0, Some("Completed")));
    let sidecar = by_name("sidecar");
    assert!(sidecar.state.as_ref().is_some_and(|s| s.running.is_some()), "the sidecar runs: {sidecar:?}");
    let app = &status.container_statuses.clone().expect("statuses")[0];
    let app_started = app.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone());
    let setup_finished = completed.finished_at.clone();
    assert!(app_started >= setup_finished, "the app started before its init container finished");
    let initialized = status.conditions.iter().flatten().find(|c| c.type_ == "Initialized").expect("Initialized");
    assert_eq!(initialized.status, "True");

    // The app saw what the init container wrote (it exits otherwise and would not be Ready).
    assert_eq!(app.restart_count, 0, "the app did not find the init container's file: {app:?}");

    pods.delete("with-init", &DeleteParams::default()).await.expect("delete");
    wait_for("the pod to be gone", Duration::from_secs(60), || async {
        pods.get_opt("with-init").await.ok()?.is_none().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_and_pre_stop_hooks_run_around_the_container() {
    let node = TestNode::start("hooks", "10.245.16.0/24").await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    let host_dir = tempfile::Builder::new().prefix("nodelet-hooks").tempdir().expect("host dir");
    let marks = host_dir.path().display().to_string();
    pods.create(&PostParams::default(), &hooked_pod(&node.node_name, &image, &marks)).await.expect("create");
    pods.create(&PostParams::default(), &failing_post_start_pod(&node.node_name, &image)).await.expect("create");

    wait_for("the hooked pod to be Ready", Duration::from_secs(90), || async {
        pod_ready(&pods.get("hooked").await.ok()?).then_some(())
    })
    .await;
    let post_start = std::fs::read_to_string(host_dir.path().join("post-start")).expect("postStart ran");
    assert_eq!(post_start.trim(), "started");

    // A failing postStart: the attempt is killed and restarted, with kubelet's event.
    wait_for("the failing postStart container to restart", Duration::from_secs(60), || async {
        let status = pods.get("bad-hook").await.ok()?.status?;
        let restarts = status.container_statuses?.first()?.restart_count;
        (restarts >= 1).then_some(())
    })
    .await;
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::namespaced(node.admin.clone(), "default");
    let found = wait_for("a FailedPostStartHook event", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
    })
    .await;
    assert_eq!(found.involved_object.name.as_deref(), Some("bad-hook"));

    // preStop on deletion, before the stop signal.
    pods.delete("hooked", &DeleteParams::default()).await.expect("delete");
    wait_for("the hooked pod to be gone", Duration::from_secs(60), || async {
        pods.get_opt("hooked").await.ok()?.is_none().then_some(())
    })
    .await;
    let pre_stop = std::fs::read_to_string(host_dir.path().join("pre-stop")).expect("preStop ran");
    assert_eq!(pre_stop.trim(), "stopping");
    let order = std::fs::read_to_string(host_dir.path().join("order")).expect("order");
    assert_eq!(order.lines().collect::<Vec<_>>(), ["pre-stop", "term"], "preStop ran before the stop signal");
    pods.delete("bad-hook", &DeleteParams::default()).await.expect("delete");
    wait_for("the failing pod to be gone", Duration::from_secs(60), || async {
        pods.get_opt("bad-hook").await.ok()?.is_none().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.finish().await;
}

/// Marks written into a host directory: what each hook saw, and the order of preStop and the
/// SIGTERM the main process traps.
fn hooked_pod(node: &str, image: &str, marks: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hooked"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 10,
            "volumes": [{"name": "marks", "hostPath": {"path": marks, "type": "Directory"}}],
            "containers": [{
                "name": "app", "image": image,
                "command": ["sh", "-c", "trap 'echo term >> /marks/order; exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "marks", "mountPath": "/marks"}],
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo started > /marks/post-start"]}},
                    "preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /marks/pre-stop; echo pre-stop >> /marks/order"]}}
                }
            }]
        }
    }))
    .expect("pod")
}

fn failing_post_start_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad-hook"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app", "image": image, "command": ["sleep", "3600"],
                "lifecycle": {"postStart": {"exec": {"command": ["false"]}}}
            }]
        }
    }))
    .expect("pod")
}

fn pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "with-init"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [
                {"name": "setup", "image": image,
                 "command": ["sh", "-c", "sleep 1; echo ready > /work/flag"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "sidecar", "image": image, "restartPolicy": "Always",
                 "command": ["sleep", "3600"]}
            ],
            "containers": [{
                "name": "app", "image": image,
                "command": ["sh", "-c", "test -f /work/flag || exit 3; exec sleep 3600"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            }]
        }
    }))
    .expect("pod")
}
