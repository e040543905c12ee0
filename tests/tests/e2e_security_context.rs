//! End to end, identity and isolation: securityContext (user, groups, capabilities, seccomp,
//! no_new_privs, read-only root), hostNetwork and hostPID, and runAsNonRoot refused with
//! kubelet's reason and message while the other pods run. Each container prints what it sees
//! into its log; the test reads the log files under the agent's root.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use nodelet_tests::harness::{wait_for, TestNode};
use serde_json::{json, Value};

const POD_CIDR: &str = "10.245.21.0/24";

/// containerd's default capability set, as a CapEff bit mask.
const DEFAULT_CAPS: u64 = 0xa80425fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_and_host_namespaces_as_kubelet_runs_them() {
    let mut node = TestNode::start("secctx", POD_CIDR).await;
    let pods = node.pods();
    let image = node.registry.image("busybox:1");
    // A Localhost profile under kubelet's seccomp root: everything allowed, but logged.
    let seccomp_root = node.agent.root_dir.join("seccomp/profiles");
    std::fs::create_dir_all(&seccomp_root).expect("seccomp root");
    std::fs::write(seccomp_root.join("log.json"), r#"{"defaultAction": "SCMP_ACT_LOG"}"#).expect("profile");
    let all = [
        identity_pod(&node.node_name, &image),
        host_pod(&node.node_name, &image),
        non_root_pod(&node.node_name, &image),
        privileged_pod(&node.node_name, &image),
    ];
    for pod in all {
        pods.create(&PostParams::default(), &serde_json::from_value::<Pod>(pod).expect("pod"))
            .await
            .expect("create pod");
    }

    let ids = container_output(&node, &pods, "identity", "ids").await;
    assert!(ids.starts_with("uid=1000 gid=3000 groups="), "{ids}");
    let groups: Vec<&str> = ids.trim().rsplit("groups=").next().unwrap_or_default().split(',').collect();
    for group in ["2000", "3000", "4000"] {
        assert!(groups.iter().any(|g| g.starts_with(group)), "{group} missing from {ids}");
    }

    let confined = container_output(&node, &pods, "identity", "confined").await;
    let expected_caps = (DEFAULT_CAPS & !CAP_CHOWN) | CAP_NET_ADMIN;
    assert_eq!(status_field(&confined, "CapEff"), format!("{expected_caps:016x}"), "{confined}");
    assert_eq!(status_field(&confined, "Seccomp"), "2", "{confined}");
    assert_eq!(status_field(&confined, "NoNewPrivs"), "1", "{confined}");
    assert!(confined.contains("write refused"), "the read-only root took a write: {confined}");

    let open = container_output(&node, &pods, "identity", "open").await;
    assert_eq!(status_field(&open, "CapEff"), format!("{DEFAULT_CAPS:016x}"), "{open}");
    assert_eq!(status_field(&open, "Seccomp"), "0", "{open}");
    assert_eq!(status_field(&open, "NoNewPrivs"), "0", "{open}");
    assert!(open.contains("write allowed"), "{open}");

    // hostNetwork and hostPID: the node's interfaces (this node's bridge among them), its
    // pid 1, its hostname and /etc/hosts, and the node's IP as the pod's.
    let host = container_output(&node, &pods, "host", "look").await;
    let host_init = std::fs::read_to_string("/proc/1/comm").expect("host /proc/1/comm");
    assert!(host.contains(&format!("init={}", host_init.trim())), "{host}");
    assert!(host.lines().any(|l| l.trim() == node.agent.bridge), "bridge {} not seen: {host}", node.agent.bridge);
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(host.contains(&format!("hostname={}", host_name.trim())), "{host}");
    assert!(host.contains("# Kubernetes-managed hosts file (host network)."), "{host}");
    let status = pods.get("host").await.expect("host pod").status.expect("status");
    assert!(status.pod_ip.is_some() && status.pod_ip == status.host_ip, "{status:?}");

    // Privileged: every capability, no masked paths, /sys writable; a Localhost profile.
    let privileged = container_output(&node, &pods, "privileged", "all").await;
    let own = std::fs::read_to_string("/proc/self/status").expect("own status");
    assert_eq!(status_field(&privileged, "CapEff"), status_field(&own, "CapEff"), "{privileged}");
    assert_eq!(status_field(&privileged, "Seccomp"), "0", "{privileged}");
    assert!(privileged.contains("sysfs /sys sysfs rw"), "{privileged}");
    assert!(privileged.contains("keys visible"), "{privileged}");
    let local = container_output(&node, &pods, "privileged", "local").await;
    assert_eq!(status_field(&local, "Seccomp"), "2", "{local}");
    assert!(local.contains("keys masked"), "{local}");

    // runAsNonRoot with a root image or runAsUser 0: kubelet's reason and message; a missing
    // Localhost profile: the runtime's refusal, naming the file. The others keep running.
    let uid = pods.get("nonroot").await.expect("pod").metadata.uid.expect("uid");
    let label = format!("nonroot_default({uid})");
    let refusals = [
        (
            "app",
            "CreateContainerConfigError",
            format!("container has runAsNonRoot and image will run as root (pod: {label:?}, container: app)"),
        ),
        (
            "root",
            "CreateContainerConfigError",
            format!("container's runAsUser breaks non-root policy (pod: {label:?}, container: root)"),
        ),
        (
            "noprofile",
            "CreateContainerError",
            "failed to generate seccomp spec opts: cannot load seccomp profile".to_string(),
        ),
    ];
    for (container, reason, message) in refusals {
        let waiting = wait_for(&format!("{container} to be refused"), Duration::from_secs(60), || async {
            let status = pods.get("nonroot").await.ok()?.status?;
            let found = status.container_statuses?.into_iter().find(|c| c.name == container)?;
            let waiting = found.state?.waiting?;
            (waiting.reason.as_deref() == Some(reason)).then_some(waiting)
        })
        .await;
        let text = waiting.message.unwrap_or_default();
        assert!(text.starts_with(&message), "{container}: {text}");
    }
    let identity = pods.get("identity").await.expect("identity").status.expect("status");
    assert_eq!(identity.phase.as_deref(), Some("Running"), "{identity:?}");
    node.assert_agent_running();

    // Deleting them all leaves nothing behind, the host-network pod included.
    for name in ["identity", "host", "nonroot", "privileged"] {
        pods.delete(name, &DeleteParams::default()).await.expect("delete pod");
    }
    wait_for("the pods to be gone", Duration::from_secs(60), || async {
        pods.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.finish().await;
}

/// The value of a /proc/self/status line the container printed ("CapEff:\t...").
fn status_field(output: &str, field: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

/// What a container printed up to its "done" line; on a timeout, the pod's status and the
/// agent's log say why.
async fn container_output(node: &TestNode, pods: &Api<Pod>, pod: &str, container: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let found = pods.get(pod).await.ok();
        let uid = found.as_ref().and_then(|p| p.metadata.uid.clone()).unwrap_or_default();
        let text = std::fs::read_to_string(log_file(node, &uid, container)).unwrap_or_default();
        if text.contains("done\n") {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            let status = found.and_then(|p| p.status);
            panic!("{pod}/{container} did not report: {status:?}\nagent log:\n{}", node.agent.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_file(node: &TestNode, uid: &str, container: &str) -> PathBuf {
    node.agent.root_dir.join("pods").join(uid).join("logs").join(container).join("0.log")
}

fn sleeper(name: &str, image: &str, script: &str, security: Value) -> Value {
    json!({
        "name": name, "image": image,
        "command": ["sh", "-c", format!("{script}; echo done; exec sleep 3600")],
        "securityContext": security
    })
}

fn pod(name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    spec["terminationGracePeriodSeconds"] = json!(1);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

const STATUS: &str = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status";

fn identity_pod(node: &str, image: &str) -> Value {
    let write = "if touch /probe-write 2>/dev/null; then echo write allowed; else echo write refused; fi";
    pod(
        "identity",
        node,
        json!({
            "securityContext": {"supplementalGroups": [4000], "fsGroup": 2000},
            "containers": [
                sleeper("ids", image, "id", json!({"runAsUser": 1000, "runAsGroup": 3000})),
                sleeper("confined", image, &format!("{STATUS}; {write}"), json!({
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]},
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "seccompProfile": {"type": "RuntimeDefault"}
                })),
                sleeper("open", image, &format!("{STATUS}; {write}"), json!({
                    "seccompProfile": {"type": "Unconfined"}
                })),
            ]
        }),
    )
}

fn host_pod(node: &str, image: &str) -> Value {
    let script = "ls /sys/class/net; echo init=$(cat /proc/1/comm); echo hostname=$(hostname); head -n 1 /etc/hosts";
    pod(
        "host",
        node,
        json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "containers": [sleeper("look", image, script, json!({}))]
        }),
    )
}

fn non_root_pod(node: &str, image: &str) -> Value {
    let missing = json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/missing.json"}});
    pod(
        "nonroot",
        node,
        json!({
            "containers": [
                sleeper("app", image, "true", json!({"runAsNonRoot": true})),
                sleeper("root", image, "true", json!({"runAsNonRoot": true, "runAsUser": 0})),
                sleeper("noprofile", image, "true", missing),
            ]
        }),
    )
}

fn privileged_pod(node: &str, image: &str) -> Value {
    let keys = "if grep -q ' /proc/keys ' /proc/mounts; then echo keys masked; else echo keys visible; fi";
    let local = json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/log.json"}});
    pod(
        "privileged",
        node,
        json!({
            "containers": [
                sleeper("all", image, &format!("{STATUS}; grep ' /sys ' /proc/mounts; {keys}"), json!({"privileged": true})),
                sleeper("local", image, &format!("{STATUS}; {keys}"), local),
            ]
        }),
    )
}
