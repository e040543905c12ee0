use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::*;

/// GET `path` over a fresh connection; (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (code, body.to_string())
}

async fn start_on_any_port(shutdown: &CancellationToken) -> (AgentMetrics, Server) {
    let metrics = AgentMetrics::register();
    let addr = parse_bind_address("127.0.0.1:0").unwrap();
    let server = start(addr, metrics.registry.clone(), shutdown).await.unwrap().expect("a server");
    (metrics, server)
}

#[tokio::test]
async fn serves_healthz_metrics_and_404() {
    let shutdown = CancellationToken::new();
    let (metrics, server) = start_on_any_port(&shutdown).await;
    metrics.node.set_node_name("worker-1");
    let addr = server.local_addr();

    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
    assert_eq!(get(addr, "/livez").await, (200, "ok".to_string()));
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "kubelet_node_name{node=\"worker-1\"} 1",
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubelet_running_pods",
        "kubelet_running_containers{container_state=\"running\"} 0",
        "kubelet_pod_start_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert_eq!(get(addr, "/").await.0, 404);
    assert_eq!(get(addr, "/healthz/extra").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn stops_on_shutdown_and_when_dropped() {
    let shutdown = CancellationToken::new();
    let (_metrics, server) = start_on_any_port(&shutdown).await;
    let addr = server.local_addr();
    shutdown.cancel();
    server.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening after shutdown");

    let shutdown = CancellationToken::new();
    let (_metrics, server) = start_on_any_port(&shutdown).await;
    let addr = server.local_addr();
    drop(server);
    // The task notices the dropped guard asynchronously.
    let closed = async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), closed).await.expect("listener closed after drop");
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_it() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let registry = AgentMetrics::register().registry;
    let error = start(Some(addr), registry, &CancellationToken::new()).await.err().expect("bind fails");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    assert!(error.to_string().contains("--healthz-bind-address"), "{error}");
}

#[test]
fn zero_or_empty_disables() {
    assert_eq!(parse_bind_address("").unwrap(), None);
    assert_eq!(parse_bind_address("0").unwrap(), None);
    assert_eq!(parse_bind_address(DEFAULT_BIND_ADDRESS).unwrap(), Some("127.0.0.1:10248".parse().unwrap()));
    assert!(parse_bind_address("localhost").is_err());
}
