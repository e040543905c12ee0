//! One probe of one container attempt, in a task of its own (kubelet's prober worker). The
//! first run comes once the initial delay has passed since the container started, then one
//! every period. Each outcome is counted, passed through the thresholds, and published when it
//! decides a verdict. A liveness or startup failure ends the task (the attempt is killed and
//! its successor gets tasks of its own), and so does a startup success: liveness and
//! readiness take over.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::handler::{HandlerRunner, Target};
use super::metrics::{ProbeMetrics, ProbeSeries};
use super::results::ProbeResults;
use super::spec::ProbeSpec;
use super::tally::Tally;
use super::{Outcome, ProbeKind, Verdict};
use crate::events::{EventRecorder, EventType};
use crate::pod::runtime_port::PodRuntime;

pub struct ProbeTask {
    pub spec: ProbeSpec,
    /// Names the pod, container and probe (metrics labels, logs).
    pub series: ProbeSeries,
    pub attempt: u32,
    pub target: Target,
    /// When the container started, on tokio's clock.
    pub started: Instant,
    pub results: Arc<ProbeResults>,
    pub runtime: Arc<dyn PodRuntime>,
    pub metrics: ProbeMetrics,
    pub events: EventRecorder,
    /// The container, for its Unhealthy and ProbeWarning events.
    pub object: k8s_openapi::api::core::v1::ObjectReference,
}

impl ProbeTask {
    /// Probe until `stop`, or until the probe's job for this attempt is done.
    pub async fn run(self, stop: CancellationToken) {
        let first = (self.started + self.spec.initial_delay).max(Instant::now());
        let mut ticks = tokio::time::interval_at(first, self.spec.period);
        // A run that overran its period delays the next one rather than bunching them.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut runner = HandlerRunner::new(self.runtime.clone());
        let mut tally = Tally::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = runner.run(&self.spec.handler, &self.target, self.spec.timeout) => outcome,
            };
            self.metrics.count(&self.series, &outcome);
            self.log(&outcome);
            let Some(verdict) = tally.record(&outcome, self.spec.success_threshold, self.spec.failure_threshold) else {
                continue;
            };
            self.results.set(&self.series.container, self.attempt, self.series.kind, verdict);
            if finished(self.series.kind, verdict) {
                return;
            }
        }
    }

    /// Every failure is an Unhealthy event (and every warning a ProbeWarning), as kubelet
    /// records them (repeats become counts); each distinct failure is logged once per container
    /// at info, repeats, which come every period, only at debug.
    fn log(&self, outcome: &Outcome) {
        let kind = self.series.kind.as_str();
        let (container, pod) =
            (&self.series.container, format!("{}/{}", self.series.pod.namespace, self.series.pod.name));
        match outcome {
            Outcome::Success => tracing::trace!(%pod, %container, "{kind} probe succeeded"),
            Outcome::Warning(message) => {
                tracing::debug!(%pod, %container, "{kind} probe warning: {message}");
                let text = format!("{kind} probe warning: {message}");
                self.events.record(self.object.clone(), EventType::Warning, "ProbeWarning", text);
            }
            Outcome::Failure(message) => {
                let line = format!("{kind} probe failed: {message}");
                self.events.record(self.object.clone(), EventType::Warning, "Unhealthy", line.clone());
                if self.results.first_time(container, &line) {
                    tracing::info!(%pod, %container, "{line}");
                } else {
                    tracing::debug!(%pod, %container, "{line}");
                }
            }
            Outcome::Unknown(message) => {
                let line = format!("{kind} probe errored: {message}");
                if self.results.first_time(container, &line) {
                    tracing::warn!(%pod, %container, "{line}");
                } else {
                    tracing::debug!(%pod, %container, "{line}");
                }
            }
        }
    }
}

/// Whether the probe has nothing left to do for this attempt after `verdict`.
fn finished(kind: ProbeKind, verdict: Verdict) -> bool {
    match kind {
        ProbeKind::Readiness => false,
        ProbeKind::Startup => true,
        ProbeKind::Liveness => verdict == Verdict::Failure,
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
