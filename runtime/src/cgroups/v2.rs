//! cgroup2 written directly (see the module docs of `cgroups` for why not cgroups-rs).

use std::path::Path;
use std::time::Duration;

use super::block_io::v1_to_v2_weight;
use super::{parse_oom_kill, write_file, CgroupError, CgroupLimits};

const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Create `<root>/<path>`, enable the needed controllers down the chain and apply `limits`.
pub(super) fn create(root: &Path, path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let leaf = root.join(path);
    std::fs::create_dir_all(&leaf).map_err(|source| CgroupError::Create { path: leaf.clone(), source })?;
    update(root, path, limits)
}

/// Enable what `limits` needs down to `<root>/<path>` and write them (only the fields set).
pub(super) fn update(root: &Path, path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let leaf = root.join(path);
    let wanted = wanted_controllers(limits);
    if !wanted.is_empty() {
        enable_controllers(root, path, &wanted)?;
    }
    apply(&leaf, &with_current_halves(&leaf, limits))
}

/// Some v2 files hold two settings (`cpu.max`: quota and period; `memory.swap.max` is derived
/// from the memory limit): the half an update does not give is kept from the cgroup, as runc
/// merges its flags into the container's resources. Nothing to keep on a fresh cgroup.
fn with_current_halves(leaf: &Path, limits: &CgroupLimits) -> CgroupLimits {
    let mut merged = limits.clone();
    if merged.cpu_quota.is_some() != merged.cpu_period.is_some() {
        if let Some((quota, period)) = read_cpu_max(leaf) {
            merged.cpu_quota.get_or_insert(quota);
            merged.cpu_period.get_or_insert(period);
        }
    }
    if merged.memory_swap.is_some() && merged.memory_limit.is_none() {
        merged.memory_limit = read_limit(&leaf.join("memory.max"));
    }
    merged
}

/// `cpu.max` as (quota, period); "max" is -1, as the spec writes no quota.
fn read_cpu_max(leaf: &Path) -> Option<(i64, u64)> {
    let text = std::fs::read_to_string(leaf.join("cpu.max")).ok()?;
    let mut fields = text.split_whitespace();
    let quota = match fields.next()? {
        "max" => -1,
        number => number.parse().ok()?,
    };
    Some((quota, fields.next()?.parse().ok()?))
}

/// A limit file such as `memory.max`; "max" is -1.
fn read_limit(path: &Path) -> Option<i64> {
    match std::fs::read_to_string(path).ok()?.trim() {
        "max" => Some(-1),
        number => number.parse().ok(),
    }
}

fn wanted_controllers(limits: &CgroupLimits) -> Vec<&'static str> {
    let mut wanted = Vec::new();
    if limits.needs_cpu() {
        wanted.push("cpu");
    }
    if limits.needs_cpuset() {
        wanted.push("cpuset");
    }
    if limits.needs_memory() {
        wanted.push("memory");
    }
    if limits.pids_limit.is_some() {
        wanted.push("pids");
    }
    if limits.needs_io() {
        wanted.push("io");
    }
    if !limits.hugepage_limits.is_empty() {
        wanted.push("hugetlb");
    }
    // A unified key names its controller before the dot ("memory.high").
    for key in limits.unified.keys() {
        if let Some(controller) = key.split('.').next().filter(|c| !matches!(*c, "cgroup" | "")) {
            let known = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc"];
            if let Some(name) = known.iter().find(|k| **k == controller).filter(|k| !wanted.contains(*k)) {
                wanted.push(name);
            }
        }
    }
    wanted
}

/// A v2 controller is usable in a cgroup only when every ancestor lists it in
/// cgroup.subtree_control: enable it from the root down to the leaf's parent.
fn enable_controllers(root: &Path, path: &str, wanted: &[&str]) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    let parents: Vec<&str> = path.split('/').collect();
    for (depth, part) in std::iter::once("").chain(parents.iter().copied()).enumerate() {
        if depth > 0 {
            dir.push(part);
        }
        if depth == parents.len() {
            break;
        }
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enable: Vec<String> =
            wanted.iter().filter(|c| available.split_whitespace().any(|a| a == **c)).map(|c| format!("+{c}")).collect();
        if !enable.is_empty() {
            write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
        }
    }
    Ok(())
}

fn apply(leaf: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    if let Some(shares) = limits.cpu_shares {
        write_file(&leaf.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
    }
    if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
        let period = limits.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
        let quota = match limits.cpu_quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        write_file(&leaf.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    if let Some(cpus) = &limits.cpuset_cpus {
        write_file(&leaf.join("cpuset.cpus"), cpus)?;
    }
    if let Some(mems) = &limits.cpuset_mems {
        write_file(&leaf.join("cpuset.mems"), mems)?;
    }
    if let Some(swap) = swap_max(limits)? {
        write_file(&leaf.join("memory.swap.max"), &swap)?;
    }
    if let Some(limit) = limits.memory_limit {
        write_file(&leaf.join("memory.max"), &max_or(limit, limit >= 0))?;
    }
    if let Some(reservation) = limits.memory_reservation {
        write_file(&leaf.join("memory.low"), &max_or(reservation, reservation >= 0))?;
    }
    if let Some(limit) = limits.pids_limit {
        write_file(&leaf.join("pids.max"), &max_or(limit, limit > 0))?;
    }
    if let Some(weight) = limits.blkio_weight {
        apply_io_weight(leaf, weight)?;
    }
    limits.blkio_devices.apply_v2(leaf)?;
    for (size, limit) in &limits.hugepage_limits {
        write_file(&leaf.join(format!("hugetlb.{size}.max")), &max_or(*limit, *limit >= 0))?;
    }
    for (key, value) in &limits.unified {
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::BadUnifiedKey { key: key.clone() });
        }
        write_file(&leaf.join(key), value)?;
    }
    // What v2 has no file for: runc leaves these out too.
    let unsupported = [
        ("memory swappiness", limits.memory_swappiness.is_some()),
        ("disableOOMKiller", limits.disable_oom_killer.is_some()),
        ("network classID and priorities", limits.net_class_id.is_some() || !limits.net_priorities.is_empty()),
    ];
    for (what, asked) in unsupported {
        if asked {
            tracing::warn!(cgroup = %leaf.display(), "{what} is not supported on cgroup v2: ignored");
        }
    }
    Ok(())
}

/// v1's memory+swap limit as v2's swap-only memory.swap.max, as runc converts it.
fn swap_max(limits: &CgroupLimits) -> Result<Option<String>, CgroupError> {
    let Some(swap) = limits.memory_swap else {
        return Ok(None);
    };
    if swap < 0 {
        return Ok(Some("max".to_string()));
    }
    match limits.memory_limit {
        None | Some(0) => Err(CgroupError::BadMemorySwap("a swap limit needs a memory limit on cgroup v2".into())),
        Some(limit) if limit < 0 => {
            Err(CgroupError::BadMemorySwap("a swap limit needs a finite memory limit on cgroup v2".into()))
        }
        Some(limit) if swap < limit => {
            Err(CgroupError::BadMemorySwap(format!("memory+swap limit {swap} is below the memory limit {limit}")))
        }
        Some(limit) => Ok(Some((swap - limit).to_string())),
    }
}

/// BFQ's weight takes the v1 value as it is; io.weight ([1, 10000]) gets it converted.
fn apply_io_weight(leaf: &Path, weight: u16) -> Result<(), CgroupError> {
    let bfq = leaf.join("io.bfq.weight");
    if bfq.exists() {
        return write_file(&bfq, &weight.to_string());
    }
    write_file(&leaf.join("io.weight"), &format!("default {}", v1_to_v2_weight(weight)))
}

fn max_or(value: i64, limited: bool) -> String {
    if limited {
        value.to_string()
    } else {
        "max".to_string()
    }
}

/// runc's conversion from v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000].
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

pub(super) fn oom_kill_count(leaf: &Path) -> u64 {
    std::fs::read_to_string(leaf.join("memory.events")).map(|c| parse_oom_kill(&c)).unwrap_or(0)
}

/// rmdir the leaf, retrying while the kernel finishes releasing exited tasks (EBUSY).
pub(super) fn remove(leaf: &Path) -> Result<(), CgroupError> {
    let mut delay = Duration::from_millis(10);
    for attempt in 0.. {
        match std::fs::remove_dir(leaf) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt < 6 && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(source) => return Err(CgroupError::Remove { path: leaf.to_path_buf(), source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_of_one_half_keeps_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cpu.max"), "50000 100000\n").expect("cpu.max");
        std::fs::write(dir.path().join("memory.max"), "268435456\n").expect("memory.max");
        let period_only = CgroupLimits { cpu_period: Some(20_000), ..CgroupLimits::default() };
        let merged = with_current_halves(dir.path(), &period_only);
        assert_eq!((merged.cpu_quota, merged.cpu_period), (Some(50_000), Some(20_000)));
        let swap_only = CgroupLimits { memory_swap: Some(512 << 20), ..CgroupLimits::default() };
        assert_eq!(with_current_halves(dir.path(), &swap_only).memory_limit, Some(256 << 20));
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").expect("cpu.max");
        let quota_only = CgroupLimits { cpu_quota: Some(25_000), ..CgroupLimits::default() };
        assert_eq!(with_current_halves(dir.path(), &quota_only).cpu_period, Some(100_000));
    }

    #[test]
    fn update_writes_only_what_is_given() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids hugetlb\n").unwrap();
        std::fs::create_dir_all(root.path().join("c")).unwrap();
        let limits = CgroupLimits {
            cpuset_cpus: Some("0-1".into()),
            memory_limit: Some(100),
            memory_swap: Some(300),
            memory_reservation: Some(50),
            blkio_weight: Some(1000),
            ..Default::default()
        };
        update(root.path(), "c", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+cpuset +memory +io");
        assert_eq!(read("c/cpuset.cpus"), "0-1");
        assert_eq!(read("c/memory.max"), "100");
        assert_eq!(read("c/memory.swap.max"), "200");
        assert_eq!(read("c/memory.low"), "50");
        assert_eq!(read("c/io.weight"), "default 10000");
        assert!(!root.path().join("c/pids.max").exists());
        assert!(!root.path().join("c/cpu.max").exists());

        let limits = CgroupLimits {
            hugepage_limits: [("2MB".to_string(), 4 << 21)].into(),
            unified: [("memory.high".to_string(), "50000".to_string())].into(),
            ..Default::default()
        };
        update(root.path(), "c", &limits).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+hugetlb +memory");
        assert_eq!(read("c/hugetlb.2MB.max"), "8388608");
        assert_eq!(read("c/memory.high"), "50000");
        let escape = CgroupLimits { unified: [("../x".to_string(), "1".to_string())].into(), ..Default::default() };
        assert!(matches!(update(root.path(), "c", &escape), Err(CgroupError::BadUnifiedKey { .. })));
    }

    #[test]
    fn swap_converts_like_runc() {
        let with = |limit, swap| CgroupLimits { memory_limit: limit, memory_swap: Some(swap), ..Default::default() };
        assert_eq!(swap_max(&with(Some(100), -1)).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_max(&with(Some(100), 100)).unwrap().as_deref(), Some("0"));
        assert!(swap_max(&with(None, 100)).is_err());
        assert!(swap_max(&with(Some(200), 100)).is_err());
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
