//! End to end: the test API server, a local registry and `nodelet agent` on the real kernel.
//! The Node turns Ready and its Lease is renewed; a web-server pod and a client pod run; the
//! client fetches the page through a Service's ClusterIP (eBPF connect4 in the test's own
//! cgroup); the agent is killed and restarted without restarting the pod; everything is
//! deleted, and afterwards no netns, veth, mount, cgroup, BPF program or process is left.
//! Probes: readiness gates Ready (tcpSocket, and exec inside the container), a failing
//! liveness probe restarts its container; kubelet's events are recorded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod, PodCondition, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use nodelet_tests::apiserver::TestApiServer;
use nodelet_tests::harness::{
    agent_args, node_ready, pod_ready, require_root, unique_suffix, wait_for, NodeletProcess, TestCgroup, TestNode,
    TestRegistry,
};
use serde_json::json;

const VIP: &str = "10.96.77.10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_pods_and_balances_a_service() {
    require_root();
    let suffix = unique_suffix();
    let work = tempfile::Builder::new().prefix("nodelet-e2e").tempdir().expect("temp dir");
    let registry = TestRegistry::start(&work.path().join("registry"));
    let api = TestApiServer::start(&work.path().join("api")).await.expect("test API server");
    let node_name = format!("e2e-{suffix}");
    let kubeconfig = api.node_kubeconfig(&node_name).expect("node kubeconfig");
    let admin = api.admin_client().await.expect("admin client");
    let cgroup = TestCgroup::create(&format!("nodelet-e2e-{suffix}"));

    let args = agent_args(&kubeconfig, &node_name, "10.245.7.0/24", &cgroup);
    let mut agent = NodeletProcess::start(work.path(), &format!("nlb{suffix}"), &args);

    // The Node registers and turns Ready; the Lease is renewed.
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    wait_for("the Node to be Ready", Duration::from_secs(60), || async {
        let node = nodes.get_opt(&node_name).await.ok()??;
        node_ready(&node).then_some(())
    })
    .await;
    let first_renew = wait_for("the node Lease", Duration::from_secs(30), || async {
        lease_renew_time(&leases.get_opt(&node_name).await.ok()??)
    })
    .await;
    wait_for("the Lease to be renewed", Duration::from_secs(30), || async {
        let renew = lease_renew_time(&leases.get_opt(&node_name).await.ok()??)?;
        (renew != first_renew).then_some(())
    })
    .await;

    // A web server, then a Service and its EndpointSlice in front of it.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &web_pod(&node_name, &registry.image("web:1")))
        .await
        .expect("creating the web pod");
    let web = wait_for("the web pod to run", Duration::from_secs(120), || async {
        let pod = pods.get("web").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    let web_ip = web.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("web pod IP");
    let web_container = container_id(&web);

    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
    services.create(&PostParams::default(), &web_service()).await.expect("creating the Service");
    slices.create(&PostParams::default(), &web_slice(&web_ip, &node_name)).await.expect("creating the EndpointSlice");

    // The agent crashes and comes back: the web pod keeps running, not restarted.
    agent.crash_and_restart();
    wait_for("the agent to report the web pod again", Duration::from_secs(60), || async {
        let pod = pods.get("web").await.ok()?;
        (pod_ready(&pod) && container_id(&pod) == web_container).then_some(())
    })
    .await;
    let web = pods.get("web").await.expect("web pod");
    assert_eq!(restart_count(&web), 0, "adoption must not restart the container");

    // A client pod fetches the page through the ClusterIP.
    pods.create(&PostParams::default(), &client_pod(&node_name, &registry.image("busybox:1")))
        .await
        .expect("creating the client pod");
    let client = wait_for("the client pod to finish", Duration::from_secs(120), || async {
        let pod = pods.get("client").await.ok()?;
        let phase = pod.status.as_ref()?.phase.clone()?;
        (phase == "Succeeded" || phase == "Failed").then_some(pod)
    })
    .await;
    assert_eq!(
        client.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded"),
        "the client could not fetch http://{VIP}/ through the Service: {:?}\nagent log:\n{}",
        client.status,
        agent.log()
    );

    // Everything is deleted; the agent finishes each deletion with the final delete.
    for name in ["web", "client"] {
        pods.delete(name, &DeleteParams::default()).await.expect("deleting a pod");
    }
    services.delete("web", &DeleteParams::default()).await.expect("deleting the Service");
    slices.delete("web", &DeleteParams::default()).await.expect("deleting the EndpointSlice");
    wait_for("the pods to be gone", Duration::from_secs(90), || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    assert!(agent.leftover_veths().is_empty(), "veths left on the bridge: {:?}", agent.leftover_veths());
    let netns_left: Vec<_> =
        std::fs::read_dir(&agent.netns_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(netns_left.is_empty(), "network namespaces left: {netns_left:?}");
    let pod_mounts: Vec<_> = agent.leftover_mounts();
    assert!(pod_mounts.is_empty(), "mounts left: {pod_mounts:?}");
    assert!(agent.is_running(), "the agent exited:\n{}", agent.log());

    assert!(agent.stop(Duration::from_secs(15)).is_some());
    drop(agent);
    let attached = bpf_programs_on(&cgroup.cgroup2_dir);
    assert!(attached.is_empty(), "BPF programs still attached after the agent stopped: {attached}");
    drop(cgroup);
    api.shutdown().await;
    drop(registry);
}

/// Probes on a real pod IP, from the agent on the host. A web server that listens only after
/// 5 s turns Ready only then (tcpSocket readiness on a named port), and its httpGet liveness
/// probe keeps passing; a container whose httpGet liveness probe hits a closed port is
/// killed within the probe's grace period and restarted again; the agent counts the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let mut node = TestNode::start("e2e-probes", "10.245.31.0/24").await;
    let (admin, node_name, registry) = (node.admin.clone(), node.node_name.clone(), &node.registry);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &slow_web_pod(&node_name, &registry.image("web:1")))
        .await
        .expect("creating the slow web pod");
    pods.create(&PostParams::default(), &unhealthy_pod(&node_name, &registry.image("busybox:1")))
        .await
        .expect("creating the unhealthy pod");
    pods.create(&PostParams::default(), &exec_ready_pod(&node_name, &registry.image("busybox:1")))
        .await
        .expect("creating the exec-probed pod");

    // Running, started, but not ready while nothing listens.
    let running = wait_for("the slow web server to run", Duration::from_secs(120), || async {
        let pod = pods.get("slow-web").await.ok()?;
        container_status(&pod)?.state.as_ref()?.running.is_some().then_some(pod)
    })
    .await;
    let status = container_status(&running).expect("container status").clone();
    assert_eq!((status.started, status.ready), (Some(true), false), "{status:?}");
    let not_ready = condition(&running, "Ready").expect("Ready condition");
    assert_eq!(not_ready.status, "False");
    assert_eq!(not_ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(not_ready.message.as_deref(), Some("containers with unready status: [httpd]"));

    let ready = wait_for("the slow web server to be Ready", Duration::from_secs(60), || async {
        let pod = pods.get("slow-web").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    let started_at = status.state.as_ref().and_then(|s| s.running.as_ref()?.started_at.clone()).expect("startedAt");
    let ready_at = condition(&ready, "Ready").and_then(|c| c.last_transition_time).expect("lastTransitionTime");
    let waited = ready_at.0 - started_at.0;
    assert!(waited >= chrono::Duration::seconds(4), "Ready {waited} after the start, before the server listened");

    // Killed within the probe's 1 s grace (kubelet's minimum 2 s), not the pod's 30 s, twice.
    let unhealthy = wait_for("the unhealthy container to restart twice", Duration::from_secs(90), || async {
        let pod = pods.get("unhealthy").await.ok()?;
        (container_status(&pod)?.restart_count >= 2).then_some(pod)
    })
    .await;
    let last = container_status(&unhealthy).and_then(|s| s.last_state.as_ref()?.terminated.clone());
    let last = last.expect("lastState.terminated of the restarted container");
    assert!(matches!(last.exit_code, 137 | 143), "killed, not exited: {last:?}");
    let ran = last.finished_at.expect("finishedAt").0 - last.started_at.expect("startedAt").0;
    assert!(ran < chrono::Duration::seconds(15), "an unhealthy attempt lived {ran}");

    // An exec readiness probe runs `cat` inside the container: Ready once the file exists.
    let exec_ready = wait_for("the exec-probed pod to be Ready", Duration::from_secs(60), || async {
        let pod = pods.get("exec-ready").await.ok()?;
        pod_ready(&pod).then_some(pod)
    })
    .await;
    assert_eq!(restart_count(&exec_ready), 0);

    // kubelet's events for them, from the node's identity.
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let reasons = wait_for("the pods' events", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        let reasons: Vec<(String, String)> = list
            .iter()
            .map(|e| (e.involved_object.name.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default()))
            .collect();
        let has = |pod: &str, reason: &str| reasons.iter().any(|(p, r)| p == pod && r == reason);
        (has("exec-ready", "Pulled")
            && has("exec-ready", "Created")
            && has("exec-ready", "Started")
            && has("unhealthy", "Unhealthy")
            && has("unhealthy", "Killing"))
        .then_some(list)
    })
    .await;
    let unhealthy_event = reasons
        .iter()
        .find(|e| e.reason.as_deref() == Some("Unhealthy") && e.involved_object.name.as_deref() == Some("unhealthy"))
        .expect("Unhealthy");
    assert_eq!(unhealthy_event.type_.as_deref(), Some("Warning"));
    assert!(unhealthy_event.message.as_deref().unwrap_or_default().starts_with("Liveness probe failed:"));
    assert_eq!(unhealthy_event.source.as_ref().and_then(|s| s.host.as_deref()), Some(node_name.as_str()));

    let web = pods.get("slow-web").await.expect("slow web pod");
    assert_eq!(restart_count(&web), 0, "a passing liveness probe restarted the web server");
    let metrics = scrape_metrics(&node.agent.log()).expect("the agent's /metrics");
    for series in [
        r#"pod="slow-web",pod_uid="#,
        r#"probe_type="Readiness",result="successful"}"#,
        r#"probe_type="Liveness",result="failed"}"#,
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with("prober_probe_total{") && l.contains(series)),
            "{series}:\n{metrics}"
        );
    }

    for name in ["slow-web", "unhealthy", "exec-ready"] {
        pods.delete(name, &DeleteParams::default()).await.expect("deleting a pod");
    }
    wait_for("the pods to be gone", Duration::from_secs(90), || async {
        pods.list(&Default::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.assert_agent_running();
    node.finish().await;
}

/// GET /metrics from the address the agent logged it serves on (it binds port 0).
fn scrape_metrics(log: &str) -> Option<String> {
    let line = log.lines().map(strip_ansi).find(|l| l.contains("serving /healthz and /metrics"))?;
    let address = line.split("local_addr=").nth(1)?.split_whitespace().next()?.to_string();
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The log's colours (escape sequences up to their final letter) removed.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            plain.push(c);
        }
    }
    plain
}

fn condition(pod: &Pod, type_: &str) -> Option<PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).cloned()
}

fn container_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn container_id(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.first()?.container_id.clone()
}

fn restart_count(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.and_then(|s| s.first()).map(|s| s.restart_count).unwrap_or(-1)
}

fn lease_renew_time(lease: &Lease) -> Option<String> {
    let renew = lease.spec.as_ref()?.renew_time.as_ref()?;
    Some(renew.0.to_rfc3339())
}

fn web_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "httpd", "image": image,
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}
            }]
        }
    }))
    .expect("web pod")
}

/// busybox httpd on the named port 8080, listening only 5 s after the container starts.
fn slow_web_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "slow-web"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "httpd", "image": image,
                "command": ["sh", "-c", "sleep 5; exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "initialDelaySeconds": 8, "periodSeconds": 1}
            }]
        }
    }))
    .expect("slow web pod")
}

/// A container whose liveness probe asks a port nothing listens on.
fn unhealthy_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unhealthy"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "main", "image": image, "command": ["sleep", "3600"],
                "livenessProbe": {
                    "httpGet": {"port": 8081, "path": "/healthz"},
                    "periodSeconds": 1, "failureThreshold": 2, "terminationGracePeriodSeconds": 1
                }
            }]
        }
    }))
    .expect("unhealthy pod")
}

/// Ready only once its exec readiness probe finds the file the container writes after 2 s.
fn exec_ready_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "exec-ready"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": image,
                "command": ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}
            }]
        }
    }))
    .expect("exec-probed pod")
}

fn client_pod(node: &str, image: &str) -> Pod {
    // busybox nc, not wget: Debian's static busybox wget segfaults (also outside containers).
    let script = format!(
        "for i in $(seq 1 30); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {VIP} 80 | grep -q 'hello from nodelet' && exit 0; sleep 1; done; exit 1"
    );
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "nc", "image": image, "command": ["sh", "-c", script]}]
        }
    }))
    .expect("client pod")
}

fn web_service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "clusterIP": VIP, "clusterIPs": [VIP], "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
        }
    }))
    .expect("service")
}

fn web_slice(ip: &str, node: &str) -> EndpointSlice {
    let labels: BTreeMap<&str, &str> = [("kubernetes.io/service-name", "web")].into();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web", "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("endpoint slice")
}

/// What bpftool lists as attached to the cgroup ("" when nothing).
fn bpf_programs_on(cgroup: &std::path::Path) -> String {
    let out = std::process::Command::new("bpftool").args(["cgroup", "show"]).arg(cgroup).output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("ID"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => String::new(),
    }
}
