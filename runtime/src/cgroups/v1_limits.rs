//! Writing limits into a container's v1 controller directories, in the order the kernel
//! accepts them (memory before or after memsw, period before quota), as runc does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{devices, write_file, CgroupError, CgroupLimits};

/// The container's directory per controller name ("memory", "cpu", ...).
pub(super) type ControllerDirs = BTreeMap<String, PathBuf>;

pub(super) fn apply(dirs: &ControllerDirs, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let dir = |name: &'static str| {
        dirs.get(name).ok_or_else(|| CgroupError::NoController { controller: name, path: first_dir(dirs) })
    };
    if limits.needs_cpu() {
        apply_cpu(dir("cpu")?, limits)?;
    }
    if limits.needs_cpuset() {
        let cpuset = dir("cpuset")?;
        if let Some(cpus) = &limits.cpuset_cpus {
            write_file(&cpuset.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = &limits.cpuset_mems {
            write_file(&cpuset.join("cpuset.mems"), mems)?;
        }
    }
    if limits.needs_memory() {
        apply_memory(dir("memory")?, limits)?;
    }
    if let Some(limit) = limits.pids_limit {
        let value = if limit > 0 { limit.to_string() } else { "max".to_string() };
        write_file(&dir("pids")?.join("pids.max"), &value)?;
    }
    if let Some(weight) = limits.blkio_weight {
        write_file(&dir("blkio")?.join(blkio_weight_file(dir("blkio")?)), &weight.to_string())?;
    }
    if !limits.blkio_devices.is_empty() {
        limits.blkio_devices.apply_v1(dir("blkio")?)?;
    }
    for (size, limit) in &limits.hugepage_limits {
        write_file(&dir("hugetlb")?.join(format!("hugetlb.{size}.limit_in_bytes")), &limit.to_string())?;
    }
    if let Some(class_id) = limits.net_class_id {
        write_file(&dir("net_cls")?.join("net_cls.classid"), &class_id.to_string())?;
    }
    for (interface, priority) in &limits.net_priorities {
        write_file(&dir("net_prio")?.join("net_prio.ifpriomap"), &format!("{interface} {priority}"))?;
    }
    if !limits.unified.is_empty() {
        return Err(CgroupError::Unsupported { what: "linux.resources.unified", version: "v1" });
    }
    if !limits.devices.is_empty() {
        devices::apply_v1(dir("devices")?, &limits.devices)?;
    }
    Ok(())
}

fn first_dir(dirs: &ControllerDirs) -> PathBuf {
    dirs.values().next().cloned().unwrap_or_default()
}

fn apply_cpu(dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    if let Some(shares) = limits.cpu_shares.filter(|s| *s != 0) {
        write_file(&dir.join("cpu.shares"), &shares.to_string())?;
    }
    // The period first: a quota is checked against the current period.
    if let Some(period) = limits.cpu_period.filter(|p| *p != 0) {
        write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
    }
    if let Some(quota) = limits.cpu_quota.filter(|q| *q != 0) {
        write_file(&dir.join("cpu.cfs_quota_us"), &quota.max(-1).to_string())?;
    }
    Ok(())
}

/// The kernel wants memsw >= memory at all times: when both change and the new memsw is
/// above the current memory limit (or unlimited), memsw goes first.
fn apply_memory(dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let swap_file = dir.join("memory.memsw.limit_in_bytes");
    let limit = limits.memory_limit.filter(|l| *l != 0).map(|l| l.max(-1));
    // Unlimited memory without a word on swap means unlimited swap too.
    let swap = match (limit, limits.memory_swap.filter(|s| *s != 0)) {
        (Some(-1), None) if swap_file.exists() => Some(-1),
        (_, swap) => swap.map(|s| s.max(-1)),
    };
    let swap_first = match (limit, swap) {
        (Some(_), Some(-1)) => true,
        (Some(_), Some(swap)) => current(&limit_file)?.is_some_and(|cur| cur < swap as u64),
        _ => false,
    };
    if swap_first {
        write_file(&swap_file, &swap.unwrap_or(-1).to_string())?;
    }
    if let Some(limit) = limit {
        write_file(&limit_file, &limit.to_string())?;
    }
    if let (Some(swap), false) = (swap, swap_first) {
        write_file(&swap_file, &swap.to_string())?;
    }
    if let Some(reservation) = limits.memory_reservation.filter(|r| *r != 0) {
        write_file(&dir.join("memory.soft_limit_in_bytes"), &reservation.max(-1).to_string())?;
    }
    if let Some(swappiness) = limits.memory_swappiness {
        if swappiness > 100 {
            return Err(CgroupError::BadMemorySwap(format!("swappiness {swappiness} is above 100")));
        }
        write_file(&dir.join("memory.swappiness"), &swappiness.to_string())?;
    }
    if let Some(disable) = limits.disable_oom_killer {
        write_file(&dir.join("memory.oom_control"), if disable { "1" } else { "0" })?;
    }
    Ok(())
}

fn current(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })?;
    Ok(text.trim().parse().ok())
}

/// BFQ's weight where the kernel has it (runc prefers it), else CFQ's.
fn blkio_weight_file(dir: &Path) -> &'static str {
    if dir.join("blkio.bfq.weight").exists() {
        "blkio.bfq.weight"
    } else {
        "blkio.weight"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> ControllerDirs {
        ["cpu", "cpuset", "memory", "pids", "blkio"]
            .iter()
            .map(|c| {
                let dir = root.join(c);
                std::fs::create_dir_all(&dir).unwrap();
                (c.to_string(), dir)
            })
            .collect()
    }

    #[test]
    fn every_limit_lands_in_its_file() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        std::fs::write(root.path().join("memory/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(root.path().join("blkio/blkio.bfq.weight"), "100\n").unwrap();
        let limits = CgroupLimits {
            cpu_shares: Some(512),
            cpu_quota: Some(20_000),
            cpu_period: Some(50_000),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            memory_swap: Some(128 << 20),
            memory_reservation: Some(32 << 20),
            pids_limit: Some(-1),
            blkio_weight: Some(300),
            memory_swappiness: Some(10),
            disable_oom_killer: Some(true),
            ..Default::default()
        };
        apply(&dirs, &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cpu/cpu.shares"), "512");
        assert_eq!(read("cpu/cpu.cfs_quota_us"), "20000");
        assert_eq!(read("cpu/cpu.cfs_period_us"), "50000");
        assert_eq!(read("cpuset/cpuset.cpus"), "0");
        assert_eq!(read("memory/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory/memory.memsw.limit_in_bytes"), "134217728");
        assert_eq!(read("memory/memory.soft_limit_in_bytes"), "33554432");
        assert_eq!(read("pids/pids.max"), "max");
        assert_eq!(read("blkio/blkio.bfq.weight"), "300");
        assert_eq!(read("memory/memory.swappiness"), "10");
        assert_eq!(read("memory/memory.oom_control"), "1");
    }

    #[test]
    fn a_missing_controller_is_named() {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = dirs(root.path());
        dirs.remove("cpuset");
        let limits = CgroupLimits { cpuset_cpus: Some("0".into()), ..Default::default() };
        let err = apply(&dirs, &limits).unwrap_err();
        assert!(matches!(err, CgroupError::NoController { controller: "cpuset", .. }), "{err:?}");
    }
}
