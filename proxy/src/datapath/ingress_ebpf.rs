//! The real ingress datapath: the tc programs of `nodelet_ebpf::NodePortLb` on the external
//! interfaces (`--nodeport-devices`) and the pod bridge.

use nodelet_ebpf::{Frontend, NodePortError, NodePortLb, NodePortMapSizes, NodePortService, TcAttachment};

use super::plan::{plan, plan_delta, Plan};
use super::{IngressDatapath, SyncStats};
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::table::{IngressDelta, IngressTable};

/// The tc load-balancer of traffic entering the node, attached for as long as this value
/// lives. Not pinned: a new one starts with empty maps, so conntrack starts empty and
/// flows that were balanced before pick their backend again.
pub struct EbpfIngress {
    // Field order: detach before the programs and maps are dropped.
    attachment: Option<TcAttachment>,
    lb: NodePortLb,
    programmed: IngressTable,
}

impl EbpfIngress {
    /// The ingress datapath `cfg` asks for: `None` when `cfg.nodeport_devices` is empty (the
    /// ingress datapath is off), else loaded and attached to those devices and
    /// `cfg.pod_bridge`, in the calling thread's network namespace.
    pub fn from_config(cfg: &ProxyConfig) -> Result<Option<EbpfIngress>, ProxyError> {
        if cfg.nodeport_devices.is_empty() {
            return Ok(None);
        }
        cfg.validate_devices()?;
        let devices: Vec<&str> = cfg.nodeport_devices.iter().map(String::as_str).collect();
        EbpfIngress::new(&devices, &cfg.pod_bridge, NodePortMapSizes::default()).map(Some)
    }

    /// Load the programs (maps of `sizes`) and attach them: `np4_ingress` to `devices`,
    /// `np4_reply` to `pod_bridge`; all or none.
    pub fn new(devices: &[&str], pod_bridge: &str, sizes: NodePortMapSizes) -> Result<EbpfIngress, ProxyError> {
        let mut lb = NodePortLb::load_with(sizes).map_err(ProxyError::LoadIngress)?;
        let attachment = lb.attach(devices, &[pod_bridge]).map_err(|source| ProxyError::AttachIngress {
            devices: devices.join(","),
            bridge: pod_bridge.to_owned(),
            source,
        })?;
        tracing::info!(devices = %devices.join(","), bridge = pod_bridge, "ingress datapath attached");
        Ok(EbpfIngress { attachment: Some(attachment), lb, programmed: IngressTable::new() })
    }

    /// What the maps hold now, read back from the kernel.
    pub fn read_back(&self) -> Result<IngressTable, ProxyError> {
        let services = self.lb.services().map_err(ProxyError::ReadBackIngress)?;
        Ok(services.into_iter().collect())
    }

    /// The load-balancer, for diagnostics (its conntrack).
    pub fn lb(&self) -> &NodePortLb {
        &self.lb
    }

    /// Write the plan to the maps, recording what was written.
    fn write(&mut self, plan: Plan<'_, NodePortService>) -> Result<SyncStats, ProxyError> {
        let attempted = plan.upserts.len() + plan.removals.len();
        let mut failures: Vec<(Frontend, NodePortError)> = Vec::new();
        let mut stats = SyncStats { unchanged: plan.unchanged, ..SyncStats::default() };
        // Keep going past a failed frontend: the failed ones are retried on the next apply.
        // Each `set_service` swaps a frontend whole, so none is ever half-programmed.
        for frontend in plan.removals {
            match self.lb.remove_service(&frontend) {
                Ok(()) => {
                    self.programmed.remove(&frontend);
                    stats.removed += 1;
                }
                Err(error) => failures.push((frontend, error)),
            }
        }
        for (frontend, service) in plan.upserts {
            // Forget it first: if the write fails, the next full apply writes it again.
            self.programmed.remove(&frontend);
            match self.lb.set_service(&frontend, service) {
                Ok(()) => {
                    self.programmed.insert(frontend, service.clone());
                    stats.upserted += 1;
                }
                Err(error) => failures.push((frontend, error)),
            }
        }
        let failed = failures.len();
        match failures.into_iter().next() {
            None => Ok(stats),
            Some((frontend, source)) => Err(ProxyError::ProgramIngress { frontend, failed, attempted, source }),
        }
    }
}

impl IngressDatapath for EbpfIngress {
    fn apply(&mut self, desired: &IngressTable) -> Result<SyncStats, ProxyError> {
        let plan = plan(&self.programmed, desired);
        self.write(plan)
    }

    fn apply_delta(&mut self, delta: &IngressDelta) -> Result<SyncStats, ProxyError> {
        let plan = plan_delta(&self.programmed, delta);
        self.write(plan)
    }
}

impl Drop for EbpfIngress {
    /// Detach, saying so when it fails (the links go with the process anyway).
    fn drop(&mut self) {
        if let Some(attachment) = self.attachment.take() {
            match attachment.detach() {
                Ok(()) => tracing::info!("ingress datapath detached"),
                Err(error) => {
                    tracing::warn!(error = %crate::sync::error_chain(&error), "detaching the ingress datapath")
                }
            }
        }
    }
}
