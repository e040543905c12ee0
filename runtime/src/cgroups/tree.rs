//! Removing a whole cgroup subtree (a pod's directory) from every hierarchy. Written directly:
//! cgroups-rs deletes one directory and refuses non-empty ones.

use std::path::{Path, PathBuf};

use super::{relative_cgroup_path, v2, CgroupError, DEFAULT_CGROUP_ROOT};

/// Remove `path` (e.g. "/nodelet/kubepods/pod<uid>") and its now-empty children from every
/// hierarchy mounted under /sys/fs/cgroup. Missing directories are fine.
pub fn remove_cgroup_tree(path: &str) -> Result<(), CgroupError> {
    remove_cgroup_tree_in(Path::new(DEFAULT_CGROUP_ROOT), path)
}

/// [`remove_cgroup_tree`] with an explicit cgroup root.
pub fn remove_cgroup_tree_in(cgroup_root: &Path, path: &str) -> Result<(), CgroupError> {
    let relative = relative_cgroup_path(path)?;
    for hierarchy in hierarchies(cgroup_root) {
        remove_subtree(&hierarchy.join(&relative))?;
    }
    Ok(())
}

/// The root itself (pure v2) or each mounted hierarchy below it (v1 and hybrid).
fn hierarchies(cgroup_root: &Path) -> Vec<PathBuf> {
    if cgroup_root.join("cgroup.controllers").exists() {
        return vec![cgroup_root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(cgroup_root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Depth first: a cgroup directory can only be removed once it has no children.
fn remove_subtree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Remove { path: dir.to_path_buf(), source }),
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_subtree(&entry.path())?;
        }
    }
    v2::remove(dir)
}
