//! Releasing everything a pod holds on the node, shared by the worker (deletion) and the
//! manager (orphans found at adoption).

use std::path::Path;

use super::ids::{sandbox_id, ContainerOwner};
use super::layout::{container_dir, pod_dir};
use super::referenced_objects::PodObjects;
use super::runtime_port::{ContainerInfo, PodRuntime, PortError};
use super::volumes::one_filesystem::{remove_all_one_filesystem, RemoveError};
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
    #[error("remove pod directory of pod {uid}")]
    RemoveDir {
        uid: String,
        #[source]
        source: RemoveError,
    },
    #[error("pod {uid}: the teardown of its directory was interrupted")]
    Interrupted {
        uid: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Delete the pod's containers (force), unmount their root filesystems, release the sandbox,
/// forget the pod's service account tokens, unmount the pod's volumes and remove the pod
/// directory. Idempotent: safe to repeat after a partial failure.
pub async fn release_pod(
    runtime: &dyn PodRuntime,
    objects: &dyn PodObjects,
    root_dir: &Path,
    uid: &str,
    containers: &[ContainerInfo],
) -> Result<(), TeardownError> {
    let fail = |source| TeardownError::Runtime { uid: uid.to_string(), source };
    objects.forget_pod(uid);
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
    let owned_uid = uid.to_string();
    // mountinfo, umount(2) and the walk block: off the async threads.
    tokio::task::spawn_blocking(move || remove_pod_dir(&dir, &owned_uid))
        .await
        .map_err(|source| TeardownError::Interrupted { uid: uid.to_string(), source })?
}

/// Unmount the pod's volumes, then remove its directory without crossing into any mount
/// that is left: removing through a mount would delete what it shows.
pub fn remove_pod_dir(dir: &Path, uid: &str) -> Result<(), TeardownError> {
    tear_down_volumes(dir).map_err(|source| TeardownError::Volumes { uid: uid.to_string(), source })?;
    remove_all_one_filesystem(dir).map_err(|source| TeardownError::RemoveDir { uid: uid.to_string(), source })
}

#[cfg(test)]
#[path = "teardown_tests.rs"]
mod tests;
