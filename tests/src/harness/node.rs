//! A node of a test's own: the test API server, a registry with the test images, a cgroup,
//! and `nodelet agent` against them, torn down in order.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};

use super::{node_ready, require_root, unique_suffix, wait_for, NodeletProcess, TestCgroup, TestRegistry};
use crate::apiserver::TestApiServer;

/// One node of the test's own: the agent and everything it runs against. Fields drop in
/// order: the agent (and its monitor, mounts, veths, bridge) first, the work dir last.
pub struct TestNode {
    pub agent: NodeletProcess,
    pub cgroup: TestCgroup,
    pub api: TestApiServer,
    pub registry: TestRegistry,
    pub admin: Client,
    pub node_name: String,
    _work: tempfile::TempDir,
}

impl TestNode {
    /// Starts the peers and `nodelet agent` for node `<test>-<suffix>` with `pod_cidr`, and
    /// waits until the Node is Ready.
    pub async fn start(test: &str, pod_cidr: &str) -> TestNode {
        TestNode::start_with_args(test, pod_cidr, &[]).await
    }

    /// As [`TestNode::start`], with `extra_args` added to the agent's.
    pub async fn start_with_args(test: &str, pod_cidr: &str, extra_args: &[String]) -> TestNode {
        require_root();
        let suffix = unique_suffix();
        let work = tempfile::Builder::new().prefix("nodelet-e2e").tempdir().expect("temp dir");
        let registry = TestRegistry::start(&work.path().join("registry"));
        let api = TestApiServer::start(&work.path().join("api")).await.expect("test API server");
        let node_name = format!("{test}-{suffix}");
        let kubeconfig = api.node_kubeconfig(&node_name).expect("node kubeconfig");
        let admin = api.admin_client().await.expect("admin client");
        let cgroup = TestCgroup::create(&format!("nodelet-e2e-{suffix}"));
        let mut args = agent_args(&kubeconfig, &node_name, pod_cidr, &cgroup);
        args.extend_from_slice(extra_args);
        let agent = NodeletProcess::start(work.path(), &format!("nlb{suffix}"), &args);
        let node = TestNode { agent, cgroup, api, registry, admin, node_name, _work: work };
        let nodes: Api<Node> = Api::all(node.admin.clone());
        wait_for("the Node to be Ready", Duration::from_secs(60), || async {
            let found = nodes.get_opt(&node.node_name).await.ok()??;
            node_ready(&found).then_some(())
        })
        .await;
        node
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    /// Asserts the agent process still runs, with its log when it does not.
    pub fn assert_agent_running(&mut self) {
        let running = self.agent.is_running();
        assert!(running, "the agent exited:\n{}", self.agent.log());
    }

    /// Asserts that no pod left a network namespace, veth or mount behind.
    pub fn assert_no_pod_leftovers(&self) {
        let veths = self.agent.leftover_veths();
        assert!(veths.is_empty(), "veths left on the bridge: {veths:?}");
        let netns_left: Vec<_> = std::fs::read_dir(&self.agent.netns_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(netns_left.is_empty(), "network namespaces left: {netns_left:?}");
        let mounts = self.agent.leftover_mounts();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    /// Stops the agent (SIGTERM) and the API server; the guards do the rest.
    pub async fn finish(mut self) {
        assert!(self.agent.stop(Duration::from_secs(15)).is_some());
        let TestNode { agent, cgroup, api, registry, .. } = self;
        drop(agent);
        drop(cgroup);
        api.shutdown().await;
        drop(registry);
    }
}

/// `nodelet agent` against the test API server, in the test's cgroup, with its own pod CIDR.
pub fn agent_args(kubeconfig: &Path, node_name: &str, pod_cidr: &str, cgroup: &TestCgroup) -> Vec<String> {
    vec![
        "agent".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--node-name".into(),
        node_name.into(),
        "--pod-cidr".into(),
        pod_cidr.into(),
        "--cgroup-root".into(),
        cgroup.path(),
        "--proxy-attach-cgroup".into(),
        cgroup.cgroup2_dir.display().to_string(),
    ]
}
