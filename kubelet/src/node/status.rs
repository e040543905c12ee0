//! Node status heartbeat (kubelet's `updateNodeStatus`): every update interval compute the
//! status, and patch `nodes/<name>/status` when it changed or a report is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::NodeApi;
use super::conditions::NodeReadiness;
use super::config::NodeConfig;
use super::facts::NodeFacts;
use super::images::{status_images, NodeImage};
use super::metrics::{HeartbeatResult, NodeMetrics};
use super::object::{desired_status, status_changed, status_patch};
use super::NodeError;
use nodelet_runtime::error_chain;

/// kubelet's `nodeStatusUpdateRetry`: attempts per update before waiting for the next tick.
const STATUS_UPDATE_RETRIES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusSync {
    Patched,
    Unchanged,
}

pub struct StatusReporter {
    cfg: NodeConfig,
    facts: NodeFacts,
    /// The node's images, kept current by whoever owns the image store.
    images: Option<watch::Receiver<Vec<NodeImage>>>,
    last_report: Option<Instant>,
}

impl StatusReporter {
    pub fn new(cfg: NodeConfig, facts: NodeFacts) -> Self {
        StatusReporter { cfg, facts, images: None, last_report: None }
    }

    /// Report `status.images` from `images` too.
    pub fn with_images(mut self, images: watch::Receiver<Vec<NodeImage>>) -> Self {
        self.images = Some(images);
        self
    }

    /// Replace the machine facts (they are re-read rarely; capacity rarely changes).
    pub fn set_facts(&mut self, facts: NodeFacts) {
        self.facts = facts;
    }

    /// One status update, retried as kubelet does: the first read may come from the API
    /// server's cache, the retries read fresh.
    pub async fn sync<A: NodeApi>(
        &mut self,
        api: &A,
        readiness: &NodeReadiness,
        now: DateTime<Utc>,
    ) -> Result<StatusSync, NodeError> {
        let mut last_error = None;
        for attempt in 0..STATUS_UPDATE_RETRIES {
            match self.try_sync(api, readiness, now, attempt == 0).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => {
                    tracing::debug!(attempt, error = %error_chain(&error), "node status update failed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| NodeError::NodeNotFound(self.cfg.node_name.clone())))
    }

    fn report_due(&self) -> bool {
        self.last_report.is_none_or(|at| at.elapsed() >= self.cfg.node_status_report_frequency)
    }

    async fn try_sync<A: NodeApi>(
        &mut self,
        api: &A,
        readiness: &NodeReadiness,
        now: DateTime<Utc>,
        from_cache: bool,
    ) -> Result<StatusSync, NodeError> {
        let name = &self.cfg.node_name;
        let node = api
            .get_node(name, from_cache)
            .await
            .map_err(|source| NodeError::api("get node", name, source))?
            .ok_or_else(|| NodeError::NodeNotFound(name.clone()))?;
        let current = node.status.unwrap_or_default();
        let mut desired = desired_status(&self.cfg, &self.facts, Some(&current), readiness, now);
        if let Some(images) = &self.images {
            desired.images = Some(status_images(images.borrow().clone()));
        }
        if !self.report_due() && !status_changed(&current, &desired) {
            return Ok(StatusSync::Unchanged);
        }
        api.patch_node_status(name, &status_patch(desired))
            .await
            .map_err(|source| NodeError::api("patch node status", name, source))?;
        self.last_report = Some(Instant::now());
        Ok(StatusSync::Patched)
    }
}

/// Sync every `update_frequency`, and at once when readiness changes.
pub async fn run_status_loop<A: NodeApi>(
    api: &A,
    mut reporter: StatusReporter,
    update_frequency: Duration,
    mut readiness: watch::Receiver<NodeReadiness>,
    metrics: &NodeMetrics,
    shutdown: &CancellationToken,
) {
    let mut ticker = tokio::time::interval(update_frequency);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut readiness_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            changed = readiness.changed(), if readiness_open => {
                // A dropped sender leaves the last value in force.
                readiness_open = changed.is_ok();
            }
        }
        let current = readiness.borrow_and_update().clone();
        match reporter.sync(api, &current, Utc::now()).await {
            Ok(StatusSync::Patched) => metrics.status_update(HeartbeatResult::Updated),
            Ok(StatusSync::Unchanged) => metrics.status_update(HeartbeatResult::Unchanged),
            Err(error) => {
                metrics.status_update(HeartbeatResult::Error);
                tracing::warn!(
                    node = %reporter.cfg.node_name,
                    error = %error_chain(&error),
                    "unable to update node status"
                );
            }
        }
    }
}
