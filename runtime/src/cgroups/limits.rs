//! The resource limits nodelet applies, taken from an OCI spec's `linux.resources`.

use oci_spec::runtime::LinuxResources;

/// Limits in OCI/v1 units; each backend converts (e.g. shares -> cpu.weight on v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; negative means unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Bytes; negative means unlimited.
    pub memory_limit: Option<i64>,
    /// Zero or negative means unlimited (as in the OCI spec).
    pub pids_limit: Option<i64>,
}

impl CgroupLimits {
    pub fn from_spec(resources: Option<&LinuxResources>) -> Self {
        let Some(res) = resources else {
            return Self::default();
        };
        let cpu = res.cpu().as_ref();
        CgroupLimits {
            cpu_shares: cpu.and_then(|c| c.shares()),
            cpu_quota: cpu.and_then(|c| c.quota()),
            cpu_period: cpu.and_then(|c| c.period()),
            memory_limit: res.memory().as_ref().and_then(|m| m.limit()),
            pids_limit: res.pids().as_ref().map(|p| p.limit()),
        }
    }

    pub(crate) fn needs_cpu(&self) -> bool {
        self.cpu_shares.is_some() || self.cpu_quota.is_some() || self.cpu_period.is_some()
    }
}
