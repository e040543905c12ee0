//! cgroup v1 directories through cgroups-rs, which finds each controller's mount point in
//! /proc/self/mountinfo, read once (so this side does not take the cgroup root as a parameter); the
//! limits themselves are written by `v1_limits`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cgroups_rs::fs::hierarchies::V1;
use cgroups_rs::fs::Cgroup;

use super::v1_limits::{self, ControllerDirs};
use super::{parse_oom_kill, write_file, CgroupError, CgroupLimits};

/// The controllers a container gets a directory in.
const CONTROLLERS: &[&str] =
    &["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio", "hugetlb", "net_cls", "net_prio"];

fn load(path: &str) -> Cgroup {
    Cgroup::load_with_specified_controllers(
        Box::new(hierarchies()),
        path,
        CONTROLLERS.iter().map(|c| c.to_string()).collect(),
    )
}

/// The v1 hierarchies' mount points, read from /proc/self/mountinfo once per process: they
/// are mounted at boot and do not move under a running runtime, and each reading costs as
/// much as the rest of a cgroup's lookup.
fn hierarchies() -> V1 {
    static MOUNTS: OnceLock<V1> = OnceLock::new();
    MOUNTS.get_or_init(V1::new).clone()
}

pub(super) fn create(path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let cgroup = load(path);
    if let Some(leaf) = controller_dirs_of(&cgroup).get("cpuset") {
        prepare_cpuset(leaf, path)?;
    }
    cgroup.create().map_err(|source| CgroupError::V1 { operation: "create", path: path.to_string(), source })?;
    update(path, limits)
}

/// Write `limits` (only the fields set) into the container's existing directories.
pub(super) fn update(path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    v1_limits::apply(&controller_dirs_of(&load(path)), limits)
}

/// The container's directory per controller.
pub(super) fn controller_dirs(path: &str) -> ControllerDirs {
    controller_dirs_of(&load(path))
}

fn controller_dirs_of(cgroup: &Cgroup) -> ControllerDirs {
    cgroup.subsystems().iter().map(|s| (s.controller_name(), s.to_controller().path().to_path_buf())).collect()
}

/// A new v1 cpuset directory starts with empty cpus and mems and refuses tasks: create the
/// chain down to the leaf, each one given its parent's cpus and mems where it has none.
fn prepare_cpuset(leaf: &Path, path: &str) -> Result<(), CgroupError> {
    let depth = path.split('/').filter(|p| !p.is_empty()).count();
    let mut chain: Vec<&Path> = leaf.ancestors().take(depth + 1).collect();
    chain.reverse(); // the hierarchy's root first
    for pair in chain.windows(2) {
        let (parent, dir) = (pair[0], pair[1]);
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: dir.to_path_buf(), source }),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = read(&dir.join(file))?;
            if own.trim().is_empty() {
                write_file(&dir.join(file), read(&parent.join(file))?.trim())?;
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

/// The container's directory in each v1 controller hierarchy.
pub(super) fn dirs(path: &str) -> Vec<PathBuf> {
    load(path).subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect()
}

/// The container's directory in the hierarchy of controller `name` ("freezer", "memory").
pub(super) fn controller_dir(path: &str, name: &str) -> Option<PathBuf> {
    load(path).subsystems().iter().find(|s| s.controller_name() == name).map(|s| s.to_controller().path().to_path_buf())
}

pub(super) fn oom_kill_count(path: &str) -> u64 {
    dirs(path)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("memory.oom_control")).ok())
        .map(|c| parse_oom_kill(&c))
        .sum()
}

pub(super) fn remove(path: &str) -> Result<(), CgroupError> {
    // cgroups-rs retries rmdir while the kernel still tears down exited tasks.
    load(path).delete().map_err(|source| CgroupError::V1 { operation: "remove", path: path.to_string(), source })
}
