//! cgroup v1 controllers through cgroups-rs, which finds each controller's mount point in
//! /proc/self/mountinfo (so this side does not take the cgroup root as a parameter).

use std::path::PathBuf;

use cgroups_rs::fs::hierarchies::V1;
use cgroups_rs::fs::{Cgroup, MaxValue, Resources};

use super::{parse_oom_kill, CgroupError, CgroupLimits};

/// The controllers a container gets a directory in. cpuset is left out: a new v1 cpuset
/// directory starts with empty cpus/mems and refuses tasks until they are copied down the
/// whole chain, and nodelet sets no cpuset limits.
const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio"];

fn load(path: &str) -> Cgroup {
    Cgroup::load_with_specified_controllers(
        Box::new(V1::new()),
        path,
        CONTROLLERS.iter().map(|c| c.to_string()).collect(),
    )
}

pub(super) fn create(path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let cgroup = load(path);
    cgroup.create().map_err(|source| CgroupError::V1 { operation: "create", path: path.to_string(), source })?;
    cgroup.apply(&resources(limits)).map_err(|source| CgroupError::V1 {
        operation: "apply limits",
        path: path.to_string(),
        source,
    })
}

fn resources(limits: &CgroupLimits) -> Resources {
    let mut res = Resources::default();
    res.cpu.shares = limits.cpu_shares;
    res.cpu.quota = limits.cpu_quota;
    res.cpu.period = limits.cpu_period;
    res.memory.memory_hard_limit = limits.memory_limit;
    res.pid.maximum_number_of_processes =
        limits.pids_limit.map(|n| if n > 0 { MaxValue::Value(n) } else { MaxValue::Max });
    res
}

/// The container's directory in each v1 controller hierarchy.
pub(super) fn dirs(path: &str) -> Vec<PathBuf> {
    load(path).subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect()
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
