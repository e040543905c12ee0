//! Everything the pod side needs from the node, as one async trait: sandbox networks,
//! images, root filesystems and containers. The real implementation is [`super::node_runtime`]
//! over nodelet-runtime; tests use an in-memory fake.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nodelet_runtime::image::DockerConfig;
use oci_spec::image::ImageConfiguration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("container {id} not found")]
    ContainerNotFound { id: String },
    #[error("{operation} is not supported by this runtime")]
    Unsupported { operation: &'static str },
    #[error("{operation} {subject}")]
    Runtime {
        operation: &'static str,
        subject: String,
        #[source]
        source: BoxError,
    },
}

impl PortError {
    pub fn runtime(operation: &'static str, subject: impl Into<String>, source: impl Into<BoxError>) -> PortError {
        PortError::Runtime { operation, subject: subject.into(), source: source.into() }
    }
}

pub use nodelet_runtime::error_chain;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    /// Normalized reference, e.g. "docker.io/library/busybox:latest".
    pub reference: String,
    /// "<repository>@sha256:...": the Kubernetes `imageID`.
    pub image_id: String,
    pub config: ImageConfiguration,
    /// Bytes (the compressed layers), for the Pulled event.
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Created (or still being created), its process not yet started.
    Created,
    Running,
    Stopped,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub annotations: BTreeMap<String, String>,
}

/// How a command run in a container ended (CRI's ExecSyncResponse).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's imagePullPolicy, or Kubernetes' default for its image: Always for
    /// ":latest" or no tag (and no digest), IfNotPresent otherwise.
    pub fn for_container(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => {
                if image.contains('@') {
                    return PullPolicy::IfNotPresent;
                }
                let last_segment = image.rsplit('/').next().unwrap_or(image);
                match last_segment.split_once(':') {
                    Some((_, "latest")) | None => PullPolicy::Always,
                    Some(_) => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync {
    /// Create (or find) the pod's network namespace with its address.
    async fn setup_sandbox(&self, id: &str) -> Result<SandboxInfo, PortError>;
    /// Release the sandbox. Idempotent.
    async fn teardown_sandbox(&self, id: &str) -> Result<(), PortError>;
    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, PortError>;

    /// A locally present image, by reference.
    async fn local_image(&self, reference: &str) -> Result<Option<ImageInfo>, PortError>;
    /// Pull with the pod's pull secrets (tried before the node's credentials).
    async fn pull_image(&self, reference: &str, secrets: &[DockerConfig]) -> Result<ImageInfo, PortError>;

    /// Mount the image's rootfs at `<container_dir>/rootfs`; returns that path. Idempotent.
    async fn mount_rootfs(&self, image: &ImageInfo, container_dir: &Path) -> Result<PathBuf, PortError>;
    /// Idempotent.
    async fn unmount_rootfs(&self, container_dir: &Path) -> Result<(), PortError>;

    /// Create the container from `<bundle>/config.json` and start its process.
    async fn create_container(&self, id: &str, bundle: &Path, log_path: &Path) -> Result<ContainerInfo, PortError>;
    async fn start_container(&self, id: &str) -> Result<(), PortError>;
    /// None when the runtime does not know the id.
    async fn container_state(&self, id: &str) -> Result<Option<ContainerInfo>, PortError>;
    async fn kill_container(&self, id: &str, signal: i32) -> Result<(), PortError>;
    /// Remove a container; `force` kills it first when running. Unknown ids are Ok.
    async fn delete_container(&self, id: &str, force: bool) -> Result<(), PortError>;
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, PortError>;
    /// The containers of one pod (by the pod-uid annotation); may include others.
    async fn pod_containers(&self, _pod_uid: &str) -> Result<Vec<ContainerInfo>, PortError> {
        self.list_containers().await
    }
    /// Fires when one of the pod's containers changes. None when the runtime cannot tell:
    /// the worker then polls.
    fn container_changes(&self, _pod_uid: &str) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
    /// Run `cmd` in the running container `container_id` and wait for it to end, killing it
    /// after `timeout` (CRI's ExecSync; exec probes use it). Runtimes without exec say so.
    async fn exec_sync(
        &self,
        _container_id: &str,
        _cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, PortError> {
        Err(PortError::Unsupported { operation: "exec in a container" })
    }
}

#[cfg(test)]
mod tests {
    use super::PullPolicy;

    #[test]
    fn default_pull_policy_follows_the_tag() {
        let default = |image| PullPolicy::for_container(None, image);
        assert_eq!(default("busybox"), PullPolicy::Always);
        assert_eq!(default("busybox:latest"), PullPolicy::Always);
        assert_eq!(default("127.0.0.1:5000/web"), PullPolicy::Always);
        assert_eq!(default("127.0.0.1:5000/web:1"), PullPolicy::IfNotPresent);
        assert_eq!(default("busybox@sha256:abc"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::for_container(Some("Never"), "busybox"), PullPolicy::Never);
    }
}
