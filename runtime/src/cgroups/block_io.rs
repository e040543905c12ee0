//! Per-device block I/O limits (`linux.resources.blockIO`: weightDevice and the four
//! throttles): v1's blkio.*_device files, one write per device; v2's io.max (one line per
//! device with every limit) and io.bfq.weight / io.weight.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use super::{write_file, CgroupError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThrottleKind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl ThrottleKind {
    fn v1_file(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "blkio.throttle.read_bps_device",
            ThrottleKind::WriteBps => "blkio.throttle.write_bps_device",
            ThrottleKind::ReadIops => "blkio.throttle.read_iops_device",
            ThrottleKind::WriteIops => "blkio.throttle.write_iops_device",
        }
    }

    fn v2_key(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "rbps",
            ThrottleKind::WriteBps => "wbps",
            ThrottleKind::ReadIops => "riops",
            ThrottleKind::WriteIops => "wiops",
        }
    }
}

/// A rate limit on device major:minor (bytes or operations per second; 0 removes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub kind: ThrottleKind,
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

/// A weight on device major:minor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
}

/// The per-device part of a LinuxBlockIo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceLimits {
    pub weights: Vec<WeightDevice>,
    pub throttles: Vec<Throttle>,
}

impl DeviceLimits {
    pub fn from_spec(block_io: Option<&LinuxBlockIo>) -> DeviceLimits {
        let Some(b) = block_io else {
            return DeviceLimits::default();
        };
        let weights = b
            .weight_device()
            .iter()
            .flatten()
            .map(|w| WeightDevice {
                major: w.major(),
                minor: w.minor(),
                weight: w.weight(),
                leaf_weight: w.leaf_weight(),
            })
            .collect();
        let mut throttles = Vec::new();
        let lists: [(ThrottleKind, &Option<Vec<LinuxThrottleDevice>>); 4] = [
            (ThrottleKind::ReadBps, b.throttle_read_bps_device()),
            (ThrottleKind::WriteBps, b.throttle_write_bps_device()),
            (ThrottleKind::ReadIops, b.throttle_read_iops_device()),
            (ThrottleKind::WriteIops, b.throttle_write_iops_device()),
        ];
        for (kind, list) in lists {
            throttles.extend(list.iter().flatten().map(|t| Throttle {
                kind,
                major: t.major(),
                minor: t.minor(),
                rate: t.rate(),
            }));
        }
        DeviceLimits { weights, throttles }
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.throttles.is_empty()
    }

    pub(super) fn apply_v1(&self, dir: &Path) -> Result<(), CgroupError> {
        let bfq = dir.join("blkio.bfq.weight_device").exists();
        for w in &self.weights {
            if let Some(weight) = w.weight {
                let file = if bfq { "blkio.bfq.weight_device" } else { "blkio.weight_device" };
                write_file(&dir.join(file), &format!("{}:{} {weight}", w.major, w.minor))?;
            }
            if let Some(leaf) = w.leaf_weight {
                write_file(&dir.join("blkio.leaf_weight_device"), &format!("{}:{} {leaf}", w.major, w.minor))?;
            }
        }
        for t in &self.throttles {
            write_file(&dir.join(t.kind.v1_file()), &format!("{}:{} {}", t.major, t.minor, t.rate))?;
        }
        Ok(())
    }

    pub(super) fn apply_v2(&self, leaf: &Path) -> Result<(), CgroupError> {
        let bfq = leaf.join("io.bfq.weight").exists();
        for w in &self.weights {
            let Some(weight) = w.weight else { continue };
            let (file, value) =
                if bfq { ("io.bfq.weight", weight.into()) } else { ("io.weight", v1_to_v2_weight(weight)) };
            write_file(&leaf.join(file), &format!("{}:{} {value}", w.major, w.minor))?;
        }
        for line in io_max_lines(&self.throttles) {
            write_file(&leaf.join("io.max"), &line)?;
        }
        Ok(())
    }
}

/// blkio's [10, 1000] onto io.weight's [1, 10000], as runc maps it.
pub(super) fn v1_to_v2_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// One io.max line per device ("8:0 rbps=1048576 wiops=100"); a rate of 0 is "max".
fn io_max_lines(throttles: &[Throttle]) -> Vec<String> {
    let mut per_device: BTreeMap<(i64, i64), BTreeMap<ThrottleKind, u64>> = BTreeMap::new();
    for t in throttles {
        per_device.entry((t.major, t.minor)).or_default().insert(t.kind, t.rate);
    }
    per_device
        .into_iter()
        .map(|((major, minor), limits)| {
            let fields: Vec<String> = limits
                .into_iter()
                .map(|(kind, rate)| match rate {
                    0 => format!("{}=max", kind.v2_key()),
                    rate => format!("{}={rate}", kind.v2_key()),
                })
                .collect();
            format!("{major}:{minor} {}", fields.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(kind: ThrottleKind, minor: i64, rate: u64) -> Throttle {
        Throttle { kind, major: 8, minor, rate }
    }

    #[test]
    fn io_max_groups_by_device() {
        let lines = io_max_lines(&[
            throttle(ThrottleKind::WriteIops, 0, 100),
            throttle(ThrottleKind::ReadBps, 0, 1 << 20),
            throttle(ThrottleKind::ReadBps, 16, 0),
        ]);
        assert_eq!(lines, ["8:0 rbps=1048576 wiops=100", "8:16 rbps=max"]);
    }

    #[test]
    fn v1_and_v2_files() {
        let limits = DeviceLimits {
            weights: vec![WeightDevice { major: 8, minor: 0, weight: Some(500), leaf_weight: None }],
            throttles: vec![throttle(ThrottleKind::ReadBps, 0, 4096)],
        };
        let dir = tempfile::tempdir().unwrap();
        limits.apply_v1(dir.path()).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("blkio.weight_device"), "8:0 500");
        assert_eq!(read("blkio.throttle.read_bps_device"), "8:0 4096");
        limits.apply_v2(dir.path()).unwrap();
        assert_eq!(read("io.weight"), format!("8:0 {}", v1_to_v2_weight(500)));
        assert_eq!(read("io.max"), "8:0 rbps=4096");
    }
}
