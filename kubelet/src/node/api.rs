//! The handful of API calls the node part makes, behind a trait so the loops can be tested
//! against an in-memory fake; `KubeNodeApi` is the real one over `kube::Api`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{GetParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use thiserror::Error;

/// kubelet's namespace for node heartbeats.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the loops need to tell apart in an API failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    NotFound,
    AlreadyExists,
    Conflict,
    UnsupportedMediaType,
    Other,
}

#[derive(Debug, Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into() }
    }
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        let kind = match &error {
            kube::Error::Api(response) => match (response.code, response.reason.as_str()) {
                (404, _) => ApiErrorKind::NotFound,
                (409, "AlreadyExists") => ApiErrorKind::AlreadyExists,
                (409, _) => ApiErrorKind::Conflict,
                (415, _) => ApiErrorKind::UnsupportedMediaType,
                _ => ApiErrorKind::Other,
            },
            _ => ApiErrorKind::Other,
        };
        ApiError { kind, message: error.to_string() }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The calls kubelet's node status, registration and lease controllers make.
pub trait NodeApi: Send + Sync {
    /// GET the Node; `from_cache` asks for resourceVersion "0" (served from the API server's
    /// watch cache), as kubelet does on the first try of each status update.
    fn get_node(&self, name: &str, from_cache: bool) -> impl Future<Output = ApiResult<Option<Node>>> + Send;
    fn create_node(&self, node: &Node) -> impl Future<Output = ApiResult<Node>> + Send;
    /// Patch of the Node object itself (metadata: labels, annotations).
    fn patch_node(&self, name: &str, patch: &Node) -> impl Future<Output = ApiResult<Node>> + Send;
    /// Patch of `nodes/<name>/status`.
    fn patch_node_status(&self, name: &str, patch: &Node) -> impl Future<Output = ApiResult<Node>> + Send;
    fn get_lease(&self, name: &str) -> impl Future<Output = ApiResult<Option<Lease>>> + Send;
    fn create_lease(&self, lease: &Lease) -> impl Future<Output = ApiResult<Lease>> + Send;
    /// PUT with the lease's resourceVersion: a stale one fails with Conflict.
    fn replace_lease(&self, lease: &Lease) -> impl Future<Output = ApiResult<Lease>> + Send;
}

/// `NodeApi` over a kube client. Patches are strategic merge patches, as kubelet sends; a
/// server that answers 415 to those gets JSON merge patches from then on.
#[derive(Clone)]
pub struct KubeNodeApi {
    nodes: Api<Node>,
    leases: Api<Lease>,
    strategic_unsupported: Arc<AtomicBool>,
}

impl KubeNodeApi {
    pub fn new(client: Client) -> Self {
        KubeNodeApi {
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client, NODE_LEASE_NAMESPACE),
            strategic_unsupported: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn send_patch(&self, name: &str, body: &Patch<&Node>, status: bool) -> kube::Result<Node> {
        let params = PatchParams::default();
        if status {
            self.nodes.patch_status(name, &params, body).await
        } else {
            self.nodes.patch(name, &params, body).await
        }
    }

    async fn patch_with_fallback(&self, name: &str, patch: &Node, status: bool) -> ApiResult<Node> {
        if !self.strategic_unsupported.load(Ordering::Relaxed) {
            match self.send_patch(name, &Patch::Strategic(patch), status).await {
                Err(kube::Error::Api(response)) if response.code == 415 => {
                    tracing::info!("api server refuses strategic merge patches; using merge patches");
                    self.strategic_unsupported.store(true, Ordering::Relaxed);
                }
                other => return other.map_err(ApiError::from),
            }
        }
        self.send_patch(name, &Patch::Merge(patch), status).await.map_err(ApiError::from)
    }
}

impl NodeApi for KubeNodeApi {
    async fn get_node(&self, name: &str, from_cache: bool) -> ApiResult<Option<Node>> {
        let params = if from_cache { GetParams::any() } else { GetParams::default() };
        match self.nodes.get_with(name, &params).await {
            Ok(node) => Ok(Some(node)),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_node(&self, node: &Node) -> ApiResult<Node> {
        Ok(self.nodes.create(&PostParams::default(), node).await?)
    }

    async fn patch_node(&self, name: &str, patch: &Node) -> ApiResult<Node> {
        self.patch_with_fallback(name, patch, false).await
    }

    async fn patch_node_status(&self, name: &str, patch: &Node) -> ApiResult<Node> {
        self.patch_with_fallback(name, patch, true).await
    }

    async fn get_lease(&self, name: &str) -> ApiResult<Option<Lease>> {
        Ok(self.leases.get_opt(name).await?)
    }

    async fn create_lease(&self, lease: &Lease) -> ApiResult<Lease> {
        Ok(self.leases.create(&PostParams::default(), lease).await?)
    }

    async fn replace_lease(&self, lease: &Lease) -> ApiResult<Lease> {
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        Ok(self.leases.replace(name, &PostParams::default(), lease).await?)
    }
}
