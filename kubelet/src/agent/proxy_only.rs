//! `nodelet proxy`: the Service proxy alone, as kube-proxy runs beside a kubelet. It serves
//! kube-proxy's healthz port (/healthz, /livez, /metrics with the proxy's metrics only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::{client_from_kubeconfig, AgentError};
use crate::serve;

/// kube-proxy's --healthz-bind-address.
pub const DEFAULT_PROXY_BIND_ADDRESS: &str = "0.0.0.0:10256";

#[derive(Clone, Debug)]
pub struct ProxyOnlyConfig {
    pub kubeconfig: PathBuf,
    pub proxy: nodelet_proxy::ProxyConfig,
    /// Where /healthz, /livez and /metrics are served; `None` = not at all.
    pub healthz_bind_address: Option<SocketAddr>,
}

/// Run the proxy until `shutdown`. Unlike in the agent, a datapath that cannot be set up is
/// fatal here: the proxy is all this process does.
pub async fn run_proxy_only(cfg: ProxyOnlyConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let client = client_from_kubeconfig(&cfg.kubeconfig).await?;
    let mut registry = Registry::default();
    nodelet_proxy::register_metrics(&mut registry);
    let endpoint = serve::start(cfg.healthz_bind_address, Arc::new(registry), &shutdown).await?;
    let result = nodelet_proxy::run(client, cfg.proxy, shutdown).await;
    // /healthz must not outlive the proxy.
    drop(endpoint);
    result.map_err(AgentError::Proxy)
}
