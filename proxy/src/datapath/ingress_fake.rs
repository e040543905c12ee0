//! An in-memory ingress datapath for tests: records what it was asked to program.

use std::sync::{Arc, Mutex, MutexGuard};

use nodelet_ebpf::NodePortService;

use super::plan::{plan, plan_delta, Plan};
use super::{IngressDatapath, SyncStats};
use crate::error::ProxyError;
use crate::table::{IngressDelta, IngressTable};

/// Clones share one state, so a test keeps a handle while the reconciler owns the
/// datapath.
#[derive(Clone, Debug, Default)]
pub struct FakeIngress {
    state: Arc<Mutex<FakeIngressState>>,
}

#[derive(Debug, Default)]
struct FakeIngressState {
    table: IngressTable,
    applies: usize,
    deltas: usize,
    writes: usize,
}

impl FakeIngress {
    pub fn new() -> FakeIngress {
        FakeIngress::default()
    }

    /// What is programmed now.
    pub fn table(&self) -> IngressTable {
        self.lock().table.clone()
    }

    /// How many times `apply` ran.
    pub fn applies(&self) -> usize {
        self.lock().applies
    }

    /// How many times `apply_delta` ran.
    pub fn deltas(&self) -> usize {
        self.lock().deltas
    }

    /// How many frontends were written or removed over all applies.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    fn lock(&self) -> MutexGuard<'_, FakeIngressState> {
        // A panicking test thread leaves nothing half-updated that matters: keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl IngressDatapath for FakeIngress {
    fn apply(&mut self, desired: &IngressTable) -> Result<SyncStats, ProxyError> {
        let mut state = self.lock();
        state.applies += 1;
        let plan = plan(&state.table, desired);
        Ok(state.write(plan))
    }

    fn apply_delta(&mut self, delta: &IngressDelta) -> Result<SyncStats, ProxyError> {
        let mut state = self.lock();
        state.deltas += 1;
        let plan = plan_delta(&state.table, delta);
        Ok(state.write(plan))
    }
}

impl FakeIngressState {
    fn write(&mut self, plan: Plan<'_, NodePortService>) -> SyncStats {
        let stats = SyncStats { upserted: plan.upserts.len(), removed: plan.removals.len(), unchanged: plan.unchanged };
        for frontend in &plan.removals {
            self.table.remove(frontend);
        }
        for (frontend, service) in plan.upserts {
            self.table.insert(frontend, service.clone());
        }
        self.writes += stats.upserted + stats.removed;
        stats
    }
}
