//! End to end, standalone: `nodelet run DIR` with a manifest directory written by the test
//! (a web-server pod from the test registry, a ClusterIP Service selecting it, and a
//! malformed manifest beside them). The page is fetched through the Service's VIP from a
//! process in the test's cgroup; on SIGTERM nodelet exits 0 and releases everything: pods,
//! mounts (the netns directory's own bind mount too), veths, the bridge, the monitor and the
//! BPF program.

use std::time::{Duration, Instant};

use nodelet_tests::harness::{
    bpf_programs_on, http_get_from_cgroup, link_exists, require_root, unique_suffix, wait_for, NodeletProcess,
    TestCgroup, TestRegistry,
};

const VIP: &str = "10.96.88.10";
const POD_CIDR: &str = "10.245.9.0/24";
const BROKEN_FILE: &str = "broken.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_a_service_and_releases_everything_on_sigterm() {
    require_root();
    let suffix = unique_suffix();
    let work = tempfile::Builder::new().prefix("nodelet-e2e").tempdir().expect("temp dir");
    let registry = TestRegistry::start(&work.path().join("registry"));
    let cgroup = TestCgroup::create(&format!("nodelet-e2e-{suffix}"));

    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    std::fs::write(manifests.join("web.yaml"), web_manifests(&registry.image("web:1"))).expect("web.yaml");
    // Unparsable YAML that claims to be a Pod: it must be reported and skipped.
    std::fs::write(manifests.join(BROKEN_FILE), "apiVersion: v1\nkind: Pod\nmetadata: [oops\n").expect("broken");

    let node_name = format!("standalone-{suffix}");
    let args: Vec<String> = vec![
        "run".into(),
        manifests.display().to_string(),
        "--node-name".into(),
        node_name,
        "--pod-cidr".into(),
        POD_CIDR.into(),
        "--cgroup-root".into(),
        cgroup.path(),
        "--proxy-attach-cgroup".into(),
        cgroup.cgroup2_dir.display().to_string(),
        "--cluster-dns".into(),
        "10.96.0.10".into(),
        "--cluster-domain".into(),
        "cluster.local".into(),
    ];
    let mut nodelet = NodeletProcess::start(work.path(), &format!("nlb{suffix}"), &args);

    // The page, through the Service: the pod runs although another manifest is broken.
    let page = wait_for("the page through the Service", Duration::from_secs(90), || {
        let running = nodelet.is_running();
        let cgroup2 = cgroup.cgroup2_dir.clone();
        let log = nodelet.log();
        async move {
            assert!(running, "nodelet run exited:\n{log}");
            let page = tokio::task::spawn_blocking(move || http_get_from_cgroup(&cgroup2, "client", VIP, 80))
                .await
                .expect("client task");
            page.contains("hello from nodelet").then_some(page)
        }
    })
    .await;
    assert!(page.starts_with("HTTP/1."), "not an HTTP answer: {page}");
    let log = nodelet.log();
    assert!(log.contains(BROKEN_FILE), "the log does not name the malformed manifest {BROKEN_FILE}:\n{log}");
    assert!(nodelet.monitor_pid().is_some(), "no container monitor while the pod runs");
    assert_eq!(
        pod_resolv_conf(&nodelet.root_dir),
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        "the pod's /etc/resolv.conf, dnsPolicy ClusterFirst"
    );
    assert!(link_exists(&nodelet.bridge), "no bridge {} while the pod runs", nodelet.bridge);
    assert!(!nodelet.leftover_veths().is_empty(), "no veth on the bridge while the pod runs");
    assert!(!bpf_programs_on(&cgroup.cgroup2_dir).is_empty(), "no BPF program on the test cgroup");

    // SIGTERM: a clean exit within 20 s that releases everything.
    let started = Instant::now();
    let status = nodelet.stop(Duration::from_secs(20)).expect("nodelet exit status");
    let took = started.elapsed();
    let log = nodelet.log();
    assert!(status.success(), "nodelet run exited with {status} after SIGTERM (in {took:?}):\n{log}");
    assert!(took < Duration::from_secs(20), "nodelet took {took:?} to stop");
    eprintln!("nodelet run stopped in {took:?}");

    let mounts = nodelet.all_mounts();
    assert!(mounts.is_empty(), "mounts left after nodelet run stopped: {mounts:?}\n{log}");
    let veths = nodelet.leftover_veths();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    assert!(!link_exists(&nodelet.bridge), "bridge {} left", nodelet.bridge);
    assert_eq!(nodelet.monitor_pid(), None, "the container monitor still runs");
    let attached = bpf_programs_on(&cgroup.cgroup2_dir);
    assert!(attached.is_empty(), "BPF programs still attached after nodelet stopped: {attached}");
    let netns_left: Vec<_> =
        std::fs::read_dir(&nodelet.netns_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(netns_left.is_empty(), "network namespaces left: {netns_left:?}");

    drop(nodelet);
    drop(cgroup);
    drop(registry);
}

/// The resolv.conf the pod's containers get (the only pod of the run).
fn pod_resolv_conf(root_dir: &std::path::Path) -> String {
    let pods: Vec<_> = std::fs::read_dir(root_dir.join("pods")).expect("pods dir").flatten().collect();
    assert_eq!(pods.len(), 1, "one pod directory expected: {pods:?}");
    std::fs::read_to_string(pods[0].path().join("resolv.conf")).expect("the pod's resolv.conf")
}

/// Like examples/web.yaml, with the test registry's image and the test's own VIP.
fn web_manifests(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
    - name: httpd
      image: {image}
      ports:
        - name: http
          containerPort: 8080
      resources:
        limits:
          cpu: 200m
          memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: ClusterIP
  clusterIP: {VIP}
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
      protocol: TCP
"#
    )
}
