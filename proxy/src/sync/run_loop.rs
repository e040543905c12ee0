//! The reconcile loop, paced as kube-proxy's BoundedFrequencyRunner paces its syncs: a
//! change after a quiet spell is synced at once (leading edge); changes that come within
//! `min_interval` of the last sync wait for it and go together; a failed sync is retried
//! with backoff; the whole table is rebuilt from all objects at start, after a relist or a
//! new node topology, and every `full_resync`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tracker::{ChangeTracker, Taken};
use super::{error_chain, Reconciler};
use crate::datapath::Datapath;
use crate::metrics::METRICS;
use crate::table::NodeTopology;

/// How the loop paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncTiming {
    /// Least time from one sync to the next (kube-proxy's minSyncPeriod): a change is
    /// synced at once unless the last sync is more recent than this; then it waits for
    /// this to pass, with whatever else changed meanwhile.
    pub min_interval: Duration,
    /// Rebuild the whole table from all objects this often, as a safety net (kube-proxy's
    /// full sync period, an hour).
    pub full_resync: Duration,
    /// First delay before retrying a failed sync; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        SyncTiming {
            min_interval: Duration::from_millis(100),
            full_resync: Duration::from_secs(3600),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// The objects at one moment, and the node they are programmed for.
pub(crate) struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub node: NodeTopology,
}

/// Where the loop reads the objects from: all of them for a full sync, the changes since
/// the last sync otherwise.
pub(crate) trait ObjectSource {
    fn snapshot(&self) -> Snapshot;
    fn tracker(&self) -> &ChangeTracker;
}

/// A fixed set of objects (standalone mode): nothing is ever recorded.
pub(crate) struct StaticSource {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    node: NodeTopology,
    tracker: ChangeTracker,
}

impl StaticSource {
    pub(crate) fn new(services: Vec<Service>, slices: Vec<EndpointSlice>, node: NodeTopology) -> StaticSource {
        StaticSource {
            services: services.into_iter().map(Arc::new).collect(),
            slices: slices.into_iter().map(Arc::new).collect(),
            node,
            tracker: ChangeTracker::default(),
        }
    }
}

impl ObjectSource for StaticSource {
    fn snapshot(&self) -> Snapshot {
        Snapshot { services: self.services.clone(), slices: self.slices.clone(), node: self.node.clone() }
    }

    fn tracker(&self) -> &ChangeTracker {
        &self.tracker
    }
}

/// Sync fully at once, then as changes are recorded in the source's tracker (paced by
/// `timing`), until `shutdown`.
pub(crate) async fn reconcile_loop<D: Datapath>(
    reconciler: &mut Reconciler<D>,
    source: &impl ObjectSource,
    timing: SyncTiming,
    shutdown: &CancellationToken,
) {
    let tracker = source.tracker();
    let mut pace = Pace::new(timing);
    loop {
        let due = pace.next_sync(tracker.has_pending(), Instant::now());
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
            // Something new: when is the next sync now?
            () = tracker.recorded() => continue,
        }
        let started = Instant::now();
        // Taken before the snapshot: what is recorded after it is applied on top.
        let Taken { changes, full } = tracker.take();
        let full = full || pace.full_due(started);
        let result = if full {
            let Snapshot { services, slices, node } = source.snapshot();
            reconciler.sync_shared(services, slices, node)
        } else {
            reconciler.apply_changes(changes)
        };
        match &result {
            Ok(stats) => tracing::debug!(?stats, full, took = ?started.elapsed(), "synced service table"),
            Err(error) => tracing::warn!(
                error = %error_chain(error),
                retry_in = ?pace.retry_delay,
                failed_syncs = METRICS.sync_errors(),
                "sync service table"
            ),
        }
        pace.synced(started, full, result.is_ok());
    }
}

/// When the next sync is due.
struct Pace {
    timing: SyncTiming,
    /// Start of the last sync, and of the last full one.
    last_sync: Option<Instant>,
    last_full: Option<Instant>,
    /// While syncs fail: when to try again.
    retry_at: Option<Instant>,
    retry_delay: Duration,
}

impl Pace {
    fn new(timing: SyncTiming) -> Pace {
        Pace { timing, last_sync: None, last_full: None, retry_at: None, retry_delay: timing.retry_min }
    }

    /// The next sync: the retry while failing (it takes what changed meanwhile along),
    /// else the next full resync, or sooner for pending changes, no sooner than
    /// `min_interval` after the last sync.
    fn next_sync(&self, pending: bool, now: Instant) -> Instant {
        if let Some(retry_at) = self.retry_at {
            return retry_at;
        }
        let full = self.last_full.map_or(now, |last| last + self.timing.full_resync);
        let change = self.last_sync.map_or(now, |last| last + self.timing.min_interval);
        if pending {
            full.min(change)
        } else {
            full
        }
    }

    fn full_due(&self, now: Instant) -> bool {
        self.last_full.is_none_or(|last| now >= last + self.timing.full_resync)
    }

    fn synced(&mut self, started: Instant, full: bool, ok: bool) {
        self.last_sync = Some(started);
        if full {
            self.last_full = Some(started);
        }
        if ok {
            self.retry_at = None;
            self.retry_delay = self.timing.retry_min;
        } else {
            self.retry_at = Some(Instant::now() + self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(self.timing.retry_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::FakeDatapath;
    use crate::parse_service_objects;

    const OBJECTS: &str = "
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.5]}]
";

    /// Poll `done` until it holds (5 s at most).
    async fn until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "not done within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn timing() -> SyncTiming {
        SyncTiming {
            min_interval: Duration::from_millis(100),
            full_resync: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(4),
        }
    }

    #[tokio::test]
    async fn the_loop_syncs_a_lone_change_at_once_and_paces_a_burst() {
        let timing = SyncTiming { min_interval: Duration::from_secs(1), ..timing() };
        let objects = parse_service_objects(OBJECTS, "test").expect("parse");
        let slice = objects.slices[0].clone();
        let source = Arc::new(StaticSource::new(objects.services, objects.slices, NodeTopology::default()));
        let fake = FakeDatapath::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (source, fake, shutdown) = (source.clone(), fake.clone(), shutdown.clone());
            async move { reconcile_loop(&mut Reconciler::new(fake), &*source, timing, &shutdown).await }
        });
        until(|| fake.applies() == 1).await;

        let moved = |address: &str| {
            let mut moved = slice.clone();
            moved.endpoints[0].addresses = vec![address.to_owned()];
            Arc::new(moved)
        };
        // Quiet for longer than the min interval: the next change goes at once (well
        // within half the interval, however loaded the machine).
        tokio::time::sleep(timing.min_interval + Duration::from_millis(100)).await;
        let quiet = Instant::now();
        source.tracker().record(|changes| changes.slice_applied(moved("10.244.0.6")));
        until(|| fake.deltas() == 1).await;
        assert!(quiet.elapsed() < timing.min_interval / 2, "a change after a quiet spell waited {:?}", quiet.elapsed());

        // Right after that sync: the next changes wait for the interval, and go together.
        source.tracker().record(|changes| changes.slice_applied(moved("10.244.0.7")));
        source.tracker().record(|changes| changes.slice_applied(moved("10.244.0.8")));
        until(|| fake.deltas() == 2).await;
        assert!(quiet.elapsed() >= timing.min_interval, "a burst waits for the min interval");
        let backends: Vec<String> =
            fake.table().values().flat_map(|e| e.backends.iter().map(ToString::to_string)).collect();
        assert_eq!(backends, ["10.244.0.8:8080"]);
        assert_eq!(fake.applies(), 1, "no full sync since the first");

        shutdown.cancel();
        task.await.expect("loop task");
    }

    #[test]
    fn a_change_after_a_quiet_spell_is_synced_at_once() {
        let start = Instant::now();
        let mut pace = Pace::new(timing());
        assert_eq!(pace.next_sync(false, start), start, "the first sync is at once");
        assert!(pace.full_due(start));
        pace.synced(start, true, true);

        let quiet = start + Duration::from_secs(5);
        assert_eq!(pace.next_sync(true, quiet), start + Duration::from_millis(100), "already due: at once");
        assert!(pace.next_sync(true, quiet) <= quiet);
        assert!(!pace.full_due(quiet));
        assert_eq!(pace.next_sync(false, quiet), start + Duration::from_secs(60), "nothing pending: the resync");
    }

    #[test]
    fn changes_right_after_a_sync_wait_for_the_min_interval() {
        let start = Instant::now();
        let mut pace = Pace::new(timing());
        pace.synced(start, true, true);
        let soon = start + Duration::from_millis(10);
        assert_eq!(pace.next_sync(true, soon), start + Duration::from_millis(100));
    }

    #[test]
    fn failures_back_off_up_to_the_max_and_success_resets() {
        let start = Instant::now();
        let mut pace = Pace::new(timing());
        let mut delays = Vec::new();
        for _ in 0..4 {
            pace.synced(start, false, false);
            delays.push(pace.next_sync(true, start).saturating_duration_since(Instant::now()));
        }
        let rounded: Vec<u64> = delays.iter().map(|d| (d.as_secs_f64()).round() as u64).collect();
        assert_eq!(rounded, [1, 2, 4, 4]);
        pace.synced(start, false, true);
        assert_eq!(pace.retry_at, None);
        assert_eq!(pace.retry_delay, Duration::from_secs(1));
    }
}
