//! Reading a container's usage from its cgroup2 directory, converted to runc's v1-shaped
//! stats as runc's fs2 driver does (usec to nsec, swap counted with memory, io.stat split
//! into bytes and operations).

use std::path::Path;

use super::stats::{
    hugepage_sizes, parse_flat_keyed, parse_list, Blkio, BlkioEntry, Cpu, CpuSet, Hugetlb, Memory, MemoryEntry, Pids,
    Stats,
};
use super::CgroupError;

/// Files of controllers not enabled for the cgroup are absent: their part stays empty.
pub(super) fn stats(dir: &Path) -> Result<Stats, CgroupError> {
    let mut stats = Stats { cpu: cpu(dir)?, ..Default::default() };
    if let Some(cpus) = optional(&dir.join("cpuset.cpus.effective"))? {
        let mems = optional(&dir.join("cpuset.mems.effective"))?.unwrap_or_default();
        stats.cpuset = CpuSet { cpus: parse_list(&cpus), mems: parse_list(&mems), ..Default::default() };
    }
    if let Some(stat) = optional(&dir.join("memory.stat"))? {
        stats.memory = memory(dir, &stat)?;
    }
    if let Some(current) = optional(&dir.join("pids.current"))? {
        let limit = optional(&dir.join("pids.max"))?.unwrap_or_default();
        stats.pids = Pids { current: number(&current), limit: number(&limit) };
    }
    if let Some(io) = optional(&dir.join("io.stat"))? {
        stats.blkio = blkio(&io);
    }
    for size in hugepage_sizes() {
        let Some(current) = optional(&dir.join(format!("hugetlb.{size}.current")))? else {
            continue;
        };
        let events = optional(&dir.join(format!("hugetlb.{size}.events")))?.unwrap_or_default();
        let failcnt = parse_flat_keyed(&events).get("max").copied().unwrap_or(0);
        stats.hugetlb.insert(size, Hugetlb { usage: number(&current), max: 0, failcnt });
    }
    Ok(stats)
}

/// cpu.stat is always there (the cpu controller's basic counters are core).
fn cpu(dir: &Path) -> Result<Cpu, CgroupError> {
    let stat = parse_flat_keyed(&optional(&dir.join("cpu.stat"))?.unwrap_or_default());
    let get = |key: &str| stat.get(key).copied().unwrap_or(0);
    let mut cpu = Cpu::default();
    cpu.usage.total = get("usage_usec") * 1000;
    cpu.usage.user = get("user_usec") * 1000;
    cpu.usage.kernel = get("system_usec") * 1000;
    cpu.throttling.periods = get("nr_periods");
    cpu.throttling.throttled_periods = get("nr_throttled");
    cpu.throttling.throttled_time = get("throttled_usec") * 1000;
    Ok(cpu)
}

fn memory(dir: &Path, stat: &str) -> Result<Memory, CgroupError> {
    let raw = parse_flat_keyed(stat);
    let events = parse_flat_keyed(&optional(&dir.join("memory.events"))?.unwrap_or_default());
    let usage = MemoryEntry {
        limit: limit(&optional(&dir.join("memory.max"))?.unwrap_or_default()),
        usage: number(&optional(&dir.join("memory.current"))?.unwrap_or_default()),
        max: number(&optional(&dir.join("memory.peak"))?.unwrap_or_default()),
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // v1's memsw counts memory and swap together; runc reports v2's the same way.
    let swap = match optional(&dir.join("memory.swap.current"))? {
        Some(current) => MemoryEntry {
            limit: match limit(&optional(&dir.join("memory.swap.max"))?.unwrap_or_default()) {
                u64::MAX => u64::MAX,
                swap => swap.saturating_add(usage.limit),
            },
            usage: number(&current) + usage.usage,
            max: 0,
            failcnt: 0,
        },
        None => MemoryEntry::default(),
    };
    Ok(Memory { cache: raw.get("file").copied().unwrap_or(0), usage, swap, raw, ..Default::default() })
}

/// "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device.
fn blkio(text: &str) -> Blkio {
    let mut blkio = Blkio::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else { continue };
        for (key, value) in fields.filter_map(|f| f.split_once('=')) {
            let value: u64 = value.parse().unwrap_or(0);
            let (list, op) = match key {
                "rbytes" => (&mut blkio.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut blkio.io_service_bytes_recursive, "Write"),
                "rios" => (&mut blkio.io_serviced_recursive, "Read"),
                "wios" => (&mut blkio.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry { major, minor, op: op.to_string(), value });
        }
    }
    blkio
}

/// "max" as u64::MAX, as runc reports an unlimited v2 limit.
fn limit(text: &str) -> u64 {
    match text.trim() {
        "max" => u64::MAX,
        n => n.parse().unwrap_or(0),
    }
}

fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

fn optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files_convert_to_runcs_stats() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, content: &str| std::fs::write(dir.path().join(name), content).unwrap();
        put("cpu.stat", "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n");
        put("memory.stat", "anon 100\nfile 50\n");
        put("memory.current", "150\n");
        put("memory.max", "1000\n");
        put("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        put("memory.swap.current", "10\n");
        put("memory.swap.max", "max\n");
        put("pids.current", "2\n");
        put("pids.max", "10\n");
        put("io.stat", "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n");
        let stats = stats(dir.path()).unwrap();
        assert_eq!((stats.cpu.usage.total, stats.cpu.usage.user, stats.cpu.usage.kernel), (5000, 3000, 2000));
        assert_eq!(stats.cpu.throttling.throttled_time, 7000);
        assert_eq!(stats.memory.cache, 50);
        assert_eq!(stats.memory.usage, MemoryEntry { limit: 1000, usage: 150, max: 0, failcnt: 4 });
        assert_eq!(stats.memory.swap.usage, 160);
        assert_eq!(stats.memory.swap.limit, u64::MAX);
        assert_eq!((stats.pids.current, stats.pids.limit), (2, 10));
        assert_eq!(stats.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(stats.blkio.io_service_bytes_recursive[0].value, 4096);
        assert_eq!(stats.blkio.io_serviced_recursive[0].op, "Read");
    }
}
