//! Registration as kubelet does it: create the Node; when it already exists, get it and
//! re-assert the default labels and this machine's status. Retries with backoff until it
//! works or the agent shuts down.

use nodelet_runtime::error_chain;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use tokio_util::sync::CancellationToken;

use super::api::{ApiErrorKind, NodeApi};
use super::conditions::NodeReadiness;
use super::config::NodeConfig;
use super::facts::NodeFacts;
use super::object::{desired_status, initial_node, metadata_reconcile_patch, status_changed, status_patch};
use super::{Backoff, NodeError};

/// kubelet's registration backoff: 100ms doubling to 7s.
const REGISTER_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const REGISTER_MAX_BACKOFF: Duration = Duration::from_secs(7);

/// Register until it succeeds; Err(Cancelled) only when `shutdown` fires first.
pub async fn register_with<A: NodeApi>(
    api: &A,
    cfg: &NodeConfig,
    facts: &NodeFacts,
    readiness: &NodeReadiness,
    shutdown: &CancellationToken,
) -> Result<Node, NodeError> {
    let mut backoff = Backoff::new(REGISTER_INITIAL_BACKOFF, REGISTER_MAX_BACKOFF);
    loop {
        match try_register(api, cfg, facts, readiness).await {
            Ok(node) => {
                tracing::info!(node = %cfg.node_name, "successfully registered node");
                return Ok(node);
            }
            Err(error) => tracing::warn!(
                node = %cfg.node_name,
                error = %error_chain(&error),
                "unable to register node with the api server; will retry"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(NodeError::Cancelled),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One registration attempt (kubelet's `tryRegisterWithAPIServer`).
pub async fn try_register<A: NodeApi>(
    api: &A,
    cfg: &NodeConfig,
    facts: &NodeFacts,
    readiness: &NodeReadiness,
) -> Result<Node, NodeError> {
    let name = &cfg.node_name;
    let node = initial_node(cfg, facts, readiness, Utc::now());
    match api.create_node(&node).await {
        Ok(created) => return Ok(created),
        Err(e) if e.kind == ApiErrorKind::AlreadyExists => {}
        Err(source) => return Err(NodeError::api("create node", name, source)),
    }
    let mut existing = api
        .get_node(name, false)
        .await
        .map_err(|source| NodeError::api("get node", name, source))?
        .ok_or_else(|| NodeError::NodeNotFound(name.clone()))?;
    if let Some(patch) = metadata_reconcile_patch(cfg, facts, &existing) {
        tracing::info!(node = %name, "reconciling labels of the existing node");
        existing = api.patch_node(name, &patch).await.map_err(|source| NodeError::api("patch node", name, source))?;
    }
    let current = existing.status.clone().unwrap_or_default();
    let desired: NodeStatus = desired_status(cfg, facts, Some(&current), readiness, Utc::now());
    if status_changed(&current, &desired) {
        existing = api
            .patch_node_status(name, &status_patch(desired))
            .await
            .map_err(|source| NodeError::api("patch node status", name, source))?;
    }
    Ok(existing)
}
