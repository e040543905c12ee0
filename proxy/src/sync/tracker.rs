//! Changes handed from the watch to the reconcile loop: merged per object while a sync
//! runs or waits, and a flag for what only a full rebuild covers (a relist, a new zone).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::table::Changes;

#[derive(Debug, Default)]
pub(crate) struct ChangeTracker {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    changes: Changes,
    full: bool,
}

/// What the loop takes from the tracker for one sync.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub changes: Changes,
    /// Rebuild everything from the objects.
    pub full: bool,
}

impl ChangeTracker {
    /// Record object changes and wake the loop.
    pub(crate) fn record(&self, change: impl FnOnce(&mut Changes)) {
        change(&mut self.lock().changes);
        self.wake.notify_one();
    }

    /// Ask for a full rebuild and wake the loop.
    pub(crate) fn request_full(&self) {
        self.lock().full = true;
        self.wake.notify_one();
    }

    /// Whether anything waits for a sync.
    pub(crate) fn has_pending(&self) -> bool {
        let pending = self.lock();
        pending.full || !pending.changes.is_empty()
    }

    /// Everything recorded so far, leaving the tracker empty.
    pub(crate) fn take(&self) -> Taken {
        let Pending { changes, full } = std::mem::take(&mut *self.lock());
        Taken { changes, full }
    }

    /// Until something is recorded (at once if something was since the last wait).
    pub(crate) async fn recorded(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The critical sections only move values: a panic cannot leave them half done.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_recorded_before_the_wait_wakes_it() {
        let tracker = ChangeTracker::default();
        assert!(!tracker.has_pending());
        let mut service = Service::default();
        service.metadata.namespace = Some("default".into());
        service.metadata.name = Some("web".into());
        tracker.record(|changes| changes.service_applied(Arc::new(service)));
        tokio::time::timeout(Duration::from_secs(2), tracker.recorded()).await.expect("woken");
        assert!(tracker.has_pending());
        let taken = tracker.take();
        assert_eq!((taken.changes.len(), taken.full), (1, false));
        assert!(!tracker.has_pending(), "taken");
        tracker.request_full();
        assert!(tracker.take().full);
    }
}
