//! kube-proxy's service health server: for each LoadBalancer Service with
//! `externalTrafficPolicy: Local`, an HTTP server on its `healthCheckNodePort` that tells the
//! cloud load-balancer whether this node has local endpoints (200) or not (503), so that it
//! sends traffic only to nodes that keep it. Servers open and close as such Services come
//! and go; a port that cannot be bound is logged and tried again, never fatal.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::table::{HealthChecks, ObjectRef};

/// How long to wait before trying a port that could not be bound again.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// The health servers of the current Services, stopped when dropped.
pub struct HealthServers {
    bind_address: IpAddr,
    retry: Duration,
    runtime: Handle,
    servers: BTreeMap<ObjectRef, Running>,
}

/// One Service's server.
struct Running {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl HealthServers {
    /// Servers listening on `bind_address` (kube-proxy: 0.0.0.0), run on the tokio runtime
    /// this is called from; `None` outside of one.
    pub fn new(bind_address: IpAddr) -> Option<HealthServers> {
        let runtime = Handle::try_current().ok()?;
        Some(HealthServers { bind_address, retry: BIND_RETRY, runtime, servers: BTreeMap::new() })
    }

    /// Serve exactly `checks`: start the servers of new Services (and of those whose port
    /// changed), stop those of Services gone, update the endpoint counts of the others.
    pub fn update(&mut self, checks: &HealthChecks) {
        self.servers.retain(|service, running| {
            let keep = checks.get(service).is_some_and(|check| check.node_port == running.port);
            if !keep {
                tracing::info!(service = %service, port = running.port, "closing the service health server");
                running.stop.cancel();
            }
            keep
        });
        for (service, check) in checks {
            if let Some(running) = self.servers.get(service) {
                running.local_endpoints.store(check.local_endpoints, Ordering::Relaxed);
                continue;
            }
            let running = Running {
                port: check.node_port,
                local_endpoints: Arc::new(AtomicUsize::new(check.local_endpoints)),
                stop: CancellationToken::new(),
            };
            let server = Server {
                address: SocketAddr::new(self.bind_address, check.node_port),
                service: service.clone(),
                local_endpoints: running.local_endpoints.clone(),
            };
            self.runtime.spawn(server.run(running.stop.clone(), self.retry));
            self.servers.insert(service.clone(), running);
        }
    }

    /// The ports served now (or being bound), by Service.
    pub fn ports(&self) -> BTreeMap<ObjectRef, u16> {
        self.servers.iter().map(|(service, running)| (service.clone(), running.port)).collect()
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for running in self.servers.values() {
            running.stop.cancel();
        }
    }
}

/// What one server answers about.
#[derive(Clone)]
struct Server {
    address: SocketAddr,
    service: ObjectRef,
    local_endpoints: Arc<AtomicUsize>,
}

impl Server {
    /// Bind (again every `retry` while the port is taken) and serve until `stop`.
    async fn run(self, stop: CancellationToken, retry: Duration) {
        let Some(listener) = self.bind(&stop, retry).await else {
            return;
        };
        tracing::info!(service = %self.service, address = %self.address, "serving the service health check");
        let (service, address) = (self.service.clone(), self.address);
        let app = Router::new().fallback(answer).with_state(self);
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::warn!(service = %service, %address, %error, "service health server stopped");
        }
    }

    /// The listener, or `None` once stopped. The first failure is a warning, the retries
    /// that fail the same way are not repeated at that level.
    async fn bind(&self, stop: &CancellationToken, retry: Duration) -> Option<TcpListener> {
        let mut failures = 0_u32;
        loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => return Some(listener),
                Err(error) if failures == 0 => tracing::warn!(
                    service = %self.service, address = %self.address, %error, retry_in = ?retry,
                    "cannot listen for the service health check; retrying"
                ),
                Err(error) => {
                    tracing::debug!(service = %self.service, address = %self.address, %error, "still cannot listen")
                }
            }
            failures += 1;
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }
}

/// kube-proxy's answer, to any method and path: 200 when the node has local endpoints,
/// 503 otherwise, with the counts in JSON.
async fn answer(State(server): State<Server>) -> Response {
    let local_endpoints = server.local_endpoints.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "service": {"namespace": server.service.namespace, "name": server.service.name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": true,
    });
    let status = if local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (status, headers, body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HealthCheck;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind").local_addr().expect("addr").port()
    }

    /// The status line of `GET /` on 127.0.0.1:`port`, or `None` when nothing listens.
    fn status_of(port: u16) -> Option<String> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines().next().map(str::to_owned)
    }

    async fn until(mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "not done within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_taken_port_is_retried_until_free() {
        let port = free_port();
        let squatter = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("squat");
        let mut servers = HealthServers::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("runtime");
        servers.retry = Duration::from_millis(50);
        let checks = HealthChecks::from([(
            ObjectRef::service("default", "lb"),
            HealthCheck { node_port: port, local_endpoints: 1 },
        )]);
        servers.update(&checks);
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(squatter);
        until(|| status_of(port).is_some_and(|line| line.contains(" 200 "))).await;

        servers.update(&HealthChecks::new());
        until(|| status_of(port).is_none()).await;
    }
}
