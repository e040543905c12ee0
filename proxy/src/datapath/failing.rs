//! A datapath that refuses every update, for error-path tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Datapath, IngressDatapath, SyncStats};
use crate::error::ProxyError;
use crate::table::{IngressDelta, IngressTable, ServiceTable, TableDelta};

/// Fails every `apply` and `apply_delta`, as a [`Datapath`] and as an
/// [`IngressDatapath`]; clones share the attempt counter.
#[derive(Clone, Debug, Default)]
pub struct FailingDatapath {
    attempts: Arc<AtomicUsize>,
}

impl FailingDatapath {
    pub fn new() -> FailingDatapath {
        FailingDatapath::default()
    }

    /// How many times `apply` or `apply_delta` was called.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Datapath for FailingDatapath {
    fn apply(&mut self, _desired: &ServiceTable) -> Result<SyncStats, ProxyError> {
        self.refuse()
    }

    fn apply_delta(&mut self, _delta: &TableDelta) -> Result<SyncStats, ProxyError> {
        self.refuse()
    }
}

impl IngressDatapath for FailingDatapath {
    fn apply(&mut self, _desired: &IngressTable) -> Result<SyncStats, ProxyError> {
        self.refuse()
    }

    fn apply_delta(&mut self, _delta: &IngressDelta) -> Result<SyncStats, ProxyError> {
        self.refuse()
    }
}

impl FailingDatapath {
    fn refuse(&self) -> Result<SyncStats, ProxyError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(ProxyError::DatapathRefused { reason: String::from("failing datapath refuses every update") })
    }
}
