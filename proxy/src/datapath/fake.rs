//! An in-memory datapath for tests: records what it was asked to program.

use std::sync::{Arc, Mutex, MutexGuard};

use super::plan::{plan, plan_delta, Plan};
use super::{Datapath, SyncStats};
use crate::error::ProxyError;
use crate::table::{ServiceTable, TableDelta};
use nodelet_ebpf::ServiceEntry;

/// Clones share one state, so a test keeps a handle while the reconciler owns
/// the datapath.
#[derive(Clone, Debug, Default)]
pub struct FakeDatapath {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    table: ServiceTable,
    applies: usize,
    deltas: usize,
    writes: usize,
}

impl FakeDatapath {
    pub fn new() -> FakeDatapath {
        FakeDatapath::default()
    }

    /// What is programmed now.
    pub fn table(&self) -> ServiceTable {
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

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread cannot leave the table half-updated in a
        // way that matters to another assertion: keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Datapath for FakeDatapath {
    fn apply(&mut self, desired: &ServiceTable) -> Result<SyncStats, ProxyError> {
        let mut state = self.lock();
        state.applies += 1;
        let plan = plan(&state.table, desired);
        Ok(state.write(plan))
    }

    fn apply_delta(&mut self, delta: &TableDelta) -> Result<SyncStats, ProxyError> {
        let mut state = self.lock();
        state.deltas += 1;
        let plan = plan_delta(&state.table, delta);
        Ok(state.write(plan))
    }
}

impl FakeState {
    fn write(&mut self, plan: Plan<'_, ServiceEntry>) -> SyncStats {
        let stats = SyncStats { upserted: plan.upserts.len(), removed: plan.removals.len(), unchanged: plan.unchanged };
        for frontend in &plan.removals {
            self.table.remove(frontend);
        }
        for (frontend, entry) in plan.upserts {
            self.table.insert(frontend, entry.clone());
        }
        self.writes += stats.upserted + stats.removed;
        stats
    }
}
