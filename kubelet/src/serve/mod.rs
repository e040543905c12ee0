//! The agent's HTTP endpoint, as kubelet's healthz port and kube-proxy's metrics port:
//! `/healthz` answers "ok" while the agent's loops run, `/metrics` is the Prometheus text of
//! the node, pod and proxy metrics. Plain HTTP, meant for 127.0.0.1 (kubelet's 10248).

mod metrics;
mod routes;

use std::net::{AddrParseError, SocketAddr};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use metrics::AgentMetrics;
pub use routes::router;

/// kubelet's healthz address.
pub const DEFAULT_BIND_ADDRESS: &str = "127.0.0.1:10248";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the healthz and metrics endpoint to {addr} (--healthz-bind-address; \"0\" disables it)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `--healthz-bind-address`: an ip:port, or "" or "0" for no endpoint (as kubelet's
/// `--healthz-port=0`).
pub fn parse_bind_address(text: &str) -> Result<Option<SocketAddr>, AddrParseError> {
    match text.trim() {
        "" | "0" => Ok(None),
        addr => addr.parse().map(Some),
    }
}

/// A running endpoint. It stops on shutdown, and when dropped: the caller drops it when its
/// loops end, so that /healthz does not outlive them.
pub struct Server {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    _stop: DropGuard,
}

impl Server {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop serving and wait until the listener is closed.
    pub async fn stop(self) {
        let Server { task, _stop: stop, .. } = self;
        drop(stop);
        let _ = task.await;
    }
}

/// Bind `addr` and serve `registry` there until `shutdown` (or the returned server is
/// dropped). `None` serves nothing.
pub async fn start(
    addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    shutdown: &CancellationToken,
) -> Result<Option<Server>, ServeError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(%local_addr, "serving /healthz and /metrics");
    let stop = shutdown.child_token();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let served = axum::serve(listener, router(registry)).with_graceful_shutdown(stop.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(%local_addr, %error, "the healthz and metrics endpoint stopped");
            }
        }
    });
    Ok(Some(Server { local_addr, task, _stop: stop.drop_guard() }))
}

#[cfg(test)]
mod tests;
