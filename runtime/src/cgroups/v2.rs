//! cgroup2 written directly (see the module docs of `cgroups` for why not cgroups-rs).

use std::path::Path;
use std::time::Duration;

use super::{parse_oom_kill, write_file, CgroupError, CgroupLimits};

const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Create `<root>/<path>`, enable the needed controllers down the chain and apply `limits`.
pub(super) fn create(root: &Path, path: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let leaf = root.join(path);
    std::fs::create_dir_all(&leaf).map_err(|source| CgroupError::Create { path: leaf.clone(), source })?;
    let wanted = wanted_controllers(limits);
    if !wanted.is_empty() {
        enable_controllers(root, path, &wanted)?;
    }
    apply(&leaf, limits)
}

fn wanted_controllers(limits: &CgroupLimits) -> Vec<&'static str> {
    let mut wanted = Vec::new();
    if limits.needs_cpu() {
        wanted.push("cpu");
    }
    if limits.memory_limit.is_some() {
        wanted.push("memory");
    }
    if limits.pids_limit.is_some() {
        wanted.push("pids");
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
    if let Some(limit) = limits.memory_limit {
        write_file(&leaf.join("memory.max"), &max_or(limit, limit >= 0))?;
    }
    if let Some(limit) = limits.pids_limit {
        write_file(&leaf.join("pids.max"), &max_or(limit, limit > 0))?;
    }
    Ok(())
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
    use super::shares_to_weight;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
