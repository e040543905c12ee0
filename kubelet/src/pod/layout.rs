//! Where a pod's things live under the agent's root directory.

use std::path::{Path, PathBuf};

pub fn pod_dir(root_dir: &Path, uid: &str) -> PathBuf {
    root_dir.join("pods").join(uid)
}

/// The bundle of one container attempt: config.json, rootfs mount, overlay upper/work dirs.
pub fn container_dir(root_dir: &Path, uid: &str, container: &str, attempt: u32) -> PathBuf {
    pod_dir(root_dir, uid).join("containers").join(format!("{container}-{attempt}"))
}

/// kubelet's log layout inside the pod dir: `logs/<container>/<attempt>.log`.
pub fn log_path(root_dir: &Path, uid: &str, container: &str, attempt: u32) -> PathBuf {
    pod_dir(root_dir, uid).join("logs").join(container).join(format!("{attempt}.log"))
}
