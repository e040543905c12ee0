//! The real [`PodRuntime`]: nodelet-runtime's image store, container monitor and pod network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use nodelet_runtime::exec::{self, ExecHelper};
use nodelet_runtime::image::{DockerConfig, Image, ImageStore, NoProgress};
use nodelet_runtime::monitor::{ContainerState, ContainerStatus, Runtime, RuntimeError};
use nodelet_runtime::network::{PodNetwork, SandboxNetwork};

use super::container_cache::{keep_current, ContainerCache};
use super::runtime_port::{ContainerInfo, ExecResult, ImageInfo, PodRuntime, PortError, RunState, SandboxInfo};

pub struct NodeRuntime {
    images: Arc<ImageStore>,
    monitor: Runtime,
    /// `nodelet exec-helper`: joins a container's namespaces for exec (never this process).
    exec_helper: ExecHelper,
    network: Arc<PodNetwork>,
    containers: Arc<ContainerCache>,
    watch: AbortHandle,
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl NodeRuntime {
    /// Starts watching the monitor's containers (call within a tokio runtime).
    pub fn new(images: Arc<ImageStore>, monitor: Runtime, network: Arc<PodNetwork>) -> NodeRuntime {
        let containers = ContainerCache::new();
        let watch = tokio::spawn(keep_current(containers.clone(), monitor.clone())).abort_handle();
        NodeRuntime { images, monitor, network, containers, watch, exec_helper: ExecHelper::this_binary() }
    }

    /// After a change through the monitor: wait until the watch shows it, so the next read
    /// sees what was just done.
    async fn see_own_change(&self) {
        self.containers.caught_up(self.monitor.answered_seq()).await;
    }

    /// Run a blocking image-store call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        subject: String,
        f: impl FnOnce(&ImageStore) -> Result<T, nodelet_runtime::image::ImageError> + Send + 'static,
    ) -> Result<T, PortError> {
        let images = self.images.clone();
        let subject_for_error = subject.clone();
        tokio::task::spawn_blocking(move || f(&images))
            .await
            .map_err(|e| PortError::runtime(operation, subject_for_error, e))?
            .map_err(|e| PortError::runtime(operation, subject, e))
    }
}

fn sandbox_info(sandbox: SandboxNetwork) -> SandboxInfo {
    SandboxInfo { id: sandbox.id, netns_path: sandbox.netns_path, ip: sandbox.ip }
}

fn image_info(image: Image) -> ImageInfo {
    ImageInfo { reference: image.reference, image_id: image.repo_digest, config: image.config, size: image.size }
}

fn container_info(state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: state.id,
        state: match state.status {
            ContainerStatus::Creating | ContainerStatus::Created => RunState::Created,
            ContainerStatus::Running => RunState::Running,
            ContainerStatus::Stopped => RunState::Stopped,
        },
        created_at: state.created_at,
        started_at: state.started_at,
        finished_at: state.finished_at,
        exit_code: state.exit_code,
        oom_killed: state.oom_killed,
        annotations: state.annotations,
    }
}

#[async_trait::async_trait]
impl PodRuntime for NodeRuntime {
    async fn setup_sandbox(&self, id: &str) -> Result<SandboxInfo, PortError> {
        self.network.setup(id).await.map(sandbox_info).map_err(|e| PortError::runtime("set up sandbox", id, e))
    }

    async fn teardown_sandbox(&self, id: &str) -> Result<(), PortError> {
        self.network.teardown(id).await.map_err(|e| PortError::runtime("tear down sandbox", id, e))
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, PortError> {
        self.network
            .list()
            .map(|list| list.into_iter().map(sandbox_info).collect())
            .map_err(|e| PortError::runtime("list sandboxes", "", e))
    }

    async fn local_image(&self, reference: &str) -> Result<Option<ImageInfo>, PortError> {
        let owned = reference.to_string();
        self.blocking("look up image", reference.to_string(), move |store| store.get(&owned))
            .await
            .map(|found| found.map(image_info))
    }

    async fn pull_image(&self, reference: &str, secrets: &[DockerConfig]) -> Result<ImageInfo, PortError> {
        self.images
            .pull_with_secrets(reference, &NoProgress, secrets)
            .await
            .map(image_info)
            .map_err(|e| PortError::runtime("pull image", reference, e))
    }

    async fn mount_rootfs(&self, image: &ImageInfo, container_dir: &Path) -> Result<PathBuf, PortError> {
        let reference = image.reference.clone();
        let dir = container_dir.to_path_buf();
        let mounted = self
            .blocking("mount rootfs", container_dir.display().to_string(), move |store| {
                match store.get(&reference)? {
                    Some(image) => store.mount_rootfs(&image, &dir).map(Some),
                    None => Ok(None),
                }
            })
            .await?;
        mounted.ok_or_else(|| {
            PortError::runtime(
                "mount rootfs",
                container_dir.display().to_string(),
                format!("image {} is no longer in the store", image.reference),
            )
        })
    }

    async fn unmount_rootfs(&self, container_dir: &Path) -> Result<(), PortError> {
        let dir = container_dir.to_path_buf();
        self.blocking("unmount rootfs", container_dir.display().to_string(), move |store| store.unmount_rootfs(&dir))
            .await
    }

    async fn create_container(&self, id: &str, bundle: &Path, log_path: &Path) -> Result<ContainerInfo, PortError> {
        let created = self.monitor.create(id, bundle, log_path).await;
        self.see_own_change().await;
        created.map(container_info).map_err(|e| PortError::runtime("create container", id, e))
    }

    async fn start_container(&self, id: &str) -> Result<(), PortError> {
        let started = self.monitor.start(id).await;
        self.see_own_change().await;
        started.map_err(|e| PortError::runtime("start container", id, e))
    }

    async fn container_state(&self, id: &str) -> Result<Option<ContainerInfo>, PortError> {
        match self.monitor.state(id).await {
            Ok(state) => Ok(Some(container_info(state))),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(PortError::runtime("container state", id, e)),
        }
    }

    async fn kill_container(&self, id: &str, signal: i32) -> Result<(), PortError> {
        match self.monitor.kill(id, signal).await {
            Err(RuntimeError::NotFound { .. }) => Err(PortError::ContainerNotFound { id: id.to_string() }),
            other => other.map_err(|e| PortError::runtime("signal container", id, e)),
        }
    }

    async fn delete_container(&self, id: &str, force: bool) -> Result<(), PortError> {
        let deleted = self.monitor.delete(id, force).await;
        self.see_own_change().await;
        match deleted {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
            Err(e) => Err(PortError::runtime("delete container", id, e)),
        }
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, PortError> {
        self.monitor
            .list()
            .await
            .map(|list| list.into_iter().map(container_info).collect())
            .map_err(|e| PortError::runtime("list containers", "", e))
    }

    async fn exec_sync(&self, container_id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult, PortError> {
        let output = exec::exec_sync(&self.monitor, &self.exec_helper, container_id, cmd, timeout)
            .await
            .map_err(|e| PortError::runtime("exec in container", container_id, e))?;
        let mut stderr = output.stderr;
        if output.timed_out {
            stderr.extend_from_slice(format!("command timed out after {}s", timeout.as_secs_f64()).as_bytes());
        }
        Ok(ExecResult { exit_code: output.exit_code, stdout: output.stdout, stderr })
    }

    async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerInfo>, PortError> {
        match self.containers.pod(pod_uid) {
            Some(states) => Ok(states.into_iter().map(container_info).collect()),
            None => self.list_containers().await,
        }
    }

    fn container_changes(&self, pod_uid: &str) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.containers.subscribe(pod_uid))
    }
}
