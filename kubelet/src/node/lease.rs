//! The node Lease heartbeat (kubelet's nodelease controller): a Lease named after the node in
//! kube-node-lease, renewed every renew interval, owned by the Node.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use tokio_util::sync::CancellationToken;

use super::api::{NodeApi, NODE_LEASE_NAMESPACE};
use super::metrics::{HeartbeatResult, NodeMetrics};
use super::{Backoff, NodeError};
use nodelet_runtime::error_chain;

/// kubelet's lease retry backoff: 200ms doubling to 7s.
pub const LEASE_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const LEASE_MAX_BACKOFF: Duration = Duration::from_secs(7);

/// State of the lease heartbeat between renewals.
#[derive(Clone, Debug)]
pub struct LeaseHeartbeat {
    node_name: String,
    duration_seconds: i32,
    node_uid: Option<String>,
    /// The lease as last written; renewing from it saves a GET.
    latest: Option<Lease>,
}

impl LeaseHeartbeat {
    /// `node_uid` (from registration) becomes the lease's owner reference, so the lease is
    /// garbage collected with the Node.
    pub fn new(node_name: &str, duration_seconds: i32, node_uid: Option<String>) -> Self {
        LeaseHeartbeat { node_name: node_name.to_string(), duration_seconds, node_uid, latest: None }
    }

    /// The lease as last written by `renew`.
    pub fn latest(&self) -> Option<&Lease> {
        self.latest.as_ref()
    }

    /// One renewal: update from the last written lease; failing that (or on a first run), get
    /// the lease, create it when missing, else update it with the resourceVersion just read.
    pub async fn renew<A: NodeApi>(&mut self, api: &A, now: DateTime<Utc>) -> Result<(), NodeError> {
        if let Some(latest) = self.latest.take() {
            match api.replace_lease(&self.renewed(latest, now)).await {
                Ok(lease) => {
                    self.latest = Some(lease);
                    return Ok(());
                }
                Err(error) => tracing::debug!(
                    node = %self.node_name,
                    %error,
                    "failed to update lease using latest lease, falling back to ensure lease"
                ),
            }
        }
        let name = &self.node_name;
        let base = match api.get_lease(name).await.map_err(|source| NodeError::api("get lease", name, source))? {
            Some(existing) => existing,
            None => {
                let fresh = self.renewed(self.new_lease(), now);
                match api.create_lease(&fresh).await {
                    Ok(created) => {
                        self.latest = Some(created);
                        return Ok(());
                    }
                    // Includes AlreadyExists (created between our get and create): the next
                    // round finds it and updates it.
                    Err(source) => return Err(NodeError::api("create lease", name, source)),
                }
            }
        };
        let updated = api
            .replace_lease(&self.renewed(base, now))
            .await
            .map_err(|source| NodeError::api("update lease", name, source))?;
        self.latest = Some(updated);
        Ok(())
    }

    fn new_lease(&self) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
                ..ObjectMeta::default()
            },
            spec: None,
        }
    }

    /// `base` with this node as holder, the configured duration, renewTime `now`, and the
    /// Node as owner when the lease has no owner yet.
    fn renewed(&self, mut base: Lease, now: DateTime<Utc>) -> Lease {
        let spec = base.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node_name.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        let has_owner = base.metadata.owner_references.as_ref().is_some_and(|refs| !refs.is_empty());
        if let (false, Some(uid)) = (has_owner, &self.node_uid) {
            base.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: self.node_name.clone(),
                uid: uid.clone(),
                ..OwnerReference::default()
            }]);
        }
        base
    }
}

/// Renew every `renew_interval`; after a failure retry sooner, with kubelet's backoff.
pub async fn run_lease_loop<A: NodeApi>(
    api: &A,
    mut heartbeat: LeaseHeartbeat,
    renew_interval: Duration,
    metrics: &NodeMetrics,
    shutdown: &CancellationToken,
) {
    let mut backoff = Backoff::new(LEASE_INITIAL_BACKOFF, LEASE_MAX_BACKOFF);
    loop {
        let delay = match heartbeat.renew(api, Utc::now()).await {
            Ok(()) => {
                metrics.lease_renewal(HeartbeatResult::Updated);
                backoff.reset();
                renew_interval
            }
            Err(error) => {
                metrics.lease_renewal(HeartbeatResult::Error);
                let delay = backoff.next_delay();
                tracing::warn!(
                    node = %heartbeat.node_name,
                    error = %error_chain(&error),
                    retry_in = ?delay,
                    "failed to renew node lease"
                );
                delay
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
