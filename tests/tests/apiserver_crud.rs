//! The test API server through kube's client: CRUD, optimistic concurrency, patches, selectors,
//! node authorization, graceful pod deletion and the audit log.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use nodelet_tests::apiserver::TestApiServer;
use serde_json::{json, Value};

async fn server() -> (TestApiServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    (server, dir)
}

fn pod(name: &str, node: Option<&str>, labels: &[(&str, &str)]) -> Pod {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .expect("pod")
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}]},
    }))
    .expect("node")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::ErrorResponse {
    match result {
        Err(kube::Error::Api(response)) => response,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_namespaces_exist() {
    let (server, _dir) = server().await;
    let namespaces: Api<Namespace> = Api::all(server.admin_client().await.expect("client"));
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for wanted in ["default", "kube-system", "kube-node-lease", "kube-public"] {
        assert!(names.contains(&wanted.to_string()), "{wanted} in {names:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn crud_and_stale_update_conflict() {
    let (server, _dir) = server().await;
    let client = server.admin_client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let created = pods.create(&PostParams::default(), &pod("a", None, &[])).await.expect("create");
    let meta = &created.metadata;
    assert!(meta.uid.is_some());
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let first_version: u64 = meta.resource_version.as_deref().expect("rv").parse().expect("integer rv");
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    let again = api_error(pods.create(&PostParams::default(), &pod("a", None, &[])).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut fetched = pods.get("a").await.expect("get");
    fetched.metadata.labels = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    let updated = pods.replace("a", &PostParams::default(), &fetched).await.expect("update");
    let second_version: u64 = updated.metadata.resource_version.as_deref().expect("rv").parse().expect("integer");
    assert!(second_version > first_version);

    // `fetched` still carries the old resourceVersion.
    let stale = api_error(pods.replace("a", &PostParams::default(), &fetched).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let missing = api_error(pods.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    let mut generated = pod("", None, &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = pods.create(&PostParams::default(), &generated).await.expect("generateName");
    assert!(generated.metadata.name.as_deref().expect("name").starts_with("gen-"));

    let invalid = api_error(
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"containers": []}})).expect("pod"),
        )
        .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));

    // Unbound pods are removed at once.
    pods.delete("a", &DeleteParams::default()).await.expect("delete");
    assert_eq!(api_error(pods.get("a").await).code, 404);

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .expect("svc");
    let svc = services.create(&PostParams::default(), &svc).await.expect("create svc");
    let spec = svc.spec.expect("spec");
    assert!(spec.cluster_ip.as_deref().is_some_and(|ip| ip.starts_with("10.96.")));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}], "ports": [{"port": 8080}]}))
    .expect("slice");
    slices.create(&PostParams::default(), &slice).await.expect("create slice");
    let listed =
        slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.expect("list slices");
    assert_eq!(listed.items.len(), 1);

    let missing_namespace: Api<Pod> = Api::namespaced(client, "nope");
    let error = api_error(missing_namespace.create(&PostParams::default(), &pod("p", None, &[])).await);
    assert_eq!(error.code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn status_patches_merge_conditions() {
    let (server, _dir) = server().await;
    let pods: Api<Pod> = Api::namespaced(server.admin_client().await.expect("client"), "default");
    pods.create(&PostParams::default(), &pod("p", Some("n1"), &[])).await.expect("create");

    let strategic = json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
        "podIPs": [{"ip": "10.1.0.7"}],
        "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": "", "started": true,
                               "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}],
    }});
    pods.patch_status("p", &PatchParams::default(), &Patch::Strategic(strategic)).await.expect("strategic");
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let patched = pods.patch_status("p", &PatchParams::default(), &Patch::Strategic(ready)).await.expect("strategic 2");
    let status = patched.status.expect("status");
    let conditions: Vec<(String, String)> =
        status.conditions.expect("conditions").into_iter().map(|c| (c.type_, c.status)).collect();
    assert_eq!(
        conditions,
        vec![("Ready".to_string(), "True".to_string()), ("Initialized".to_string(), "True".to_string())],
        "conditions merge by type"
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));

    // A JSON merge patch replaces lists whole.
    let merge = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}});
    let merged = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(merge)).await.expect("merge");
    assert_eq!(merged.status.and_then(|s| s.conditions).map(|c| c.len()), Some(1));

    // A status write does not change the spec; a main-resource write does not change status.
    let sneaky = json!({"spec": {"activeDeadlineSeconds": 5}, "status": {"message": "hi"}});
    let after = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(sneaky)).await.expect("status patch");
    assert_eq!(after.spec.and_then(|s| s.active_deadline_seconds), None);
    let main = json!({"metadata": {"labels": {"x": "y"}}, "status": {"message": "ignored"}});
    let after = pods.patch("p", &PatchParams::default(), &Patch::Merge(main)).await.expect("main patch");
    assert_eq!(after.status.and_then(|s| s.message).as_deref(), Some("hi"));

    // JSON patch.
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels/z", "value": "1"}])).expect("patch");
    let after = pods.patch("p", &PatchParams::default(), &Patch::<()>::Json(json_patch)).await.expect("json patch");
    assert_eq!(after.metadata.labels.and_then(|l| l.get("z").cloned()).as_deref(), Some("1"));
    server.shutdown().await;
}

#[tokio::test]
async fn selectors() {
    let (server, _dir) = server().await;
    let client = server.admin_client().await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", Some("n1"), &[("app", "web"), ("tier", "front")])).await.expect("a");
    pods.create(&PostParams::default(), &pod("b", Some("n2"), &[("app", "db")])).await.expect("b");
    pods.create(&PostParams::default(), &pod("c", None, &[("app", "web")])).await.expect("c");

    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items.into_iter().filter_map(|p| p.metadata.name).collect()
    };
    let all: Api<Pod> = Api::all(client);
    assert_eq!(names(all.list(&ListParams::default().fields("spec.nodeName=n1")).await.expect("field")), ["a"]);
    assert_eq!(names(all.list(&ListParams::default().fields("spec.nodeName=")).await.expect("unbound")), ["c"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("app=web")).await.expect("eq")), ["a", "c"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("app!=web")).await.expect("ne")), ["b"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("app in (db, x)")).await.expect("in")), ["b"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("app notin (db)")).await.expect("notin")), ["a", "c"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("tier")).await.expect("exists")), ["a"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("!tier")).await.expect("not exists")), ["b", "c"]);
    assert_eq!(names(pods.list(&ListParams::default().fields("metadata.name=b")).await.expect("name")), ["b"]);
    let bad = api_error(pods.list(&ListParams::default().fields("spec.bogus=1")).await);
    assert_eq!(bad.code, 400);

    let first = pods.list(&ListParams::default().limit(2)).await.expect("page 1");
    let token = first.metadata.continue_.clone().expect("continue");
    let second = pods.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page 2");
    assert_eq!((first.items.len(), second.items.len()), (2, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn node_identity_is_restricted() {
    let (server, _dir) = server().await;
    let admin = server.admin_client().await.expect("admin");
    let n1: Client = server.node_client("n1").await.expect("node client");

    let nodes: Api<Node> = Api::all(n1.clone());
    nodes.create(&PostParams::default(), &node("n1")).await.expect("own node");
    let other = api_error(nodes.create(&PostParams::default(), &node("n2")).await);
    assert_eq!((other.code, other.reason.as_str()), (403, "Forbidden"));
    Api::<Node>::all(admin.clone()).create(&PostParams::default(), &node("n2")).await.expect("admin creates n2");

    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    nodes.patch_status("n1", &PatchParams::default(), &Patch::Strategic(ready.clone())).await.expect("own status");
    let forbidden = api_error(nodes.patch_status("n2", &PatchParams::default(), &Patch::Strategic(ready)).await);
    assert_eq!((forbidden.code, forbidden.reason.as_str()), (403, "Forbidden"));
    assert!(forbidden.message.contains("n2"), "{}", forbidden.message);
    assert_eq!(nodes.list(&ListParams::default()).await.expect("list nodes").items.len(), 2);

    let leases: Api<Lease> = Api::namespaced(n1.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}),
    )
    .expect("lease");
    let created = leases.create(&PostParams::default(), &lease).await.expect("own lease");
    leases.replace("n1", &PostParams::default(), &created).await.expect("renew lease");
    let mut foreign = lease.clone();
    foreign.metadata.name = Some("n2".into());
    assert_eq!(api_error(leases.create(&PostParams::default(), &foreign).await).code, 403);

    // Pods: reads allowed; status and delete only for its own pods; no plain creates.
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    admin_pods.create(&PostParams::default(), &pod("mine", Some("n1"), &[])).await.expect("mine");
    admin_pods.create(&PostParams::default(), &pod("theirs", Some("n2"), &[])).await.expect("theirs");
    let pods: Api<Pod> = Api::namespaced(n1.clone(), "default");
    let mine =
        Api::<Pod>::all(n1.clone()).list(&ListParams::default().fields("spec.nodeName=n1")).await.expect("list own");
    assert_eq!(mine.items.len(), 1);
    let phase = json!({"status": {"phase": "Running"}});
    pods.patch_status("mine", &PatchParams::default(), &Patch::Strategic(phase.clone())).await.expect("own pod status");
    assert_eq!(
        api_error(pods.patch_status("theirs", &PatchParams::default(), &Patch::Strategic(phase)).await).code,
        403
    );
    assert_eq!(api_error(pods.delete("theirs", &DeleteParams::default()).await).code, 403);
    assert_eq!(api_error(pods.create(&PostParams::default(), &pod("new", Some("n1"), &[])).await).code, 403);
    // Mirror pods only, bound to itself and owned by its Node as controller.
    let mirror = |name: &str, owners: Value| -> Pod {
        let mut p = pod(name, Some("n1"), &[]);
        p.metadata.annotations = Some([("kubernetes.io/config.mirror".to_string(), "h".to_string())].into());
        p.metadata.owner_references = serde_json::from_value(owners).expect("owners");
        p
    };
    let owner = |name: &str, controller: bool| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": "u", "controller": controller}]);
    pods.create(&PostParams::default(), &mirror("static-n1", owner("n1", true))).await.expect("a mirror pod");
    for (bad, owners) in [("no-owner", json!([])), ("not-controller", owner("n1", false)), ("other", owner("n2", true))]
    {
        let error = api_error(pods.create(&PostParams::default(), &mirror(bad, owners)).await);
        assert_eq!(error.code, 403, "{bad}: {}", error.message);
        assert!(error.message.contains("owner reference"), "{bad}: {}", error.message);
    }
    let services: Api<Service> = Api::all(n1.clone());
    services.list(&ListParams::default()).await.expect("services readable");
    let namespaces: Api<Namespace> = Api::all(n1);
    assert_eq!(api_error(namespaces.list(&ListParams::default()).await).code, 403);

    let audit = server.audit();
    let denied: Vec<_> = audit.iter().filter(|e| e.user == "system:node:n1" && e.code == 403).collect();
    assert!(denied
        .iter()
        .any(|e| e.verb == "patch" && e.resource == "nodes" && e.subresource == "status" && e.name == "n2"));
    assert!(audit.iter().any(|e| e.user == "admin" && e.groups.contains(&"system:masters".to_string())));
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_pod_deletion() {
    let (server, _dir) = server().await;
    let admin: Api<Pod> = Api::namespaced(server.admin_client().await.expect("admin"), "default");
    let kubelet: Api<Pod> = Api::namespaced(server.node_client("n1").await.expect("node"), "default");
    let created = admin.create(&PostParams::default(), &pod("g", Some("n1"), &[])).await.expect("create");

    // A bound pod with grace > 0 stays, marked.
    admin.delete("g", &DeleteParams::default().grace_period(20)).await.expect("delete");
    let marked = admin.get("g").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(20));

    // A wrong UID precondition is a conflict.
    let wrong = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions { uid: Some("wrong".into()), resource_version: None }),
        ..DeleteParams::default()
    };
    assert_eq!(api_error(kubelet.delete("g", &wrong).await).code, 409);

    // The kubelet's final delete with grace 0 and the right UID removes it.
    let last = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions { uid: created.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    kubelet.delete("g", &last).await.expect("final delete");
    assert_eq!(api_error(admin.get("g").await).code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn unavailable_server_answers_503() {
    let (server, _dir) = server().await;
    let pods: Api<Pod> = Api::namespaced(server.admin_client().await.expect("admin"), "default");
    server.set_unavailable(true);
    assert_eq!(api_error(pods.list(&ListParams::default()).await).code, 503);
    server.set_unavailable(false);
    pods.list(&ListParams::default()).await.expect("back");
    server.shutdown().await;
}

#[tokio::test]
async fn nodes_get_only_the_secrets_and_configmaps_their_pods_reference() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    let (server, _dir) = server().await;
    let admin = server.admin_client().await.expect("admin");
    let n1: Client = server.node_client("n1").await.expect("node client");
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    for name in ["pull", "mounted", "unrelated"] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{\"auths\": {}}"},
        }))
        .expect("secret");
        admin_secrets.create(&PostParams::default(), &secret).await.expect("create secret");
    }
    let stored = admin_secrets.get("pull").await.expect("get");
    assert!(stored.string_data.is_none(), "stringData is folded into data");
    assert_eq!(stored.data.expect("data")[".dockerconfigjson"].0, b"{\"auths\": {}}");
    let broken: Secret = serde_json::from_value(json!({
        "metadata": {"name": "broken"}, "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{"},
    }))
    .expect("secret");
    assert_eq!(api_error(admin_secrets.create(&PostParams::default(), &broken).await).code, 422);

    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"k": "v"}})).expect("configmap");
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create configmap");

    let mut bound = pod("p", Some("n1"), &[]);
    let spec = bound.spec.as_mut().expect("spec");
    spec.image_pull_secrets = Some(vec![serde_json::from_value(json!({"name": "pull"})).expect("ref")]);
    spec.volumes = Some(vec![
        serde_json::from_value(json!({"name": "s", "secret": {"secretName": "mounted"}})).expect("volume"),
        serde_json::from_value(json!({"name": "c", "configMap": {"name": "settings"}})).expect("volume"),
    ]);
    Api::<Pod>::namespaced(admin.clone(), "default").create(&PostParams::default(), &bound).await.expect("pod");

    let secrets: Api<Secret> = Api::namespaced(n1.clone(), "default");
    secrets.get("pull").await.expect("an image pull secret of a pod on n1");
    secrets.get("mounted").await.expect("a secret volume of a pod on n1");
    Api::<ConfigMap>::namespaced(n1.clone(), "default").get("settings").await.expect("a configmap volume");
    let unrelated = api_error(secrets.get("unrelated").await);
    assert_eq!(unrelated.code, 403);
    assert!(
        unrelated.message.contains("no relationship found between node 'n1' and this object"),
        "{}",
        unrelated.message
    );
    assert_eq!(api_error(secrets.list(&ListParams::default()).await).code, 403, "no listing of secrets");
    // A node other than the pod's is not related to its secrets.
    let n2: Api<Secret> = Api::namespaced(server.node_client("n2").await.expect("n2"), "default");
    assert_eq!(api_error(n2.get("pull").await).code, 403);
    server.shutdown().await;
}
