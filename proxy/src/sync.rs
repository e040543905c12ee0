//! The reconcile loop: on any change of the objects, recompute the table and
//! apply it to the datapath; errors are logged and retried, never fatal.

use std::collections::BTreeSet;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::datapath::{Datapath, SyncStats};
use crate::error::ProxyError;
use crate::metrics::METRICS;
use crate::table::{build_table, NodeTopology, Problem};

/// How the loop paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncTiming {
    /// Wait this long after a change before syncing, so a burst of changes
    /// (a rollout touching many slices) costs one sync.
    pub coalesce: Duration,
    /// First delay before retrying a failed sync; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        SyncTiming {
            coalesce: Duration::from_millis(200),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Turns objects into a table and applies it, with metrics; logs what is wrong with the
/// objects, each problem once while it lasts.
pub struct Reconciler<D> {
    datapath: D,
    problems: BTreeSet<Problem>,
}

impl<D: Datapath> Reconciler<D> {
    pub fn new(datapath: D) -> Reconciler<D> {
        Reconciler { datapath, problems: BTreeSet::new() }
    }

    /// Compute the desired table from the objects, for node `node`, and apply it.
    pub fn sync<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        node: &NodeTopology,
    ) -> Result<SyncStats, ProxyError> {
        let started = Instant::now();
        let built = build_table(services, slices, node);
        self.report(built.problems);
        let table = built.table;
        match self.datapath.apply(&table) {
            Ok(stats) => {
                METRICS.observe_success(started.elapsed(), table.len());
                Ok(stats)
            }
            Err(error) => {
                METRICS.observe_failure(started.elapsed());
                Err(error)
            }
        }
    }

    /// What was wrong with the objects of the last sync.
    pub fn problems(&self) -> &BTreeSet<Problem> {
        &self.problems
    }

    /// Log the problems that are new since the last sync (a bad object is named once, not
    /// on every sync), and those that went away.
    fn report(&mut self, problems: Vec<Problem>) {
        let current: BTreeSet<Problem> = problems.into_iter().collect();
        for problem in current.difference(&self.problems) {
            let object = &problem.object;
            tracing::warn!(
                kind = object.kind,
                namespace = %object.namespace,
                name = %object.name,
                "bad input, the rest is programmed: {problem}"
            );
        }
        for problem in self.problems.difference(&current) {
            tracing::info!("resolved: {problem}");
        }
        self.problems = current;
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
    }
}

/// The objects at one moment, and the node they are programmed for.
pub(crate) struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub node: NodeTopology,
}

/// Where the loop reads the current objects from.
pub(crate) trait ObjectSource {
    fn snapshot(&self) -> Snapshot;
}

/// A fixed set of objects (standalone mode).
pub(crate) struct StaticSource {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    node: NodeTopology,
}

impl StaticSource {
    pub(crate) fn new(services: Vec<Service>, slices: Vec<EndpointSlice>, node: NodeTopology) -> StaticSource {
        StaticSource {
            services: services.into_iter().map(Arc::new).collect(),
            slices: slices.into_iter().map(Arc::new).collect(),
            node,
        }
    }
}

impl ObjectSource for StaticSource {
    fn snapshot(&self) -> Snapshot {
        Snapshot { services: self.services.clone(), slices: self.slices.clone(), node: self.node.clone() }
    }
}

/// Sync once at start, then after every change signalled on `changes`,
/// until `shutdown`. When every sender of `changes` is gone the objects can
/// no longer change: the loop only retries failures and waits for shutdown.
pub(crate) async fn reconcile_loop<D: Datapath>(
    reconciler: &mut Reconciler<D>,
    source: &impl ObjectSource,
    mut changes: mpsc::Receiver<()>,
    timing: SyncTiming,
    shutdown: &CancellationToken,
) {
    let mut retry_delay = timing.retry_min;
    let mut sync_due = true;
    let mut changes_open = true;
    loop {
        if sync_due {
            if sleep_or_shutdown(timing.coalesce, shutdown).await.is_err() {
                return;
            }
            // Everything signalled so far is covered by this sync.
            while changes.try_recv().is_ok() {}
            sync_due = false;
            let snapshot = source.snapshot();
            let result = reconciler.sync(
                snapshot.services.iter().map(Arc::as_ref),
                snapshot.slices.iter().map(Arc::as_ref),
                &snapshot.node,
            );
            match result {
                Ok(stats) => {
                    retry_delay = timing.retry_min;
                    tracing::debug!(?stats, "synced service table");
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        retry_in = ?retry_delay,
                        failed_syncs = METRICS.sync_errors(),
                        "sync service table"
                    );
                    if sleep_or_shutdown(retry_delay, shutdown).await.is_err() {
                        return;
                    }
                    retry_delay = (retry_delay * 2).min(timing.retry_max);
                    sync_due = true;
                    continue;
                }
            }
        }
        if !changes_open {
            shutdown.cancelled().await;
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Some(()) => sync_due = true,
                None => changes_open = false,
            },
        }
    }
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        () = shutdown.cancelled() => Err(()),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

/// "outer: inner: root cause", for one-line logs.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Signal a change; a change already pending covers this one.
pub(crate) fn signal_change(changes: &mpsc::Sender<()>) {
    // Full: a sync is already due. Closed: the loop is gone (shutting down).
    let _ = changes.try_send(());
}
