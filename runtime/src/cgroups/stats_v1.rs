//! Reading a container's usage from its v1 controller directories, as runc's fs drivers
//! do. A controller the container has no directory in leaves its part empty.

use std::path::Path;

use super::stats::{
    hugepage_sizes, parse_flat_keyed, parse_list, Blkio, BlkioEntry, Cpu, CpuSet, Hugetlb, Memory, MemoryEntry, Pids,
    Stats,
};
use super::v1_limits::ControllerDirs;
use super::CgroupError;

/// cpuacct.stat counts in USER_HZ ticks, 100 per second on Linux.
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

pub(super) fn stats(dirs: &ControllerDirs) -> Result<Stats, CgroupError> {
    let mut stats = Stats::default();
    if let Some(dir) = dirs.get("cpuacct") {
        cpuacct(dir, &mut stats.cpu)?;
    }
    if let Some(dir) = dirs.get("cpu") {
        let stat = parse_flat_keyed(&read(&dir.join("cpu.stat"))?);
        let t = &mut stats.cpu.throttling;
        t.periods = stat.get("nr_periods").copied().unwrap_or(0);
        t.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        t.throttled_time = stat.get("throttled_time").copied().unwrap_or(0);
    }
    if let Some(dir) = dirs.get("cpuset") {
        stats.cpuset = cpuset(dir)?;
    }
    if let Some(dir) = dirs.get("memory") {
        stats.memory = memory(dir)?;
    }
    if let Some(dir) = dirs.get("pids") {
        stats.pids =
            Pids { current: number(&read(&dir.join("pids.current"))?), limit: number(&read(&dir.join("pids.max"))?) };
    }
    if let Some(dir) = dirs.get("blkio") {
        stats.blkio = blkio(dir)?;
    }
    if let Some(dir) = dirs.get("hugetlb") {
        for size in hugepage_sizes() {
            let file = |f: &str| read(&dir.join(format!("hugetlb.{size}.{f}")));
            let entry = Hugetlb {
                usage: number(&file("usage_in_bytes")?),
                max: number(&file("max_usage_in_bytes")?),
                failcnt: number(&file("failcnt")?),
            };
            stats.hugetlb.insert(size, entry);
        }
    }
    Ok(stats)
}

fn cpuacct(dir: &Path, cpu: &mut Cpu) -> Result<(), CgroupError> {
    cpu.usage.total = number(&read(&dir.join("cpuacct.usage"))?);
    cpu.usage.percpu = read(&dir.join("cpuacct.usage_percpu"))?.split_whitespace().map(number).collect();
    // "cpu user system" then one line per CPU (missing on old kernels).
    if let Ok(all) = std::fs::read_to_string(dir.join("cpuacct.usage_all")) {
        for line in all.lines().skip(1) {
            let fields: Vec<u64> = line.split_whitespace().map(number).collect();
            if let [_, user, system] = fields[..] {
                cpu.usage.percpu_user.push(user);
                cpu.usage.percpu_kernel.push(system);
            }
        }
    }
    let stat = parse_flat_keyed(&read(&dir.join("cpuacct.stat"))?);
    cpu.usage.user = stat.get("user").copied().unwrap_or(0) * NANOS_PER_TICK;
    cpu.usage.kernel = stat.get("system").copied().unwrap_or(0) * NANOS_PER_TICK;
    Ok(())
}

fn cpuset(dir: &Path) -> Result<CpuSet, CgroupError> {
    let file = |f: &str| read(&dir.join(format!("cpuset.{f}")));
    Ok(CpuSet {
        cpus: parse_list(&file("cpus")?),
        cpu_exclusive: number(&file("cpu_exclusive")?),
        mems: parse_list(&file("mems")?),
        mem_hardwall: number(&file("mem_hardwall")?),
        mem_exclusive: number(&file("mem_exclusive")?),
        memory_migrate: number(&file("memory_migrate")?),
        memory_spread_page: number(&file("memory_spread_page")?),
        memory_spread_slab: number(&file("memory_spread_slab")?),
        memory_pressure: number(&file("memory_pressure")?),
        sched_load_balance: number(&file("sched_load_balance")?),
        sched_relax_domain_level: file("sched_relax_domain_level")?.trim().parse().unwrap_or(0),
    })
}

fn memory(dir: &Path) -> Result<Memory, CgroupError> {
    let raw = parse_flat_keyed(&read(&dir.join("memory.stat"))?);
    Ok(Memory {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: memory_entry(dir, "memory")?,
        swap: memory_entry(dir, "memory.memsw")?,
        kernel: memory_entry(dir, "memory.kmem")?,
        kernel_tcp: memory_entry(dir, "memory.kmem.tcp")?,
        raw,
    })
}

/// `<prefix>.{usage,max_usage,limit}_in_bytes` and `.failcnt`; a kernel without the files
/// (no swap accounting, no kmem) leaves the entry empty, as runc does.
fn memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    let file = |f: &str| dir.join(format!("{prefix}.{f}"));
    if !file("usage_in_bytes").exists() {
        return Ok(MemoryEntry::default());
    }
    Ok(MemoryEntry {
        limit: number(&read(&file("limit_in_bytes"))?),
        usage: number(&read(&file("usage_in_bytes"))?),
        max: number(&read(&file("max_usage_in_bytes"))?),
        failcnt: number(&read(&file("failcnt"))?),
    })
}

/// BFQ's counters where the kernel has them, else the throttling layer's (as runc falls
/// back).
fn blkio(dir: &Path) -> Result<Blkio, CgroupError> {
    let prefix = if dir.join("blkio.bfq.io_service_bytes_recursive").exists() { "blkio.bfq" } else { "blkio.throttle" };
    let entries = |f: &str| read(&dir.join(format!("{prefix}.{f}"))).map(|t| blkio_entries(&t));
    Ok(Blkio {
        io_service_bytes_recursive: entries("io_service_bytes_recursive")?,
        io_serviced_recursive: entries("io_serviced_recursive")?,
    })
}

/// "8:0 Read 4096" lines; the closing "Total N" line is not per device and is left out.
fn blkio_entries(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, op, value] = fields[..] else { return None };
            let (major, minor) = device.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// A number, "max" (unlimited) as 0.
fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_lines_per_device() {
        let entries = blkio_entries("8:0 Read 4096\n8:0 Write 0\n8:0 Total 4096\nTotal 4096\n");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            (entries[0].major, entries[0].minor, entries[0].op.as_str(), entries[0].value),
            (8, 0, "Read", 4096)
        );
    }

    #[test]
    fn reads_every_controller_from_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = ControllerDirs::new();
        let mut put = |controller: &str, files: &[(&str, &str)]| {
            let dir = root.path().join(controller);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, content) in files {
                std::fs::write(dir.join(name), content).unwrap();
            }
            dirs.insert(controller.to_string(), dir);
        };
        put(
            "cpuacct",
            &[
                ("cpuacct.usage", "300\n"),
                ("cpuacct.usage_percpu", "100 200 \n"),
                ("cpuacct.usage_all", "cpu user system\n0 60 40\n1 150 50\n"),
                ("cpuacct.stat", "user 2\nsystem 1\n"),
            ],
        );
        put("cpu", &[("cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 999\n")]);
        put(
            "memory",
            &[
                ("memory.stat", "cache 4096\nrss 8192\n"),
                ("memory.usage_in_bytes", "12288\n"),
                ("memory.max_usage_in_bytes", "20000\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.failcnt", "2\n"),
            ],
        );
        put("pids", &[("pids.current", "3\n"), ("pids.max", "max\n")]);
        let stats = stats(&dirs).unwrap();
        assert_eq!(stats.cpu.usage.total, 300);
        assert_eq!(stats.cpu.usage.percpu, vec![100, 200]);
        assert_eq!(stats.cpu.usage.percpu_user, vec![60, 150]);
        assert_eq!(stats.cpu.usage.percpu_kernel, vec![40, 50]);
        assert_eq!((stats.cpu.usage.user, stats.cpu.usage.kernel), (20_000_000, 10_000_000));
        assert_eq!(stats.cpu.throttling.throttled_periods, 3);
        assert_eq!(stats.memory.cache, 4096);
        assert_eq!(
            stats.memory.usage,
            MemoryEntry { limit: 67108864, usage: 12288, max: 20000, failcnt: 2 },
            "usage from the memory files"
        );
        assert_eq!(stats.memory.swap, MemoryEntry::default(), "no swap accounting: empty");
        assert_eq!(stats.memory.raw.get("rss"), Some(&8192));
        assert_eq!((stats.pids.current, stats.pids.limit), (3, 0));
    }
}
