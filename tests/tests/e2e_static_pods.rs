//! End to end, static pods in agent mode (`--pod-manifest-path`): the pod of a manifest runs
//! beside the API server's pods, its mirror pod (owned by the Node) shows its status, a
//! deleted mirror pod comes back without the pod restarting, and removing the manifest stops
//! the pod and deletes the mirror pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use nodelet_tests::harness::{pod_ready, wait_for, TestNode};

const POD_CIDR: &str = "10.245.13.0/24";
const MIRROR: &str = "kubernetes.io/config.mirror";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_with_mirror_pods_on_the_api_server() {
    let manifests = tempfile::Builder::new().prefix("nodelet-static").tempdir().expect("manifest dir");
    let args = vec!["--pod-manifest-path".to_string(), manifests.path().display().to_string()];
    let mut node = TestNode::start_with_args("static", POD_CIDR, &args).await;
    let manifest = manifests.path().join("sleeper.yaml");
    std::fs::write(&manifest, sleeper_manifest(&node.registry.image("busybox:1"))).expect("manifest");
    let name = format!("sleeper-{}", node.node_name);
    let pods = node.pods();

    // The mirror pod: the static pod's copy, owned by the Node, with the pod's status.
    let first = wait_for("the mirror pod to report Ready", Duration::from_secs(90), || async {
        let pod = pods.get_opt(&name).await.ok()??;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    node.assert_agent_running();
    let annotations = first.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get(MIRROR), annotations.get("kubernetes.io/config.hash"), "{annotations:?}");
    assert_eq!(annotations.get("kubernetes.io/config.source").map(String::as_str), Some("file"));
    let owner = &first.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Node", node.node_name.as_str(), Some(true))
    );
    let started = container_started_at(&first);
    assert!(started.is_some(), "no running container in the mirror pod's status: {:?}", first.status);

    // A deleted mirror pod comes back (a new uid); the static pod keeps running.
    let first_uid = first.metadata.uid.clone().expect("uid");
    pods.delete(&name, &DeleteParams::default()).await.expect("delete the mirror pod");
    let second = wait_for("the mirror pod to be recreated with the status", Duration::from_secs(60), || async {
        let pod = pods.get_opt(&name).await.ok()??;
        let recreated =
            pod.metadata.uid.as_deref() != Some(first_uid.as_str()) && pod.metadata.deletion_timestamp.is_none();
        (recreated && pod_ready(&pod)).then_some(pod)
    })
    .await;
    assert_eq!(container_started_at(&second), started, "the static pod restarted when its mirror pod was deleted");
    assert_eq!(restart_count(&second), 0);

    // The manifest removed: the pod stops and its mirror pod goes.
    std::fs::remove_file(&manifest).expect("remove manifest");
    wait_for("the mirror pod to be deleted", Duration::from_secs(60), || async {
        pods.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    wait_for("the static pod's network and mounts to be released", Duration::from_secs(60), || {
        let clean = node.agent.leftover_veths().is_empty() && node.agent.leftover_mounts().is_empty();
        async move { clean.then_some(()) }
    })
    .await;
    node.assert_no_pod_leftovers();
    node.assert_agent_running();
    node.finish().await;
}

fn container_started_at(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let running = status.state.as_ref()?.running.as_ref()?;
    running.started_at.as_ref().map(|t| t.0.to_rfc3339())
}

fn restart_count(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    statuses.first().map_or(-1, |s| s.restart_count)
}

fn sleeper_manifest(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\n  labels: {{app: sleeper}}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: sleep\n    image: {image}\n    \
         command: [\"sleep\", \"3600\"]\n"
    )
}
