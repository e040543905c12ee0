//! A datapath that refuses every update, for error-path tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Datapath, SyncStats};
use crate::error::ProxyError;
use crate::table::ServiceTable;

/// Fails every `apply`; clones share the attempt counter.
#[derive(Clone, Debug, Default)]
pub struct FailingDatapath {
    attempts: Arc<AtomicUsize>,
}

impl FailingDatapath {
    pub fn new() -> FailingDatapath {
        FailingDatapath::default()
    }

    /// How many times `apply` was called.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Datapath for FailingDatapath {
    fn apply(&mut self, _desired: &ServiceTable) -> Result<SyncStats, ProxyError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(ProxyError::DatapathRefused { reason: String::from("failing datapath refuses every update") })
    }
}
