//! The reconciler: objects to the service table to the datapath, fully (all objects) or
//! partially (the Services that changed, as kube-proxy's partial syncs), with metrics and
//! problem reports; and the loop that drives it (`run_loop`), fed by a change tracker
//! (`tracker`).

#[cfg(test)]
mod incremental_tests;
mod run_loop;
mod tracker;

use std::collections::BTreeSet;
use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::datapath::{Datapath, IngressDatapath, SyncStats};
use crate::error::ProxyError;
use crate::metrics::{SyncKind, METRICS};
use crate::service_health::HealthServers;
use crate::table::{
    Changes, FrontendKind, HealthChecks, IncrementalTable, IngressDelta, IngressTable, NodeTopology, Problem,
    ServiceTable,
};
use nodelet_ebpf::Frontend;
use std::collections::BTreeMap;

pub use run_loop::SyncTiming;
pub(crate) use run_loop::{reconcile_loop, ObjectSource, Snapshot, StaticSource};
pub(crate) use tracker::ChangeTracker;

/// Turns objects into a table and applies it, with metrics; logs what is wrong with the
/// objects, each problem once while it lasts.
///
/// [`sync`](Reconciler::sync) rebuilds the table from all objects and applies it whole;
/// [`apply_changes`](Reconciler::apply_changes) rebuilds only the Services that changed and
/// hands the datapath only the frontends that changed. Both leave the same table.
///
/// With an ingress datapath ([`with_ingress`](Reconciler::with_ingress)), the ingress table
/// is written to it the same way, beside the socket one: each datapath has its own
/// failures and retries, and a sync fails when either does.
pub struct Reconciler<D> {
    datapath: D,
    table: IncrementalTable,
    problems: BTreeSet<Problem>,
    /// The datapath may not hold the table (no apply yet, or the last one failed): the
    /// next update applies the whole table.
    needs_full_apply: bool,
    /// The health check servers, kept in line with the table when set.
    health_servers: Option<HealthServers>,
    ingress: Option<Box<dyn IngressDatapath>>,
    /// As `needs_full_apply`, for the ingress datapath.
    ingress_needs_full_apply: bool,
}

impl<D: Datapath> Reconciler<D> {
    pub fn new(datapath: D) -> Reconciler<D> {
        Reconciler {
            datapath,
            table: IncrementalTable::default(),
            problems: BTreeSet::new(),
            needs_full_apply: true,
            health_servers: None,
            ingress: None,
            ingress_needs_full_apply: true,
        }
    }

    /// Also write the ingress table to `ingress`, from the next sync on (a whole apply).
    pub fn with_ingress(mut self, ingress: impl IngressDatapath + 'static) -> Reconciler<D> {
        self.ingress = Some(Box::new(ingress));
        self.ingress_needs_full_apply = true;
        self
    }

    /// Also serve the health checks of the table's Services (`healthCheckNodePort`), from
    /// the next sync on.
    pub fn with_health_servers(mut self, servers: HealthServers) -> Reconciler<D> {
        self.health_servers = Some(servers);
        self
    }

    /// Full sync: compute the table from all the objects, for node `node`, and apply it.
    pub fn sync<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        node: &NodeTopology,
    ) -> Result<SyncStats, ProxyError> {
        let services = services.into_iter().map(|service| Arc::new(service.clone()));
        let slices = slices.into_iter().map(|slice| Arc::new(slice.clone()));
        self.sync_shared(services, slices, node.clone())
    }

    /// [`sync`](Reconciler::sync) from shared objects (a watch cache's), without copies.
    pub fn sync_shared(
        &mut self,
        services: impl IntoIterator<Item = Arc<Service>>,
        slices: impl IntoIterator<Item = Arc<EndpointSlice>>,
        node: NodeTopology,
    ) -> Result<SyncStats, ProxyError> {
        let started = Instant::now();
        self.table.reset(services, slices, node);
        let problems = self.table.problems().cloned().collect();
        self.report(problems);
        self.update_health_servers();
        self.apply_whole(started)
    }

    /// Partial sync: take `changes` in on top of the objects of the last syncs, rebuild
    /// the Services they touch, and write only the frontends that changed. If the
    /// datapath may not hold the table (the last write failed), the whole table is
    /// applied instead.
    pub fn apply_changes(&mut self, changes: Changes) -> Result<SyncStats, ProxyError> {
        let started = Instant::now();
        let update = self.table.apply(changes);
        self.report_changes(update.new_problems, update.resolved_problems);
        self.update_health_servers();
        if self.needs_full_apply {
            return self.apply_whole(started);
        }
        let socket = self.datapath.apply_delta(&update.delta);
        let ingress = self.write_ingress(Some(&update.ingress));
        self.finish(SyncKind::Partial, started, socket, ingress)
    }

    fn apply_whole(&mut self, started: Instant) -> Result<SyncStats, ProxyError> {
        let socket = self.datapath.apply(self.table.table());
        let ingress = self.write_ingress(None);
        self.finish(SyncKind::Full, started, socket, ingress)
    }

    /// Write the ingress table: `delta` when given and the ingress datapath holds the
    /// table before it, else whole.
    fn write_ingress(&mut self, delta: Option<&IngressDelta>) -> Result<SyncStats, ProxyError> {
        let Some(ingress) = self.ingress.as_mut() else {
            return Ok(SyncStats::default());
        };
        let result = match delta {
            Some(delta) if !self.ingress_needs_full_apply => ingress.apply_delta(delta),
            _ => ingress.apply(self.table.ingress()),
        };
        self.ingress_needs_full_apply = result.is_err();
        result
    }

    /// Record the outcome of both writes: the socket datapath's error first, else the
    /// ingress one's, else their counts together.
    fn finish(
        &mut self,
        kind: SyncKind,
        started: Instant,
        socket: Result<SyncStats, ProxyError>,
        ingress: Result<SyncStats, ProxyError>,
    ) -> Result<SyncStats, ProxyError> {
        self.needs_full_apply = socket.is_err();
        let result = match (socket, ingress) {
            (Ok(socket), Ok(ingress)) => Ok(socket.add(ingress)),
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
        };
        match &result {
            Ok(_) => METRICS.observe_success(kind, started.elapsed(), self.table.table().len()),
            Err(_) => METRICS.observe_failure(kind, started.elapsed()),
        }
        result
    }

    /// The desired table, as of the last sync (what the datapath holds when it succeeded).
    pub fn table(&self) -> &ServiceTable {
        self.table.table()
    }

    /// The desired ingress table, as of the last sync.
    pub fn ingress_table(&self) -> &IngressTable {
        self.table.ingress()
    }

    /// The kind of each frontend of the table.
    pub fn kinds(&self) -> &BTreeMap<Frontend, FrontendKind> {
        self.table.kinds()
    }

    /// The health checks of the table's Services (served when
    /// [`with_health_servers`](Reconciler::with_health_servers) was given servers).
    pub fn health_checks(&self) -> HealthChecks {
        self.table.health_checks().collect()
    }

    /// The health servers (when set), as of the last sync.
    pub fn health_servers(&self) -> Option<&HealthServers> {
        self.health_servers.as_ref()
    }

    /// Health servers follow the desired table, whatever the datapath did: they report
    /// endpoints, not programming.
    fn update_health_servers(&mut self) {
        if self.health_servers.is_some() {
            let checks = self.health_checks();
            if let Some(servers) = &mut self.health_servers {
                servers.update(&checks);
            }
        }
    }

    /// What is wrong with the objects now.
    pub fn problems(&self) -> &BTreeSet<Problem> {
        &self.problems
    }

    /// Log the problems that are new since the last sync (a bad object is named once, not
    /// on every sync), and those that went away.
    fn report(&mut self, problems: BTreeSet<Problem>) {
        let new = problems.difference(&self.problems).cloned().collect();
        let resolved = self.problems.difference(&problems).cloned().collect();
        self.report_changes(new, resolved);
    }

    fn report_changes(&mut self, new: Vec<Problem>, resolved: Vec<Problem>) {
        for problem in new {
            let object = &problem.object;
            tracing::warn!(
                kind = object.kind,
                namespace = %object.namespace,
                name = %object.name,
                "bad input, the rest is programmed: {problem}"
            );
            self.problems.insert(problem);
        }
        for problem in resolved {
            tracing::info!("resolved: {problem}");
            self.problems.remove(&problem);
        }
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
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
