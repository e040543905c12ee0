//! In-memory datapaths for tests, socket and ingress alike: they record what they were
//! asked to program.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nodelet_ebpf::{Frontend, NodePortService, ServiceEntry};

use super::plan::{plan, plan_delta, Plan};
use super::{Datapath, IngressDatapath, SyncStats};
use crate::error::ProxyError;
use crate::table::{Delta, IngressTable, ServiceTable};

/// Clones share one state, so a test keeps a handle while the reconciler owns the
/// datapath. `V` is what a frontend is programmed with.
#[derive(Debug)]
pub struct Fake<V> {
    state: Arc<Mutex<FakeState<V>>>,
}

/// The fake socket load-balancer.
pub type FakeDatapath = Fake<ServiceEntry>;
/// The fake ingress (tc) load-balancer.
pub type FakeIngress = Fake<NodePortService>;

#[derive(Debug)]
struct FakeState<V> {
    table: BTreeMap<Frontend, V>,
    applies: usize,
    deltas: usize,
    writes: usize,
}

impl<V> Clone for Fake<V> {
    fn clone(&self) -> Self {
        Fake { state: self.state.clone() }
    }
}

impl<V> Default for Fake<V> {
    fn default() -> Self {
        let state = FakeState { table: BTreeMap::new(), applies: 0, deltas: 0, writes: 0 };
        Fake { state: Arc::new(Mutex::new(state)) }
    }
}

impl<V: Clone + PartialEq> Fake<V> {
    pub fn new() -> Fake<V> {
        Fake::default()
    }

    /// What is programmed now.
    pub fn table(&self) -> BTreeMap<Frontend, V> {
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

    fn lock(&self) -> MutexGuard<'_, FakeState<V>> {
        // A panicking test thread cannot leave the table half-updated in a way that matters
        // to another assertion: keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply_full(&self, desired: &BTreeMap<Frontend, V>) -> SyncStats {
        let mut state = self.lock();
        state.applies += 1;
        let plan = plan(&state.table, desired);
        state.write(plan)
    }

    fn apply_changes(&self, delta: &Delta<V>) -> SyncStats {
        let mut state = self.lock();
        state.deltas += 1;
        let plan = plan_delta(&state.table, delta);
        state.write(plan)
    }
}

impl<V: Clone> FakeState<V> {
    fn write(&mut self, plan: Plan<'_, V>) -> SyncStats {
        let stats = SyncStats { upserted: plan.upserts.len(), removed: plan.removals.len(), unchanged: plan.unchanged };
        for frontend in &plan.removals {
            self.table.remove(frontend);
        }
        for (frontend, value) in plan.upserts {
            self.table.insert(frontend, value.clone());
        }
        self.writes += stats.upserted + stats.removed;
        stats
    }
}

impl Datapath for FakeDatapath {
    fn apply(&mut self, desired: &ServiceTable) -> Result<SyncStats, ProxyError> {
        Ok(self.apply_full(desired))
    }

    fn apply_delta(&mut self, delta: &Delta<ServiceEntry>) -> Result<SyncStats, ProxyError> {
        Ok(self.apply_changes(delta))
    }
}

impl IngressDatapath for FakeIngress {
    fn apply(&mut self, desired: &IngressTable) -> Result<SyncStats, ProxyError> {
        Ok(self.apply_full(desired))
    }

    fn apply_delta(&mut self, delta: &Delta<NodePortService>) -> Result<SyncStats, ProxyError> {
        Ok(self.apply_changes(delta))
    }
}
