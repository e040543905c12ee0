//! Debian's kubectl against the test API server: discovery, Table output, create, delete.

use std::path::Path;

use nodelet_tests::apiserver::TestApiServer;
use serde_json::json;

const KUBECTL: &str = "/usr/bin/kubectl";

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(kubeconfig, args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}\n{stdout}");
    stdout
}

#[tokio::test]
async fn kubectl_works_against_the_test_server() {
    assert!(Path::new(KUBECTL).exists(), "this test needs Debian's kubectl at {KUBECTL}");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    let admin = server.admin_kubeconfig();

    // A node registered by a kubelet identity, with a lease.
    let kubelet = server.node_client("n1").await.expect("node client");
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.0.2.10"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian", "kernelVersion": "6.1", "containerRuntimeVersion": "nodelet://0.1",
                                "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": ""}}
    }))
    .expect("node");
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(kubelet.clone())
        .create(&Default::default(), &node)
        .await
        .expect("register node");
    let lease: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}})).expect("lease");
    kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kubelet, "kube-node-lease")
        .create(&Default::default(), &lease)
        .await
        .expect("lease");

    let nodes = kubectl_ok(&admin, &["get", "nodes", "-o", "wide"]).await;
    assert!(nodes.contains("n1") && nodes.contains("Ready") && nodes.contains("192.0.2.10"), "{nodes}");

    let leases = kubectl_ok(&admin, &["get", "lease", "-n", "kube-node-lease"]).await;
    assert!(leases.contains("n1"), "{leases}");

    let manifest = dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: nginx:1.25\n",
    )
    .expect("manifest");
    let created = kubectl_ok(&admin, &["create", "-f", manifest.to_str().expect("utf-8 path")]).await;
    assert!(created.contains("pod/web created"), "{created}");

    let pods = kubectl_ok(&admin, &["get", "pods", "-o", "wide", "-A"]).await;
    let line = pods.lines().find(|l| l.contains("web")).unwrap_or_else(|| panic!("no web in {pods}"));
    assert!(line.starts_with("default") && line.contains("Pending") && line.contains("n1"), "{pods}");

    let yaml = kubectl_ok(&admin, &["get", "pod", "web", "-o", "yaml"]).await;
    assert!(yaml.contains("uid:") && yaml.contains("resourceVersion:"), "{yaml}");

    // The pod is bound: delete marks it; the "kubelet" finishes it with grace 0.
    kubectl_ok(&admin, &["delete", "pod", "web", "--wait=false"]).await;
    let terminating = kubectl_ok(&admin, &["get", "pods"]).await;
    assert!(terminating.contains("Terminating"), "{terminating}");
    kubectl_ok(&admin, &["delete", "pod", "web", "--grace-period=0", "--force"]).await;
    let (ok, stdout, stderr) = kubectl(&admin, &["get", "pod", "web"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stdout}{stderr}");

    // A node identity may not list namespaces.
    let node_config = server.node_kubeconfig("n1").expect("node kubeconfig");
    let (ok, _, stderr) = kubectl(&node_config, &["get", "namespaces"]).await;
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    server.shutdown().await;
}
