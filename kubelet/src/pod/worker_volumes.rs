//! The worker's volume and configuration steps: setting up and resyncing the pod's volumes
//! (FailedMount events, retries with kubelet's mount backoff), and a container's
//! configuration before it is created: its environment from every source and its subPath
//! mounts (failures are CreateContainerConfigError, as kubelet reports them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::time::Instant;

use super::{pod_key, Worker};
use crate::events::{pod_reference, EventType};
use crate::pod::downward::PodFacts;
use crate::pod::env::{resolve_env, EnvInput};
use crate::pod::expand::expand;
use crate::pod::layout::pod_dir;
use crate::pod::model::Waiting;
use crate::pod::runtime_port::error_chain;
use crate::pod::translate::has_sub_path;
use crate::pod::volumes::subpath::{prepare, SubPathMount};
use crate::pod::volumes::{
    has_refreshed_volumes, host_volumes, mount_retry_delay, set_up_volumes, HostVolumes, VolumeContext,
};

/// What a container needs beyond the pod spec to be translated.
pub(super) struct ContainerConfig {
    pub env: Vec<(String, String)>,
    pub volumes: HostVolumes,
    pub subpaths: BTreeMap<usize, PathBuf>,
}

/// A volumeMount with a subPath, resolved against its volume.
struct WantedSubPath {
    index: usize,
    volume: String,
    volume_path: PathBuf,
    sub_path: String,
}

/// Bind each subPath in place (blocking); the first failure is the container's
/// CreateContainerConfigError.
fn prepare_subpaths(
    pod_dir: &Path,
    container: &str,
    wanted: Vec<WantedSubPath>,
) -> Result<BTreeMap<usize, PathBuf>, Waiting> {
    let mut subpaths = BTreeMap::new();
    for want in wanted {
        let prepared = prepare(&SubPathMount {
            pod_dir,
            volume_name: &want.volume,
            volume_path: &want.volume_path,
            container,
            index: want.index,
            sub_path: &want.sub_path,
        })
        .map_err(|e| {
            config_error(format!(
                "failed to prepare subPath for volumeMount \"{}\" of container \"{container}\": {}",
                want.volume,
                error_chain(&e)
            ))
        })?;
        subpaths.insert(want.index, prepared);
    }
    Ok(subpaths)
}

/// The parts of a pod that can change while it runs and that volumes show.
fn downward_inputs(pod: &Pod) -> String {
    serde_json::json!([pod.metadata.labels, pod.metadata.annotations]).to_string()
}

fn config_error(message: String) -> Waiting {
    Waiting { reason: "CreateContainerConfigError".to_string(), message }
}

impl Worker {
    fn pod_facts(&self) -> PodFacts {
        PodFacts {
            node_name: self.ctx.cfg.node_name.clone(),
            host_ip: self.ctx.cfg.host_ip.clone(),
            pod_ip: self.memory.pod_ip.map(|ip| ip.to_string()),
        }
    }

    /// Set up every volume (`resync`: rewrite them while the pod runs). A failure is a
    /// FailedMount event; the first set-up is then retried with backoff, while a failed
    /// resync keeps the volumes as they were until the next one.
    pub(super) async fn set_up_volumes(&mut self, pod: &Pod, resync: bool) {
        let facts = self.pod_facts();
        let cfg = self.ctx.cfg.clone();
        let allocatable = cfg.node_allocatable();
        let ctx = VolumeContext {
            root_dir: &cfg.root_dir,
            pod,
            objects: self.ctx.objects.as_ref(),
            facts: &facts,
            allocatable: &allocatable,
            now: Utc::now(),
        };
        let failures = set_up_volumes(&ctx).await;
        let now = Instant::now();
        self.volumes_synced_meta = Some(downward_inputs(pod));
        self.memory.volume_resync_at = has_refreshed_volumes(pod).then(|| now + cfg.volume_resync);
        for failure in &failures {
            let message =
                format!("MountVolume.SetUp failed for volume \"{}\" : {}", failure.volume, error_chain(&failure.error));
            tracing::warn!(pod = %pod_key(pod), "{message}");
            self.ctx.events.record(pod_reference(pod, None), EventType::Warning, "FailedMount", message);
        }
        if resync {
            return;
        }
        if failures.is_empty() {
            self.memory.volumes_ready = true;
            self.memory.volume_error_streak = 0;
            self.memory.volume_retry_at = None;
        } else {
            self.memory.volume_error_streak += 1;
            self.memory.volume_retry_at = Some(now + mount_retry_delay(self.memory.volume_error_streak));
            self.memory.volume_resync_at = None;
        }
    }

    /// New labels or annotations refresh the volumes at once (downwardAPI files show them),
    /// as kubelet remounts on a pod update.
    pub(super) fn note_pod_update(&mut self, pod: &Pod) {
        if self.memory.volumes_ready
            && self.memory.volume_resync_at.is_some()
            && self.volumes_synced_meta.as_ref() != Some(&downward_inputs(pod))
        {
            self.memory.volume_resync_at = Some(Instant::now());
        }
    }

    /// The container's environment and subPath mounts. Invalid envFrom keys are reported with
    /// an InvalidEnvironmentVariableNames event.
    pub(super) async fn container_config(&self, pod: &Pod, container: &Container) -> Result<ContainerConfig, Waiting> {
        let facts = self.pod_facts();
        let allocatable = self.ctx.cfg.node_allocatable();
        let input = EnvInput { pod, container, facts: &facts, allocatable: &allocatable };
        let env = resolve_env(&input, self.ctx.objects.as_ref()).await.map_err(|e| config_error(error_chain(&e)))?;
        for skipped in &env.skipped {
            self.ctx.events.record(
                pod_reference(pod, Some(&container.name)),
                EventType::Warning,
                "InvalidEnvironmentVariableNames",
                skipped.message(),
            );
        }
        let root = &self.ctx.cfg.root_dir;
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let volumes = host_volumes(root, pod);
        let vars: HashMap<String, String> = env.as_map();
        let mut wanted = Vec::new();
        for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
            if !has_sub_path(mount) {
                continue;
            }
            let Some(volume) = volumes.get(&mount.name) else {
                // translate reports the unknown volume.
                continue;
            };
            let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                Some(expr) => expand(expr, &vars),
                None => mount.sub_path.clone().unwrap_or_default(),
            };
            wanted.push(WantedSubPath {
                index,
                volume: mount.name.clone(),
                volume_path: volume.path.clone(),
                sub_path,
            });
        }
        let subpaths = if wanted.is_empty() {
            BTreeMap::new()
        } else {
            let pod_dir = pod_dir(root, uid);
            let name = container.name.clone();
            // Path resolution, mkdirat, mountinfo and mount(2) block: off the async threads.
            let prepared = tokio::task::spawn_blocking(move || prepare_subpaths(&pod_dir, &name, wanted)).await;
            match prepared {
                Ok(result) => result?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(config_error(format!("subPath preparation was interrupted: {e}"))),
            }
        };
        Ok(ContainerConfig { env: env.vars, volumes, subpaths })
    }
}
