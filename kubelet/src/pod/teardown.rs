//! Releasing everything a pod holds on the node, shared by the worker (deletion) and the
//! manager (orphans found at adoption).

use std::path::Path;

use super::ids::{sandbox_id, ContainerOwner};
use super::layout::{container_dir, pod_dir};
use super::runtime_port::{ContainerInfo, PodRuntime, PortError};
use super::volumes::tear_down as tear_down_volumes;

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("release pod {uid}")]
    Runtime {
        uid: String,
        #[source]
        source: PortError,
    },
    #[error("tear down the volumes of pod {uid}")]
    Volumes {
        uid: String,
        #[source]
        source: super::volumes::VolumeError,
    },
    #[error("remove pod directory {path}")]
    RemoveDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Delete the pod's containers (force), unmount their root filesystems, release the sandbox,
/// unmount the pod's volumes and remove the pod directory. Idempotent: safe to repeat after a partial failure.
pub async fn release_pod(
    runtime: &dyn PodRuntime,
    root_dir: &Path,
    uid: &str,
    containers: &[ContainerInfo],
) -> Result<(), TeardownError> {
    let fail = |source| TeardownError::Runtime { uid: uid.to_string(), source };
    for info in containers {
        runtime.delete_container(&info.id, true).await.map_err(fail)?;
        if let Some(owner) = ContainerOwner::from_annotations(&info.annotations) {
            let dir = container_dir(root_dir, uid, &owner.container_name, owner.attempt);
            runtime.unmount_rootfs(&dir).await.map_err(fail)?;
        }
    }
    // Attempts whose container never got created may still have a mounted rootfs.
    let containers_dir = pod_dir(root_dir, uid).join("containers");
    if let Ok(entries) = std::fs::read_dir(&containers_dir) {
        for entry in entries.flatten() {
            runtime.unmount_rootfs(&entry.path()).await.map_err(fail)?;
        }
    }
    runtime.teardown_sandbox(&sandbox_id(uid)).await.map_err(fail)?;
    let dir = pod_dir(root_dir, uid);
    // Volumes (tmpfs, subPath binds) are unmounted before anything is removed: removing
    // through a mount would delete what it shows.
    tear_down_volumes(&dir).map_err(|source| TeardownError::Volumes { uid: uid.to_string(), source })?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TeardownError::RemoveDir { path: dir, source }),
    }
}
