//! The test API server's TokenRequest (`serviceaccounts/<name>/token`): a node gets tokens for
//! the service accounts of its own pods only, the token authenticates as the service account,
//! and the API's minimum lifetime is enforced.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use nodelet_tests::apiserver::TestApiServer;
use serde_json::json;

fn token_request(seconds: i64) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(seconds), ..TokenRequestSpec::default() },
        ..TokenRequest::default()
    }
}

fn api_error(result: Result<TokenRequest, kube::Error>) -> kube::core::ErrorResponse {
    match result {
        Err(kube::Error::Api(response)) => response,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn nodes_get_tokens_for_their_pods_service_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestApiServer::start(dir.path()).await.expect("start");
    let admin = server.admin_client().await.expect("admin");
    let admin_accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    for name in ["robot", "other"] {
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).expect("service account");
        admin_accounts.create(&PostParams::default(), &account).await.expect("create service account");
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "serviceAccountName": "robot", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    Api::<Pod>::namespaced(admin.clone(), "default").create(&PostParams::default(), &pod).await.expect("pod");

    let n1: Api<ServiceAccount> = Api::namespaced(server.node_client("n1").await.expect("n1"), "default");
    let issued = n1.create_token_request("robot", &PostParams::default(), &token_request(600)).await.expect("token");
    let status = issued.status.expect("status");
    assert!(!status.token.is_empty());
    let lifetime = status.expiration_timestamp.0 - chrono::Utc::now();
    assert!(lifetime > chrono::Duration::seconds(590) && lifetime <= chrono::Duration::seconds(600), "{lifetime}");

    // No pod of n1 runs as "other"; n2 has no pod at all; too short a lifetime is invalid.
    let other = api_error(n1.create_token_request("other", &PostParams::default(), &token_request(600)).await);
    assert_eq!(other.code, 403, "{}", other.message);
    let n2: Api<ServiceAccount> = Api::namespaced(server.node_client("n2").await.expect("n2"), "default");
    assert_eq!(
        api_error(n2.create_token_request("robot", &PostParams::default(), &token_request(600)).await).code,
        403
    );
    let short =
        api_error(admin_accounts.create_token_request("robot", &PostParams::default(), &token_request(60)).await);
    assert_eq!(short.code, 422, "{}", short.message);
    let missing =
        api_error(admin_accounts.create_token_request("absent", &PostParams::default(), &token_request(600)).await);
    assert_eq!(missing.code, 404);

    // The token is the service account: known to the server, and without its permissions.
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(server.admin_kubeconfig()).expect("admin kubeconfig"))
            .expect("kubeconfig yaml");
    let mut kubeconfig = kubeconfig;
    kubeconfig["users"][0]["user"] = serde_yaml::to_value(json!({"token": status.token})).expect("user");
    let path = dir.path().join("robot.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).expect("yaml")).expect("write kubeconfig");
    let robot = TestApiServer::client_from(&path).await.expect("robot client");
    let denied = match Api::<Pod>::namespaced(robot, "default").list(&Default::default()).await {
        Err(kube::Error::Api(response)) => response,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!(denied.code, 403);
    assert!(denied.message.contains("system:serviceaccount:default:robot"), "{}", denied.message);
    server.shutdown().await;
}
