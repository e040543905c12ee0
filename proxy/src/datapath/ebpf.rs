//! The real datapath: the nodelet-ebpf socket load-balancer.

use nodelet_ebpf::{CgroupAttachment, EbpfError, Frontend, ServiceEntry, SockLb};

use super::plan::{plan, plan_delta, Plan};
use super::{Datapath, SyncStats};
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::table::{ServiceTable, TableDelta};

/// The socket load-balancer (TCP, UDP and SCTP frontends alike, IPv4 and IPv6: each
/// frontend goes to its family's maps, and is served by that family's hooks), attached to the
/// configured cgroup for as long as this value lives, or for good when pinned
/// (`ProxyConfig::pin_dir`).
pub struct EbpfDatapath {
    // Field order: detach before the programs and maps are dropped.
    _attachment: CgroupAttachment,
    lb: SockLb,
    programmed: ServiceTable,
}

impl EbpfDatapath {
    /// Load the programs (maps of `cfg.map_sizes`) and attach them to `cfg.attach_cgroup`. When pinned maps are
    /// reused, what they hold is read back first: the first apply then writes only the
    /// frontends that differ, and connections to the others never see a change.
    pub fn new(cfg: &ProxyConfig) -> Result<EbpfDatapath, ProxyError> {
        cfg.validate()?;
        let mut lb = match &cfg.pin_dir {
            Some(pin_dir) => SockLb::load_pinned(cfg.map_sizes, pin_dir),
            None => SockLb::load_with(cfg.map_sizes),
        }
        .map_err(ProxyError::Load)?;
        let attachment = lb
            .attach(&cfg.attach_cgroup)
            .map_err(|source| ProxyError::Attach { path: cfg.attach_cgroup.clone(), source })?;
        let mut datapath = EbpfDatapath { _attachment: attachment, lb, programmed: ServiceTable::new() };
        datapath.programmed = datapath.read_back()?;
        if !datapath.programmed.is_empty() {
            tracing::info!(frontends = datapath.programmed.len(), "resuming from the pinned service table");
        }
        Ok(datapath)
    }

    /// What the maps hold now, read back from the kernel.
    pub fn read_back(&mut self) -> Result<ServiceTable, ProxyError> {
        let services = self.lb.maps().services().map_err(ProxyError::ReadBack)?;
        Ok(services.into_iter().collect())
    }
}

impl Datapath for EbpfDatapath {
    fn apply(&mut self, desired: &ServiceTable) -> Result<SyncStats, ProxyError> {
        let plan = plan(&self.programmed, desired);
        self.write(plan)
    }

    fn apply_delta(&mut self, delta: &TableDelta) -> Result<SyncStats, ProxyError> {
        let plan = plan_delta(&self.programmed, delta);
        self.write(plan)
    }
}

impl EbpfDatapath {
    /// Write the plan to the maps, recording what was written.
    fn write(&mut self, plan: Plan<'_, ServiceEntry>) -> Result<SyncStats, ProxyError> {
        let attempted = plan.upserts.len() + plan.removals.len();
        let mut failures: Vec<(Frontend, EbpfError)> = Vec::new();
        let mut maps = self.lb.maps();
        let mut stats = SyncStats { unchanged: plan.unchanged, ..SyncStats::default() };
        // Keep going past a failed frontend: one bad service must not hold
        // the others back; the failed ones are retried on the next apply.
        for frontend in plan.removals {
            match maps.remove_service(&frontend) {
                Ok(()) => {
                    self.programmed.remove(&frontend);
                    stats.removed += 1;
                }
                Err(error) => failures.push((frontend, error)),
            }
        }
        for (frontend, entry) in plan.upserts {
            match maps.upsert_service(frontend, entry) {
                Ok(()) => {
                    self.programmed.insert(frontend, entry.clone());
                    stats.upserted += 1;
                }
                Err(error) => failures.push((frontend, error)),
            }
        }
        let failed = failures.len();
        match failures.into_iter().next() {
            None => Ok(stats),
            Some((frontend, source)) => Err(ProxyError::Program { frontend, failed, attempted, source }),
        }
    }
}
