//! End to end, what goes wrong: `nodelet agent` against the test API server and a local
//! registry, on the real kernel. An image that does not exist (ErrImagePull, then
//! ImagePullBackOff; the pod still deletes cleanly), an API server outage (containers keep
//! running, the Lease and new pods resume), the agent's permissions (nothing it asks for is
//! forbidden to a node), and containers that exit 1 (Failed under Never, restarted under
//! OnFailure). Each test has its own API server, registry, agent, cgroup, bridge and pod
//! CIDR; the harness guards remove everything even when a test fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use nodelet_tests::harness::{pod_ready, process_alive, wait_for, TestNode};
use serde_json::json;

/// a. An image that is not in the registry: ErrImagePull, then ImagePullBackOff, each naming
/// the image; the agent keeps running; deleting the pod completes and releases its sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_backs_off_and_the_pod_still_deletes() {
    let started = Instant::now();
    let mut node = TestNode::start("faults-pull", "10.245.10.0/24").await;
    let pods = node.pods();
    let image = node.registry.image("does-not-exist:1");

    // Every waiting state the pod's container passes through, in order, from a watch (a
    // poll could miss the short-lived ErrImagePull).
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let recorder = tokio::spawn(record_waiting_states(pods.clone(), "nopull", seen.clone()));
    pods.create(&PostParams::default(), &sleep_pod(&node.node_name, "nopull", &image, "Always"))
        .await
        .expect("creating the pod");

    let states = wait_for("ErrImagePull then ImagePullBackOff", Duration::from_secs(60), || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().unwrap().clone();
            let pull = seen.iter().position(|(reason, _)| reason == "ErrImagePull")?;
            seen[pull..].iter().any(|(reason, _)| reason == "ImagePullBackOff").then_some(seen)
        }
    })
    .await;
    recorder.abort();
    for (reason, message) in states.iter().filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff") {
        assert!(message.contains(&image), "the {reason} message does not name the image {image}: {message:?}");
    }
    let pod = pods.get("nopull").await.expect("the pod");
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"), "{:?}", pod.status);
    node.assert_agent_running();

    pods.delete("nopull", &DeleteParams::default()).await.expect("deleting the pod");
    wait_for("the pod to be gone", Duration::from_secs(30), || async {
        pods.get_opt("nopull").await.ok()?.is_none().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.assert_agent_running();
    eprintln!("waiting states: {states:?}; test took {:?}", started.elapsed());
    node.finish().await;
}

/// b. The API server is gone for 15 s while a pod runs: the agent and the container keep
/// running; afterwards the Lease is renewed and a new pod runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_keeps_containers_running_and_the_agent_recovers() {
    let started = Instant::now();
    let mut node = TestNode::start("faults-outage", "10.245.11.0/24").await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    pods.create(&PostParams::default(), &sleep_pod(&node.node_name, "before", &image, "Always"))
        .await
        .expect("creating the pod");
    let before = wait_for("the pod to be Ready", Duration::from_secs(60), || async {
        let pod = pods.get("before").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    let container = container_status(&before).and_then(|s| s.container_id.clone()).expect("container id");
    let pid = node.agent.container_pid(&container).expect("the container's pid in its state file");
    assert!(process_alive(pid), "container process {pid} is not alive");

    // The outage. A fixed pause: this simulates the API server being gone for a while.
    node.api.set_unavailable(true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.assert_agent_running();
        assert!(process_alive(pid), "the container (pid {pid}) died during the API outage");
    }
    let back = Utc::now();
    node.api.set_unavailable(false);

    let leases: Api<Lease> = Api::namespaced(node.admin.clone(), "kube-node-lease");
    let renewed = wait_for("the Lease to be renewed after the outage", Duration::from_secs(30), || async {
        let renew = lease_renew_time(&leases.get_opt(&node.node_name).await.ok()??)?;
        (renew > back).then_some(renew)
    })
    .await;
    eprintln!("Lease renewed {:?} after the API server came back", (renewed - back).to_std().unwrap_or_default());

    pods.create(&PostParams::default(), &sleep_pod(&node.node_name, "after", &image, "Always"))
        .await
        .expect("creating a pod after the outage");
    wait_for("the new pod to run", Duration::from_secs(45), || async {
        let pod = pods.get("after").await.ok()?;
        (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    // The first pod ran through it all: same container, never restarted.
    let before = pods.get("before").await.expect("the first pod");
    let status = container_status(&before).expect("container status");
    assert_eq!(status.container_id.as_deref(), Some(container.as_str()), "the container was replaced");
    assert_eq!(status.restart_count, 0, "the container restarted");
    assert!(process_alive(pid), "the container (pid {pid}) died after the outage");
    node.assert_agent_running();
    eprintln!("test took {:?}", started.elapsed());
    node.finish().await;
}

/// c. Over a pod's whole life the agent asks for nothing a node may not do: every request
/// of system:node:<node> was allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_needs_no_more_than_node_permissions() {
    let started = Instant::now();
    let mut node = TestNode::start("faults-audit", "10.245.12.0/24").await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    pods.create(&PostParams::default(), &sleep_pod(&node.node_name, "audited", &image, "Always"))
        .await
        .expect("creating the pod");
    wait_for("the pod to be Ready", Duration::from_secs(60), || async {
        let pod = pods.get("audited").await.ok()?;
        pod_ready(&pod).then_some(())
    })
    .await;
    pods.delete("audited", &DeleteParams::default()).await.expect("deleting the pod");
    wait_for("the pod to be gone", Duration::from_secs(30), || async {
        pods.get_opt("audited").await.ok()?.is_none().then_some(())
    })
    .await;
    node.assert_agent_running();
    node.assert_no_pod_leftovers();

    let user = format!("system:node:{}", node.node_name);
    let entries: Vec<_> = node.api.audit().into_iter().filter(|e| e.user == user).collect();
    let denied: Vec<String> = entries
        .iter()
        .filter(|e| e.code == 401 || e.code == 403)
        .map(|e| {
            format!("{} {} {} {}/{} {} -> {}", e.verb, e.path, e.resource, e.namespace, e.name, e.subresource, e.code)
        })
        .collect();
    assert!(denied.is_empty(), "the agent was denied {} request(s):\n{}", denied.len(), denied.join("\n"));
    // The audit saw the agent do its job: the Node, its Lease, pods and their status.
    let did = |verb: &str, resource: &str, subresource: &str| {
        entries.iter().any(|e| {
            e.verb == verb && e.resource == resource && e.subresource == subresource && (200..300).contains(&e.code)
        })
    };
    assert!(did("create", "nodes", "") || did("get", "nodes", ""), "no Node request in the audit");
    assert!(did("update", "leases", "") || did("create", "leases", ""), "no Lease write in the audit");
    assert!(did("watch", "pods", "") || did("list", "pods", ""), "no pod list/watch in the audit");
    assert!(did("patch", "pods", "status") || did("update", "pods", "status"), "no pod status write in the audit");
    assert!(did("delete", "pods", ""), "the agent did not finish the pod's deletion");
    let kinds: std::collections::BTreeSet<String> = entries
        .iter()
        .map(|e| {
            format!("{} {}{}{}", e.verb, e.resource, if e.subresource.is_empty() { "" } else { "/" }, e.subresource)
        })
        .collect();
    eprintln!("{} requests of {user}, none denied: {kinds:?}; test took {:?}", entries.len(), started.elapsed());
    node.finish().await;
}

/// d. A container that exits 1: under restartPolicy Never the pod fails (terminated reason
/// Error, exit code 1); under OnFailure it is restarted again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_containers_follow_the_restart_policy() {
    let started = Instant::now();
    let node = TestNode::start("faults-exit", "10.245.13.0/24").await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    for (name, policy) in [("exit-never", "Never"), ("exit-onfailure", "OnFailure")] {
        pods.create(&PostParams::default(), &exit_pod(&node.node_name, name, &image, policy))
            .await
            .expect("creating a pod");
    }

    let failed = wait_for("the Never pod to fail", Duration::from_secs(60), || async {
        let pod = pods.get("exit-never").await.ok()?;
        (pod.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(pod)
    })
    .await;
    let status = container_status(&failed).expect("container status");
    let terminated = status.state.as_ref().and_then(|s| s.terminated.as_ref()).unwrap_or_else(|| {
        panic!("the failed container is not terminated: {:?}", status.state);
    });
    assert_eq!(terminated.exit_code, 1, "{terminated:?}");
    assert_eq!(terminated.reason.as_deref(), Some("Error"), "{terminated:?}");
    assert_eq!(status.restart_count, 0, "restartPolicy Never restarted the container");

    // OnFailure: restarted (backoff 10 s, then 20 s), the last run's exit kept in lastState.
    let restarted = wait_for("the OnFailure container to restart twice", Duration::from_secs(75), || async {
        let pod = pods.get("exit-onfailure").await.ok()?;
        (container_status(&pod)?.restart_count >= 2).then_some(pod)
    })
    .await;
    let status = container_status(&restarted).expect("container status");
    let phase = restarted.status.as_ref().and_then(|s| s.phase.as_deref());
    assert!(matches!(phase, Some("Running" | "Pending")), "an OnFailure pod that keeps failing is {phase:?}");
    let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1), "lastState of the restarted container: {:?}", status.last_state);
    let never = pods.get("exit-never").await.expect("the Never pod");
    assert_eq!(never.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"), "Failed is terminal");
    eprintln!("restartCount {} after {:?}", status.restart_count, started.elapsed());
    node.finish().await;
}

/// Appends (reason, message) of the pod's first container each time its waiting state
/// changes, until aborted.
async fn record_waiting_states(pods: Api<Pod>, name: &'static str, seen: Arc<Mutex<Vec<(String, String)>>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(pods, config).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            _ => continue,
        };
        let Some(waiting) = container_status(&pod).and_then(|s| s.state.as_ref()?.waiting.clone()) else {
            continue;
        };
        let state = (waiting.reason.unwrap_or_default(), waiting.message.unwrap_or_default());
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
}

fn container_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn lease_renew_time(lease: &Lease) -> Option<DateTime<Utc>> {
    Some(lease.spec.as_ref()?.renew_time.as_ref()?.0)
}

/// A pod whose container sleeps until killed.
fn sleep_pod(node: &str, name: &str, image: &str, restart_policy: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]
        }
    }))
    .expect("pod")
}

/// A pod whose container exits 1 at once.
fn exit_pod(node: &str, name: &str, image: &str, restart_policy: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", "echo failing; exit 1"]}]
        }
    }))
    .expect("pod")
}
