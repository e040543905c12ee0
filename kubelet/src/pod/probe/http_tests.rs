use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Container;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::pod::probe::spec::{ContainerProbes, Handler};

/// An HTTP server on 127.0.0.1 with one route per case; returns its port.
async fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }))
        .route("/same-host", get(|| async { (StatusCode::FOUND, [(LOCATION, "/ok")]) }))
        .route("/loop", get(|| async { (StatusCode::FOUND, [(LOCATION, "/loop")]) }))
        .route(
            "/other-host",
            get(|State(port): State<u16>| async move {
                (StatusCode::FOUND, [(LOCATION, format!("http://localhost:{port}/fail"))], "moved elsewhere")
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let header =
                    |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let expected = header("user-agent") == "kube-probe/1.32" && header("accept") == "*/*";
                if expected && header("x-probe") == "1" {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        )
        .with_state(port);
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

fn get_path(port: u16, path: &str) -> HttpGet {
    HttpGet { https: false, host: None, port, path: path.to_string(), headers: Vec::new() }
}

async fn run(get: &HttpGet) -> Outcome {
    HttpProber::new().expect("client").probe(get, "127.0.0.1", Duration::from_millis(500)).await
}

#[tokio::test]
async fn status_200_succeeds_and_500_fails() {
    let port = serve().await;
    assert_eq!(run(&get_path(port, "/ok")).await, Outcome::Success);
    assert_eq!(run(&get_path(port, "fail")).await, Outcome::Failure("HTTP probe failed with statuscode: 500".into()));
}

#[tokio::test]
async fn redirects_are_followed_on_the_same_host_only() {
    let port = serve().await;
    assert_eq!(run(&get_path(port, "/same-host")).await, Outcome::Success);
    // localhost is another host name than 127.0.0.1: not followed (it would fail), a warning.
    assert_eq!(
        run(&get_path(port, "/other-host")).await,
        Outcome::Warning("Probe terminated redirects, Response body: moved elsewhere".into())
    );
    let Outcome::Failure(message) = run(&get_path(port, "/loop")).await else { panic!("a redirect loop succeeded") };
    assert!(message.contains("stopped after 10 redirects"), "{message}");
}

#[tokio::test]
async fn a_slow_answer_times_out_and_a_closed_port_fails() {
    let port = serve().await;
    let Outcome::Failure(message) = run(&get_path(port, "/slow")).await else { panic!("a slow answer succeeded") };
    assert_eq!(
        message,
        format!("Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    );
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let Outcome::Failure(message) = run(&get_path(closed, "/")).await else { panic!("a closed port succeeded") };
    assert!(message.starts_with(&format!("Get \"http://127.0.0.1:{closed}/\": ")), "{message}");
}

#[tokio::test]
async fn probe_headers_and_kubelets_defaults_are_sent() {
    let port = serve().await;
    let mut get = get_path(port, "/headers");
    assert_eq!(run(&get).await, Outcome::Failure("HTTP probe failed with statuscode: 400".into()));
    get.headers.push(("X-Probe".into(), "1".into()));
    assert_eq!(run(&get).await, Outcome::Success);
}

#[tokio::test]
async fn a_named_port_resolves_to_the_containers_port() {
    let port = serve().await;
    let container: Container = serde_json::from_value(json!({
        "name": "app",
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/ok"}}
    }))
    .expect("container");
    let spec = ContainerProbes::from_container(&container).readiness.expect("readiness");
    let Handler::Http(get) = spec.handler else { panic!("not an http probe: {:?}", spec.handler) };
    assert_eq!(run(&get).await, Outcome::Success);
}

#[tokio::test]
async fn https_is_probed_without_verifying_the_certificate() {
    let port = serve_tls().await;
    let mut get = get_path(port, "/");
    get.https = true;
    assert_eq!(run(&get).await, Outcome::Success);
}

/// A TLS server with a self-signed certificate for another name, answering 200 to anything.
async fn serve_tls() -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["pod.invalid".to_string()]).expect("certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(stream).await else { continue };
            let mut request = [0u8; 4096];
            let _ = tls.read(&mut request).await;
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            let _ = tls.shutdown().await;
        }
    });
    port
}
