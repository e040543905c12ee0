//! The probes of one pod (kubelet's prober manager, per pod): the worker calls
//! [`PodProber::sync`] with what it observes, and the prober runs one task per probe of each
//! running container attempt. The startup probe gates the others: liveness and readiness
//! start only once it passed. Tasks of attempts that stopped or were replaced are stopped and
//! their verdicts forgotten; dropping the prober stops everything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::handler::Target;
use super::metrics::{PodLabels, ProbeMetrics, ProbeSeries};
use super::results::{ProbeResults, ProbeView, Verdicts};
use super::spec::ProbeSpec;
use super::task::ProbeTask;
use super::{ProbeKind, Verdict};
use crate::events::{pod_reference, EventRecorder};
use crate::pod::model::{Attempt, ContainerPlan, Observed, PodPlan};
use crate::pod::runtime_port::{PodRuntime, RunState};

/// A probe task: container, attempt, probe.
type TaskKey = (String, u32, ProbeKind);

pub struct PodProber {
    pod: PodLabels,
    /// The pod, for Unhealthy and ProbeWarning events.
    pod_object: Pod,
    events: EventRecorder,
    runtime: Arc<dyn PodRuntime>,
    metrics: ProbeMetrics,
    results: Arc<ProbeResults>,
    /// Dropping a guard stops its task. A task that ended by itself (a liveness failure, a
    /// startup success) keeps its entry, so that it is not started again for that attempt.
    tasks: BTreeMap<TaskKey, DropGuard>,
    /// The (container, probe) series counted in the metrics, dropped with the prober.
    series: BTreeSet<(String, ProbeKind)>,
}

impl PodProber {
    pub fn new(pod: &Pod, runtime: Arc<dyn PodRuntime>, metrics: ProbeMetrics, events: EventRecorder) -> PodProber {
        let pod_object = Pod { metadata: pod.metadata.clone(), spec: pod.spec.clone(), status: None };
        let results = Arc::new(ProbeResults::default());
        PodProber {
            pod: PodLabels::of(pod),
            pod_object,
            events,
            runtime,
            metrics,
            results,
            tasks: BTreeMap::new(),
            series: BTreeSet::new(),
        }
    }

    /// Fires when a verdict changes: the worker steps again.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.results.subscribe()
    }

    /// The verdicts now, for the worker's observation.
    pub fn view(&self) -> ProbeView {
        self.results.view()
    }

    /// Start the probes the running containers need, stop the rest.
    pub fn sync(&mut self, plan: &PodPlan, observed: &Observed, pod_ip: Option<Ipv4Addr>) {
        let view = self.results.view();
        let mut wanted = BTreeSet::new();
        let mut running = BTreeSet::new();
        for container in plan.long_running() {
            let Some(latest) = observed.latest(&container.name) else {
                continue;
            };
            if latest.info.state != RunState::Running || container.probes.is_empty() {
                continue;
            }
            running.insert((container.name.clone(), latest.attempt));
            let Some(pod_ip) = pod_ip else {
                continue;
            };
            let verdicts = view.get(&container.name, latest.attempt);
            for (kind, spec) in needed(container, verdicts, plan.removal.is_some()) {
                let key = (container.name.clone(), latest.attempt, kind);
                if !self.tasks.contains_key(&key) {
                    let guard = self.spawn(&container.name, latest, kind, spec, pod_ip);
                    self.tasks.insert(key.clone(), guard);
                }
                wanted.insert(key);
            }
        }
        self.tasks.retain(|key, _| wanted.contains(key));
        self.results.retain(|container, attempt| running.contains(&(container.to_string(), attempt)));
    }

    fn spawn(
        &mut self,
        container: &str,
        latest: &Attempt,
        kind: ProbeKind,
        spec: &ProbeSpec,
        ip: Ipv4Addr,
    ) -> DropGuard {
        self.series.insert((container.to_string(), kind));
        let task = ProbeTask {
            spec: spec.clone(),
            series: self.series(container, kind),
            attempt: latest.attempt,
            target: Target { container_id: latest.info.id.clone(), pod_ip: ip.to_string() },
            started: on_tokio_clock(latest.info.started_at),
            results: self.results.clone(),
            runtime: self.runtime.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
            object: pod_reference(&self.pod_object, Some(container)),
        };
        let stop = CancellationToken::new();
        tokio::spawn(task.run(stop.clone()));
        stop.drop_guard()
    }

    fn series(&self, container: &str, kind: ProbeKind) -> ProbeSeries {
        ProbeSeries { pod: self.pod.clone(), container: container.to_string(), kind }
    }
}

/// The probes a running attempt needs now: startup until it passed, then liveness and
/// readiness; only readiness while the pod is being deleted, as kubelet.
fn needed(container: &ContainerPlan, verdicts: Verdicts, deleting: bool) -> Vec<(ProbeKind, &ProbeSpec)> {
    let started = container.probes.startup.is_none() || verdicts.startup == Some(Verdict::Success);
    let gate_open = |kind| if kind == ProbeKind::Startup { !started } else { started };
    ProbeKind::ALL
        .into_iter()
        .filter(|&kind| gate_open(kind) && !(deleting && kind != ProbeKind::Readiness))
        .filter_map(|kind| Some((kind, container.probes.get(kind)?)))
        .collect()
}

impl Drop for PodProber {
    fn drop(&mut self) {
        for (container, kind) in &self.series {
            self.metrics.forget(&self.series(container, *kind));
        }
    }
}

/// A wall-clock start as an instant of tokio's clock (which tests pause), so that a container
/// adopted after an agent restart is not given its initial delay again.
fn on_tokio_clock(started_at: Option<DateTime<Utc>>) -> Instant {
    let now = Instant::now();
    let ran = started_at.and_then(|at| (Utc::now() - at).to_std().ok()).unwrap_or_default();
    now.checked_sub(ran).unwrap_or(now)
}

#[cfg(test)]
#[path = "pod_prober_tests.rs"]
mod tests;
