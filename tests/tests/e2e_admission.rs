//! End to end, admission: a pod that asks for more CPU than the node has, and a pod whose
//! host port another pod holds, fail at once with kubelet's reasons; the pod holding the
//! port keeps running, and a rejected pod is deleted without running anything.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use nodelet_tests::harness::{pod_ready, wait_for, TestNode};
use serde_json::json;

const POD_CIDR: &str = "10.245.14.0/24";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_do_not_fit_are_rejected_as_kubelet_rejects_them() {
    let mut node = TestNode::start("admission", POD_CIDR).await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    let create = |pod: Pod| {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &pod).await.expect("create pod") }
    };
    create(sleeper(&node.node_name, &image, "holder", json!({}), Some(18080))).await;
    wait_for("the port holder to be Ready", Duration::from_secs(60), || async {
        pod_ready(&pods.get("holder").await.ok()?).then_some(())
    })
    .await;

    create(sleeper(&node.node_name, &image, "greedy", json!({"requests": {"cpu": "1000"}}), None)).await;
    create(sleeper(&node.node_name, &image, "clash", json!({}), Some(18080))).await;
    for (name, reason, message) in [
        ("greedy", "OutOfcpu", "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0"),
        ("clash", "NodePorts", "Pod was rejected: Predicate NodePorts failed"),
    ] {
        let status = wait_for(&format!("{name} to be rejected"), Duration::from_secs(30), || async {
            let status = pods.get(name).await.ok()?.status?;
            (status.phase.as_deref() == Some("Failed")).then_some(status)
        })
        .await;
        assert_eq!(status.reason.as_deref(), Some(reason), "{status:?}");
        let text = status.message.clone().unwrap_or_default();
        assert!(text.starts_with(message), "{name}: {text}");
    }
    node.assert_agent_running();
    assert!(pod_ready(&pods.get("holder").await.expect("holder")), "the holder was disturbed");

    // A rejected pod ran nothing: its deletion finishes at once.
    pods.delete("greedy", &DeleteParams::default()).await.expect("delete greedy");
    wait_for("the rejected pod to be gone", Duration::from_secs(30), || async {
        pods.get_opt("greedy").await.ok()?.is_none().then_some(())
    })
    .await;
    node.finish().await;
}

fn sleeper(node: &str, image: &str, name: &str, resources: serde_json::Value, host_port: Option<i32>) -> Pod {
    let ports = host_port.map_or(json!([]), |port| json!([{"containerPort": 8080, "hostPort": port}]));
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep", "image": image, "command": ["sleep", "3600"],
                "ports": ports, "resources": resources
            }]
        }
    }))
    .expect("pod")
}
