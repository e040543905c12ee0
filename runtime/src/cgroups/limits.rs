//! The resource limits nodelet applies, taken from an OCI spec's `linux.resources` (at create)
//! or from `nodelet-runc update` (on a live container: only the fields given are written).

use std::collections::BTreeMap;

use oci_spec::runtime::{Linux, LinuxResources};

use super::block_io::DeviceLimits;
use super::devices::{self, DeviceRule};

/// Limits in OCI/v1 units; each backend converts (e.g. shares -> cpu.weight on v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; negative means unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// CPUs and memory nodes, in the kernel's list format ("0-2,4").
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes; negative means unlimited.
    pub memory_limit: Option<i64>,
    /// Memory plus swap, in bytes (v1's memsw); negative means unlimited.
    pub memory_swap: Option<i64>,
    /// Soft limit in bytes (v1's soft_limit_in_bytes, v2's memory.low).
    pub memory_reservation: Option<i64>,
    /// Zero or negative means unlimited (as in the OCI spec).
    pub pids_limit: Option<i64>,
    /// blkio weight, 10 to 1000.
    pub blkio_weight: Option<u16>,
    /// Per-device weights and throttles.
    pub blkio_devices: DeviceLimits,
    /// v1 only: 0 to 100.
    pub memory_swappiness: Option<u64>,
    /// v1 only: the OOM killer leaves the cgroup alone (its tasks wait for memory instead).
    pub disable_oom_killer: Option<bool>,
    /// Bytes per page size ("2MB" -> limit).
    pub hugepage_limits: BTreeMap<String, i64>,
    /// v1 net_cls.classid.
    pub net_class_id: Option<u32>,
    /// v1 net_prio.ifpriomap: interface -> priority.
    pub net_priorities: BTreeMap<String, u32>,
    /// v2 only: interface file -> value, written as they are.
    pub unified: BTreeMap<String, String>,
    /// Device access rules in the order to apply them (empty: the parent's access).
    pub devices: Vec<DeviceRule>,
}

impl CgroupLimits {
    /// Everything `linux` asks of the cgroup at create: its resources and device rules.
    pub fn from_linux(linux: Option<&Linux>) -> Self {
        CgroupLimits {
            devices: devices::rules_for(linux),
            ..Self::from_spec(linux.and_then(|l| l.resources().as_ref()))
        }
    }

    /// The values of a LinuxResources document (device rules aside: they come with the
    /// container's devices, see [`CgroupLimits::from_linux`]).
    pub fn from_spec(resources: Option<&LinuxResources>) -> Self {
        let Some(res) = resources else {
            return Self::default();
        };
        let cpu = res.cpu().as_ref();
        let memory = res.memory().as_ref();
        CgroupLimits {
            cpu_shares: cpu.and_then(|c| c.shares()),
            cpu_quota: cpu.and_then(|c| c.quota()),
            cpu_period: cpu.and_then(|c| c.period()),
            cpuset_cpus: cpu.and_then(|c| c.cpus().clone()).filter(|s| !s.is_empty()),
            cpuset_mems: cpu.and_then(|c| c.mems().clone()).filter(|s| !s.is_empty()),
            memory_limit: memory.and_then(|m| m.limit()),
            memory_swap: memory.and_then(|m| m.swap()),
            memory_reservation: memory.and_then(|m| m.reservation()),
            pids_limit: res.pids().as_ref().map(|p| p.limit()),
            blkio_weight: res.block_io().as_ref().and_then(|b| b.weight()),
            blkio_devices: DeviceLimits::from_spec(res.block_io().as_ref()),
            memory_swappiness: memory.and_then(|m| m.swappiness()),
            disable_oom_killer: memory.and_then(|m| m.disable_oom_killer()),
            hugepage_limits: res
                .hugepage_limits()
                .iter()
                .flatten()
                .map(|h| (h.page_size().clone(), h.limit()))
                .collect(),
            net_class_id: res.network().as_ref().and_then(|n| n.class_id()),
            net_priorities: res
                .network()
                .as_ref()
                .and_then(|n| n.priorities().as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.name().clone(), p.priority()))
                .collect(),
            unified: res.unified().clone().unwrap_or_default().into_iter().collect(),
            devices: Vec::new(),
        }
    }

    pub(crate) fn needs_cpu(&self) -> bool {
        self.cpu_shares.is_some() || self.cpu_quota.is_some() || self.cpu_period.is_some()
    }

    pub(crate) fn needs_cpuset(&self) -> bool {
        self.cpuset_cpus.is_some() || self.cpuset_mems.is_some()
    }

    pub(crate) fn needs_memory(&self) -> bool {
        self.memory_limit.is_some()
            || self.memory_swap.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swappiness.is_some()
            || self.disable_oom_killer.is_some()
    }

    pub(crate) fn needs_io(&self) -> bool {
        self.blkio_weight.is_some() || !self.blkio_devices.is_empty()
    }
}
