//! A pod's volumes on the node, laid out as kubelet lays them out:
//! `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`. emptyDir (a directory, or a
//! tmpfs for `medium: Memory`), hostPath (the host's path, type-checked), configMap and
//! downwardAPI (files on disk), secret and projected (files on a tmpfs); the files of the last
//! four are written with the [`atomic_writer`] and rewritten on every resync, so updates to
//! the objects reach running containers. Set up before the first container is created, and
//! again (reusing what exists) after an agent restart; torn down with the pod.

pub mod atomic_writer;
pub mod host_path;
pub mod mount_points;
pub mod one_filesystem;
pub mod payload;
mod set_up;
pub mod subpath;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, Pod, ProjectedVolumeSource, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use self::atomic_writer::AtomicWriteError;
use self::host_path::HostPathError;
use self::mount_points::{mount_points_below, unmount_all_below, MountPointError};
use self::payload::PayloadError;
use super::downward::{NodeAllocatable, PodFacts};
use super::layout::pod_dir;
use super::quantity::QuantityError;
use super::referenced_objects::{ObjectError, PodObjects};
use super::service_account_token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume type {0} is not supported by nodelet")]
    Unsupported(String),
    #[error("emptyDir medium {0:?} is not supported by nodelet")]
    UnsupportedMedium(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("emptyDir sizeLimit")]
    SizeLimit(#[source] QuantityError),
    #[error("create volume directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("give volume {} to the pod's fsGroup", path.display())]
    Ownership {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts remain below {} after unmounting: {remaining:?}", dir.display())]
    MountsRemain { dir: PathBuf, remaining: Vec<PathBuf> },
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    #[error(transparent)]
    Mount(#[from] MountPointError),
    #[error("volume set-up was interrupted by the agent's shutdown")]
    Interrupted,
}

/// Where a volume is on the host, and whether containers always get it read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVolume {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The pod's volumes by name.
pub type HostVolumes = BTreeMap<String, HostVolume>;

/// A volume that could not be set up.
#[derive(Debug)]
pub struct VolumeFailure {
    pub volume: String,
    pub error: VolumeError,
}

/// The kinds of volume nodelet sets up.
enum Source<'a> {
    EmptyDir { memory: bool, medium: String, size_limit: Option<&'a Quantity> },
    HostPath { path: &'a str, type_: &'a str },
    ConfigMap(&'a ConfigMapVolumeSource),
    Secret(&'a SecretVolumeSource),
    DownwardApi(&'a DownwardAPIVolumeSource),
    Projected(&'a ProjectedVolumeSource),
    Unsupported(String),
}

fn source_of(volume: &Volume) -> Source<'_> {
    if let Some(empty) = &volume.empty_dir {
        let medium = empty.medium.clone().unwrap_or_default();
        return Source::EmptyDir { memory: medium == "Memory", medium, size_limit: empty.size_limit.as_ref() };
    }
    if let Some(host) = &volume.host_path {
        return Source::HostPath { path: &host.path, type_: host.type_.as_deref().unwrap_or("") };
    }
    if let Some(s) = &volume.config_map {
        return Source::ConfigMap(s);
    }
    if let Some(s) = &volume.secret {
        return Source::Secret(s);
    }
    if let Some(s) = &volume.downward_api {
        return Source::DownwardApi(s);
    }
    if let Some(s) = &volume.projected {
        return Source::Projected(s);
    }
    // Any other source field set names the type; none at all is the API's default, emptyDir.
    let json = serde_json::to_value(volume).unwrap_or_default();
    let other = json.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned());
    match other {
        Some(kind) => Source::Unsupported(kind),
        None => Source::EmptyDir { memory: false, medium: String::new(), size_limit: None },
    }
}

/// `kubernetes.io~<plugin>`, kubelet's directory name of each volume plugin.
fn plugin_dir(source: &Source<'_>) -> Option<&'static str> {
    match source {
        Source::EmptyDir { .. } => Some("kubernetes.io~empty-dir"),
        Source::ConfigMap(_) => Some("kubernetes.io~configmap"),
        Source::Secret(_) => Some("kubernetes.io~secret"),
        Source::DownwardApi(_) => Some("kubernetes.io~downward-api"),
        Source::Projected(_) => Some("kubernetes.io~projected"),
        Source::HostPath { .. } | Source::Unsupported(_) => None,
    }
}

/// Where each of the pod's supported volumes is on the host (pure: nothing is checked).
pub fn host_volumes(root_dir: &Path, pod: &Pod) -> HostVolumes {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut volumes = HostVolumes::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let source = source_of(volume);
        let read_only =
            matches!(source, Source::ConfigMap(_) | Source::Secret(_) | Source::DownwardApi(_) | Source::Projected(_));
        let path = match (&source, plugin_dir(&source)) {
            (Source::HostPath { path, .. }, _) => PathBuf::from(path),
            (_, Some(plugin)) => pod_dir(root_dir, uid).join("volumes").join(plugin).join(&volume.name),
            (_, None) => continue,
        };
        volumes.insert(volume.name.clone(), HostVolume { path, read_only });
    }
    volumes
}

/// Whether the pod has volumes whose content comes from objects or the pod itself, and so
/// is rewritten on resync.
pub fn has_refreshed_volumes(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        matches!(source_of(v), Source::ConfigMap(_) | Source::Secret(_) | Source::DownwardApi(_) | Source::Projected(_))
    })
}

/// Everything volume setup reads.
pub struct VolumeContext<'a> {
    pub root_dir: &'a Path,
    pub pod: &'a Pod,
    pub objects: &'a dyn PodObjects,
    pub facts: &'a PodFacts,
    pub allocatable: &'a NodeAllocatable,
    pub now: DateTime<Utc>,
}

impl VolumeContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Set up (or refresh) every volume of the pod. Each failure is reported; the others are
/// still set up. Sources are read here; the host work runs on a blocking thread.
pub async fn set_up_volumes(ctx: &VolumeContext<'_>) -> Vec<VolumeFailure> {
    let paths = host_volumes(ctx.root_dir, ctx.pod);
    let mut planned = Vec::new();
    for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let source = source_of(volume);
        let plan = match (paths.get(&volume.name), source) {
            (Some(host), source) => set_up::plan_one(ctx, &source).await.map(|work| (host.path.clone(), work)),
            (None, Source::Unsupported(kind)) => Err(VolumeError::Unsupported(kind)),
            (None, _) => Err(VolumeError::Unsupported("unknown".to_string())),
        };
        planned.push((volume.name.clone(), plan));
    }
    let host = set_up::HostSettings::of(ctx);
    let names: Vec<String> = planned.iter().map(|(name, _)| name.clone()).collect();
    let applied = tokio::task::spawn_blocking(move || {
        let applied = planned.into_iter().map(|(volume, plan)| {
            let result = plan.and_then(|(path, work)| set_up::apply(work, &path, &host));
            result.err().map(|error| VolumeFailure { volume, error })
        });
        applied.flatten().collect::<Vec<_>>()
    });
    match applied.await {
        Ok(failures) => failures,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => names.into_iter().map(|volume| VolumeFailure { volume, error: VolumeError::Interrupted }).collect(),
    }
}

/// Unmount everything the pod mounted below its directory (tmpfs volumes, subPath binds,
/// anything left there). Afterwards nothing is mounted below `pod_dir`, or this fails: the
/// caller must never remove a directory through a mount.
pub fn tear_down(pod_dir: &Path) -> Result<(), VolumeError> {
    unmount_all_below(pod_dir)?;
    let remaining = mount_points_below(pod_dir)?;
    if remaining.is_empty() {
        Ok(())
    } else {
        Err(VolumeError::MountsRemain { dir: pod_dir.to_path_buf(), remaining })
    }
}

/// The delay before mounting again after `streak` failures: kubelet's volume reconciler
/// backoff, 500 ms doubling up to about 2 minutes.
pub fn mount_retry_delay(streak: u32) -> std::time::Duration {
    let doublings = streak.saturating_sub(1).min(8);
    std::time::Duration::from_millis(500u64 << doublings).min(std::time::Duration::from_secs(122))
}

#[cfg(test)]
mod tests;
