//! `update`: change the resource limits of a live container's cgroup, from runc's flags or
//! from a LinuxResources JSON (`-r FILE`, `-r -` for stdin), which then replaces the flags,
//! as with runc. Only the values given are written.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::container::{Container, RuncStatus};
use super::{io_err, RuncError};
use crate::cgroups::CgroupLimits;

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// A LinuxResources JSON file, or '-' for stdin; the other options are then ignored.
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// blkio weight, 10 to 1000.
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: unlimited).
    #[arg(long = "cpu-quota", allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs to use ("0-2,4").
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g, t, p; -1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// Soft memory limit in bytes.
    #[arg(long = "memory-reservation", allow_negative_numbers = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes (-1: unlimited swap).
    #[arg(long = "memory-swap", allow_negative_numbers = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of processes (0 or less: unlimited).
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

pub(super) fn update(root: &Path, args: &UpdateArgs) -> Result<(), RuncError> {
    let c = Container::load(root, &args.id)?;
    if matches!(c.status, RuncStatus::Stopped | RuncStatus::Creating) {
        return Err(RuncError::NotRunning);
    }
    let limits = match &args.resources {
        Some(path) => from_json(path)?,
        None => from_flags(args)?,
    };
    if let Some(blkio) = limits.blkio_weight.filter(|w| !(10..=1000).contains(w)) {
        return Err(RuncError::BadConfig(format!("invalid blkio weight {blkio}: must be from 10 to 1000")));
    }
    let cgroup = c.cgroup()?.ok_or(RuncError::NoCgroup)?;
    let path = c.rec.record.cgroups_path.clone().unwrap_or_default();
    cgroup.update(&limits).map_err(|e| RuncError::Cgroup { path, source: Box::new(e) })?;
    tracing::debug!(id = %args.id, ?limits, "updated container resources");
    Ok(())
}

fn from_json(path: &Path) -> Result<CgroupLimits, RuncError> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io_err("cannot read resources from", "stdin"))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(io_err("cannot read resources file", path))?
    };
    let resources: LinuxResources = serde_json::from_str(&text)
        .map_err(|e| RuncError::BadConfig(format!("invalid resources in {}: {e}", path.display())))?;
    Ok(CgroupLimits::from_spec(Some(&resources)))
}

fn from_flags(args: &UpdateArgs) -> Result<CgroupLimits, RuncError> {
    let bytes = |flag: &str, value: &Option<String>| value.as_deref().map(|v| parse_bytes(flag, v)).transpose();
    Ok(CgroupLimits {
        cpu_shares: args.cpu_shares,
        cpu_quota: args.cpu_quota,
        cpu_period: args.cpu_period,
        cpuset_cpus: args.cpuset_cpus.clone(),
        cpuset_mems: args.cpuset_mems.clone(),
        memory_limit: bytes("memory", &args.memory)?,
        memory_swap: bytes("memory-swap", &args.memory_swap)?,
        memory_reservation: bytes("memory-reservation", &args.memory_reservation)?,
        pids_limit: args.pids_limit,
        blkio_weight: args.blkio_weight,
        ..Default::default()
    })
}

/// runc's sizes (docker's RAMInBytes): "-1", or a number with an optional binary suffix
/// (k, m, g, t, p; an "i" and a "b" may follow), "512m", "1.5g", "1024".
fn parse_bytes(flag: &str, raw: &str) -> Result<i64, RuncError> {
    let invalid = || RuncError::BadConfig(format!("invalid value for {flag}: {raw:?}"));
    if raw == "-1" {
        return Ok(-1);
    }
    let lower = raw.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let lower = lower.strip_suffix('i').unwrap_or(lower);
    let (number, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        Some('p') => (&lower[..lower.len() - 1], 50),
        _ => (lower, 0),
    };
    let number = number.trim_end();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = value * (1u64 << shift) as f64;
    if !(0.0..9.2e18).contains(&bytes) {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_bytes("m", "-1").unwrap(), -1);
        assert_eq!(parse_bytes("m", "1024").unwrap(), 1024);
        assert_eq!(parse_bytes("m", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("m", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("m", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("m", "4k").unwrap(), 4096);
        assert!(parse_bytes("m", "").is_err());
        assert!(parse_bytes("m", "-5").is_err());
        assert!(parse_bytes("m", "12x").is_err());
    }
}
