//! End to end, volumes and configuration as kubelet gives them: `nodelet agent` against the
//! test API server and a local registry, on the real kernel. One pod gets every volume type
//! nodelet mounts (emptyDir shared by two containers, a memory emptyDir on tmpfs, configMap,
//! secret, downwardAPI, projected, hostPath, a subPath) and env from every source; its
//! container writes what it sees to a hostPath directory the test reads. A ConfigMap update
//! reaches the mounted files; a projected service account token comes from the TokenRequest
//! API; an agent restart reuses the volumes; deletion leaves no mount.
//! Bad input: a missing ConfigMap is CreateContainerConfigError until it is created, a volume
//! that cannot be mounted keeps the pod ContainerCreating with a FailedMount event.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateWaiting, Event, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use nodelet_tests::harness::{wait_for, TestNode};
use serde_json::json;

fn config_map(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}))
        .expect("configmap")
}

/// The app's ConfigMap: text keys, and a binaryData key that volumes show and env does not.
fn app_config() -> ConfigMap {
    let mut config = config_map("app-config", json!({"greeting": "hello", "1bad": "x"}));
    let blob = k8s_openapi::ByteString(b"binary".to_vec());
    config.binary_data = Some([("blob".to_string(), blob)].into_iter().collect());
    config
}

fn secret(name: &str, data: serde_json::Value) -> Secret {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}),
    )
    .expect("secret")
}

/// The script of the reporting container: every second, what it sees, to /out/report.
const REPORT: &str = r#"
while true; do
  {
    echo "shared=$(cat /scratch/note)"
    echo "subpath=$(cat /scratch/inner/from-subpath)"
    echo "memfs=$(awk '$2 == "/mem" {print $3}' /proc/mounts)"
    echo "memsize=$(awk '$2 == "/mem" {print $4}' /proc/mounts | tr , '\n' | grep '^size=')"
    echo "greeting=$(cat /cfg/greeting)"
    echo "cfglink=$(readlink /cfg/greeting)"
    echo "pass=$(cat /creds/pass)"
    echo "passmode=$(stat -L -c %a /creds/pass)"
    echo "labels=$(cat /info/labels | tr '\n' ' ')"
    echo "projected=$(cat /all/greeting)/$(cat /all/pass)/$(cat /all/name)"
    echo "ro=$(touch /cfg/x 2>/dev/null && echo writable || echo readonly)"
    echo "env=$GREETING|$PASSWORD|$POD_NAME|$POD_NS|$APP|$NODE|$MEM_MI|$CM_greeting|$MIXED"
    echo "podip=$POD_IP"
    echo "token=$(cut -c1-9 /all/token)"
    echo "group=$(stat -L -c %g /creds/pass)/$(stat -c %g /scratch)/$(stat -c %g /scratch/note)"
    echo "blob=$(cat /cfg/blob)|${CM_blob:-unset}"
  } > /out/report.tmp
  mv /out/report.tmp /out/report
  sleep 1
done
"#;

fn volume_pod(node: &str, image: &str, out: &Path) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vols", "labels": {"app": "vols", "tier": "test"}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "robot",
            "securityContext": {"fsGroup": 2345},
            "terminationGracePeriodSeconds": 1,
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "cfg", "configMap": {"name": "app-config"}},
                {"name": "creds", "secret": {"secretName": "app-secret",
                    "items": [{"key": "password", "path": "pass", "mode": 0o400}]}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "app-config"}},
                    {"secret": {"name": "app-secret", "items": [{"key": "password", "path": "pass"}]}},
                    {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}]}},
                {"name": "out", "hostPath": {"path": out.display().to_string(), "type": "DirectoryOrCreate"}}
            ],
            "containers": [
                {"name": "writer", "image": image,
                 "command": ["sh", "-c", "echo shared > /scratch/note; echo sub > /inner/from-subpath; sleep 3600"],
                 "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "scratch", "mountPath": "/inner", "subPath": "inner"}]},
                {"name": "reporter", "image": image, "command": ["sh", "-c", REPORT],
                 "resources": {"limits": {"memory": "64Mi"}},
                 "envFrom": [
                    {"configMapRef": {"name": "app-config"}, "prefix": "CM_"},
                    // Without a prefix "1bad" is no variable name: skipped, with an event.
                    {"configMapRef": {"name": "app-config"}}],
                 "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "MIXED", "value": "$(GREETING)-$(POD_NAME)"}
                 ],
                 "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "mem", "mountPath": "/mem"},
                    {"name": "cfg", "mountPath": "/cfg"},
                    {"name": "creds", "mountPath": "/creds"},
                    {"name": "info", "mountPath": "/info"},
                    {"name": "all", "mountPath": "/all"},
                    {"name": "out", "mountPath": "/out"}]}
            ]
        }
    }))
    .expect("pod")
}

/// The report's `key=value` lines, once the container wrote one.
fn report(out: &Path) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(out.join("report")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
            .collect(),
    )
}

fn field(report: &[(String, String)], key: &str) -> String {
    report.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Mount points at or below `dir`, from the test's own mount namespace (the agent's).
fn mounts_below(dir: &Path) -> Vec<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            point.starts_with(dir).then(|| (point, fields.get(dash + 1).unwrap_or(&"").to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_env_reach_containers_and_leave_nothing_behind() {
    let mut node = TestNode::start("e2e-volumes", "10.245.47.0/24").await;
    let pods = node.pods();
    let config_maps: Api<ConfigMap> = Api::namespaced(node.admin.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(node.admin.clone(), "default");
    config_maps.create(&PostParams::default(), &app_config()).await.expect("creating the ConfigMap");
    secrets
        .create(&PostParams::default(), &secret("app-secret", json!({"password": "s3cret"})))
        .await
        .expect("creating the Secret");
    let accounts: Api<ServiceAccount> = Api::namespaced(node.admin.clone(), "default");
    let robot = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    accounts
        .create(&PostParams::default(), &serde_json::from_value(robot).expect("service account"))
        .await
        .expect("creating the ServiceAccount");
    let host_dir = tempfile::Builder::new().prefix("nodelet-e2e-hostpath").tempdir().expect("temp dir");
    let out = host_dir.path().join("out");
    let image = node.registry.image("busybox:1");
    pods.create(&PostParams::default(), &volume_pod(&node.node_name, &image, &out)).await.expect("creating the pod");

    let seen = wait_for("the reporter's first full report", Duration::from_secs(120), || async {
        let report = report(&out)?;
        (field(&report, "shared") == "shared" && field(&report, "subpath") == "sub").then_some(report)
    })
    .await;
    let pod = pods.get("vols").await.expect("pod");
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
    let uid = pod.metadata.uid.clone().expect("uid");
    let expected = [
        ("memfs", "tmpfs".to_string()),
        ("memsize", "size=16384k".to_string()),
        ("greeting", "hello".to_string()),
        ("cfglink", "..data/greeting".to_string()),
        ("pass", "s3cret".to_string()),
        // The item's 0400, and read access for the fsGroup that owns the volumes.
        ("passmode", "440".to_string()),
        ("group", "2345/2345/2345".to_string()),
        ("labels", "app=\"vols\" tier=\"test\"".to_string()),
        ("projected", "hello/s3cret/vols".to_string()),
        ("ro", "readonly".to_string()),
        ("env", format!("hello|s3cret|vols|default|vols|{}|64|hello|hello-vols", node.node_name)),
        ("podip", pod_ip),
        // A token from the TokenRequest API, bound to the pod.
        ("token", "sa.robot.".to_string()),
        // binaryData is a file in the volume, never a variable (as in kubelet).
        ("blob", "binary|unset".to_string()),
    ];
    for (key, value) in &expected {
        assert_eq!(&field(&seen, key), value, "{key} in the report {seen:?}\nagent log:\n{}", node.agent.log());
    }

    // The layout on the host: kubelet's directories, tmpfs for memory, secret and projected.
    let volumes = node.agent.root_dir.join("pods").join(&uid).join("volumes");
    let mounts = mounts_below(&volumes);
    for (plugin, name) in
        [("kubernetes.io~empty-dir", "mem"), ("kubernetes.io~secret", "creds"), ("kubernetes.io~projected", "all")]
    {
        let path = volumes.join(plugin).join(name);
        assert!(mounts.contains(&(path.clone(), "tmpfs".to_string())), "no tmpfs on {}: {mounts:?}", path.display());
    }
    assert!(volumes.join("kubernetes.io~configmap/cfg/..data").is_symlink());
    assert!(volumes.join("kubernetes.io~empty-dir/scratch/note").is_file());

    // The invalid envFrom key was skipped and said so.
    let events: Api<Event> = Api::namespaced(node.admin.clone(), "default");
    wait_for("the InvalidEnvironmentVariableNames event", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        list.iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidEnvironmentVariableNames")
                    && e.message.as_deref().is_some_and(|m| m.contains("[1bad]"))
            })
            .then_some(())
    })
    .await;

    // An update of the ConfigMap reaches the mounted file (kubelet's resync, every minute).
    config_maps
        .patch("app-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"greeting": "bonjour"}})))
        .await
        .expect("updating the ConfigMap");
    wait_for("the ConfigMap update in the volume", Duration::from_secs(100), || async {
        let report = report(&out)?;
        (field(&report, "greeting") == "bonjour" && field(&report, "projected") == "bonjour/s3cret/vols").then_some(())
    })
    .await;

    // An agent restart reuses the volumes: the same mounts, once each, the pod untouched. The
    // ConfigMap changes just before the crash, so the restarted agent's own set-up shows.
    let before = mounts_below(&volumes);
    config_maps
        .patch("app-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"greeting": "hola"}})))
        .await
        .expect("updating the ConfigMap");
    node.agent.crash_and_restart();
    wait_for("the restarted agent to rewrite the volume", Duration::from_secs(100), || async {
        (field(&report(&out)?, "greeting") == "hola").then_some(())
    })
    .await;
    let pod = pods.get("vols").await.expect("pod");
    let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
    assert!(statuses.iter().all(|c| c.restart_count == 0), "a container restarted: {statuses:?}");
    let mut after = mounts_below(&volumes);
    let mut before_sorted = before.clone();
    before_sorted.sort();
    after.sort();
    assert_eq!(after, before_sorted, "volume mounts changed across an agent restart");

    // Deletion unmounts and removes everything; the hostPath keeps its files.
    pods.delete("vols", &DeleteParams::default()).await.expect("deleting the pod");
    wait_for("the pod to be gone", Duration::from_secs(60), || async {
        pods.get_opt("vols").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(mounts_below(&node.agent.root_dir.join("pods")).is_empty(), "{:?}", mounts_below(&node.agent.root_dir));
    assert!(!node.agent.root_dir.join("pods").join(&uid).exists(), "the pod directory is left");
    assert!(out.join("report").is_file(), "the hostPath lost its files");
    node.assert_no_pod_leftovers();
    node.assert_agent_running();
    node.finish().await;
}

fn waiting(pod: &Pod, container: &str) -> Option<ContainerStateWaiting> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find(|c| c.name == container)?.state.as_ref()?.waiting.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_are_reported_as_kubelet_reports_them() {
    let mut node = TestNode::start("e2e-volbad", "10.245.48.0/24").await;
    let pods = node.pods();
    let config_maps: Api<ConfigMap> = Api::namespaced(node.admin.clone(), "default");
    let image = node.registry.image("busybox:1");
    let pod = |name: &str, spec: serde_json::Value| -> Pod {
        let mut spec = spec;
        spec["nodeName"] = json!(node.node_name);
        spec["terminationGracePeriodSeconds"] = json!(1);
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
            .expect("pod")
    };
    let sleeper = json!({"name": "main", "image": image, "command": ["sleep", "3600"]});
    let mut late = sleeper.clone();
    late["env"] = json!([{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "k"}}}]);
    let mut wrong_key = sleeper.clone();
    wrong_key["env"] = json!([{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "present", "key": "nokey"}}}]);
    config_maps.create(&PostParams::default(), &config_map("present", json!({"k": "v"}))).await.expect("configmap");
    let manifests = [
        pod("late", json!({"containers": [late]})),
        pod("wrongkey", json!({"containers": [wrong_key]})),
        pod(
            "nomount",
            json!({"containers": [sleeper.clone()], "volumes": [{"name": "cfg", "configMap": {"name": "absent"}}]}),
        ),
        pod(
            "ebs",
            json!({"containers": [sleeper.clone()],
                   "volumes": [{"name": "disk", "awsElasticBlockStore": {"volumeID": "vol-1"}}]}),
        ),
        pod("fine", json!({"containers": [sleeper.clone()]})),
    ];
    for manifest in &manifests {
        pods.create(&PostParams::default(), manifest).await.expect("creating a pod");
    }

    let reason_of = |name: &'static str| {
        let pods = pods.clone();
        async move { waiting(&pods.get(name).await.ok()?, "main") }
    };
    let late_waiting =
        wait_for("CreateContainerConfigError for the missing ConfigMap", Duration::from_secs(60), || async {
            reason_of("late").await.filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        })
        .await;
    assert_eq!(late_waiting.message.as_deref(), Some("configmap \"late\" not found"));
    let key_waiting = wait_for("CreateContainerConfigError for the missing key", Duration::from_secs(60), || async {
        reason_of("wrongkey").await.filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
    })
    .await;
    assert_eq!(key_waiting.message.as_deref(), Some("couldn't find key nokey in ConfigMap default/present"));

    // Failed mounts: ContainerCreating, and a FailedMount event naming the volume and why.
    let events: Api<Event> = Api::namespaced(node.admin.clone(), "default");
    let failed_mounts = wait_for("FailedMount events", Duration::from_secs(60), || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        let message = |pod: &str| {
            list.iter()
                .find(|e| e.reason.as_deref() == Some("FailedMount") && e.involved_object.name.as_deref() == Some(pod))
                .and_then(|e| e.message.clone())
        };
        Some((message("nomount")?, message("ebs")?))
    })
    .await;
    assert_eq!(failed_mounts.0, "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found");
    assert!(
        failed_mounts.1.contains("volume \"disk\"") && failed_mounts.1.contains("awsElasticBlockStore"),
        "{failed_mounts:?}"
    );
    for name in ["nomount", "ebs"] {
        let reason = reason_of(name).await.and_then(|w| w.reason);
        assert_eq!(reason.as_deref(), Some("ContainerCreating"), "{name}");
    }
    wait_for("the good pod to run despite the others", Duration::from_secs(60), || async {
        let pod = pods.get("fine").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    // The missing ConfigMap appears: the container starts.
    config_maps.create(&PostParams::default(), &config_map("late", json!({"k": "arrived"}))).await.expect("configmap");
    wait_for("the late pod to run once its ConfigMap exists", Duration::from_secs(60), || async {
        let pod = pods.get("late").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    for manifest in &manifests {
        let name = manifest.metadata.name.as_deref().expect("name");
        pods.delete(name, &DeleteParams::default()).await.expect("deleting a pod");
    }
    wait_for("the pods to be gone", Duration::from_secs(60), || async {
        pods.list(&Default::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    node.assert_no_pod_leftovers();
    node.assert_agent_running();
    node.finish().await;
}
