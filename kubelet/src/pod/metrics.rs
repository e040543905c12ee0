//! Pod metrics with kubelet's names, observed from the statuses the workers report: a
//! [`StatusSink`] wrapper, so the workers need no metrics code of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::probe::ProbeMetrics;
use super::status::PHASE_RUNNING;
use super::status_sink::{SinkError, StatusSink};

type Labels = Vec<(String, String)>;

/// kubelet's buckets for kubelet_pod_start_duration_seconds.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0,
    600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// The container_state values nodelet can tell from a pod status (kubelet also has
/// "created" and "unknown", which a status does not show).
const STATE_RUNNING: &str = "running";
const STATE_EXITED: &str = "exited";

/// Cheap to clone: every clone updates the same registered metrics.
#[derive(Clone, Debug)]
pub struct PodMetrics {
    running_pods: Gauge,
    running_containers: Family<Labels, Gauge>,
    start_duration_seconds: Histogram,
    pods: Arc<Mutex<HashMap<String, PodRecord>>>,
    probes: ProbeMetrics,
}

/// What the metrics remember of one pod (by uid) between its reports.
#[derive(Debug)]
struct PodRecord {
    first_seen: Instant,
    /// Running when first seen (adopted after a restart): its start was not watched.
    start_observed: bool,
    sandbox_ready: bool,
    running_containers: i64,
    exited_containers: i64,
}

impl Default for PodMetrics {
    fn default() -> Self {
        PodMetrics {
            running_pods: Gauge::default(),
            running_containers: Family::default(),
            start_duration_seconds: Histogram::new(POD_START_BUCKETS),
            pods: Arc::default(),
            probes: ProbeMetrics::default(),
        }
    }
}

impl PodMetrics {
    /// Where the probes count their runs (prober_probe_total).
    pub fn probes(&self) -> ProbeMetrics {
        self.probes.clone()
    }

    /// Wrap `sink` so that every status it accepts updates these metrics.
    pub fn observe(&self, sink: Arc<dyn StatusSink>) -> Arc<dyn StatusSink> {
        Arc::new(MetricsSink { inner: sink, metrics: self.clone() })
    }

    fn record_status(&self, pod: &Pod, status: &PodStatus) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let Ok(mut pods) = self.pods.lock() else {
            return;
        };
        let now = Instant::now();
        let running = status.phase.as_deref() == Some(PHASE_RUNNING);
        let record = pods.entry(uid).or_insert_with(|| PodRecord {
            first_seen: now,
            start_observed: running,
            sandbox_ready: false,
            running_containers: 0,
            exited_containers: 0,
        });
        if running && !record.start_observed {
            record.start_observed = true;
            self.start_duration_seconds.observe(now.duration_since(record.first_seen).as_secs_f64());
        }
        record.sandbox_ready = sandbox_ready(status);
        let containers = status.init_container_statuses.iter().chain(status.container_statuses.iter()).flatten();
        let (mut running_containers, mut exited_containers) = (0, 0);
        for container in containers {
            match container_state(container) {
                Some(STATE_RUNNING) => running_containers += 1,
                Some(_) => exited_containers += 1,
                None => {}
            }
        }
        record.running_containers = running_containers;
        record.exited_containers = exited_containers;
        self.publish(&pods);
    }

    fn forget(&self, pod: &Pod) {
        let (Some(uid), Ok(mut pods)) = (pod.metadata.uid.as_ref(), self.pods.lock()) else {
            return;
        };
        pods.remove(uid);
        self.publish(&pods);
    }

    fn publish(&self, pods: &HashMap<String, PodRecord>) {
        let count = |f: fn(&PodRecord) -> i64| pods.values().map(f).sum::<i64>();
        self.running_pods.set(count(|p| i64::from(p.sandbox_ready)));
        self.running_containers.get_or_create(&state_label(STATE_RUNNING)).set(count(|p| p.running_containers));
        self.running_containers.get_or_create(&state_label(STATE_EXITED)).set(count(|p| p.exited_containers));
    }

    /// Pods with a ready sandbox now (kubelet_running_pods).
    pub fn running_pods(&self) -> i64 {
        self.running_pods.get()
    }

    /// Containers in `state` ("running" or "exited") now.
    pub fn running_containers(&self, state: &str) -> i64 {
        self.running_containers.get_or_create(&state_label(state)).get()
    }
}

fn state_label(state: &str) -> Labels {
    vec![("container_state".to_string(), state.to_string())]
}

/// kubelet counts a pod as running while its sandbox is: the PodReadyToStartContainers
/// condition says so.
fn sandbox_ready(status: &PodStatus) -> bool {
    status.conditions.iter().flatten().any(|c| c.type_ == "PodReadyToStartContainers" && c.status == "True")
}

/// The state of the container the runtime holds for this status, if it holds one: a
/// container waiting to restart still has its exited attempt.
fn container_state(status: &ContainerStatus) -> Option<&'static str> {
    let state = status.state.as_ref()?;
    if state.running.is_some() {
        Some(STATE_RUNNING)
    } else if state.terminated.is_some() || status.last_state.as_ref().is_some_and(|s| s.terminated.is_some()) {
        Some(STATE_EXITED)
    } else {
        None
    }
}

/// Register the pod metrics in `registry` and return the handle that observes statuses.
pub fn register_metrics(registry: &mut Registry) -> PodMetrics {
    let metrics = PodMetrics { probes: ProbeMetrics::register(registry), ..PodMetrics::default() };
    registry.register(
        "kubelet_running_pods",
        "Number of pods that have a running pod sandbox",
        metrics.running_pods.clone(),
    );
    registry.register(
        "kubelet_running_containers",
        "Number of containers currently running",
        metrics.running_containers.clone(),
    );
    registry.register(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        metrics.start_duration_seconds.clone(),
    );
    // Every container_state series shows (as 0) before the first pod reports.
    metrics.publish(&HashMap::new());
    metrics
}

struct MetricsSink {
    inner: Arc<dyn StatusSink>,
    metrics: PodMetrics,
}

#[async_trait::async_trait]
impl StatusSink for MetricsSink {
    fn destination(&self, pod: &Pod) -> Option<String> {
        self.inner.destination(pod)
    }

    async fn report(&self, pod: &Pod, status: &PodStatus) -> Result<(), SinkError> {
        self.inner.report(pod, status).await?;
        self.metrics.record_status(pod, status);
        Ok(())
    }

    async fn finish_deletion(&self, pod: &Pod) -> Result<(), SinkError> {
        self.inner.finish_deletion(pod).await
    }

    async fn released(&self, pod: &Pod) {
        self.inner.released(pod).await;
        self.metrics.forget(pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::MemoryStatusSink;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, PodCondition,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use prometheus_client::encoding::text::encode;

    fn pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn container(state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus { name: "app".into(), state: Some(state), last_state: last, ..ContainerStatus::default() }
    }

    fn status(phase: &str, sandbox: bool, containers: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "PodReadyToStartContainers".into(),
                status: if sandbox { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            container_statuses: Some(containers),
            ..PodStatus::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState { running: Some(ContainerStateRunning::default()), ..ContainerState::default() }
    }

    fn waiting() -> ContainerState {
        ContainerState { waiting: Some(ContainerStateWaiting::default()), ..ContainerState::default() }
    }

    fn exited() -> ContainerState {
        ContainerState { terminated: Some(ContainerStateTerminated::default()), ..ContainerState::default() }
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text
    }

    #[tokio::test]
    async fn counts_pods_and_containers_and_times_the_start() {
        let mut registry = Registry::default();
        let metrics = register_metrics(&mut registry);
        let memory = MemoryStatusSink::new();
        let sink = metrics.observe(Arc::new(memory.clone()));

        let web = pod("1");
        sink.report(&web, &status("Pending", false, vec![container(waiting(), None)])).await.unwrap();
        assert_eq!(metrics.running_pods(), 0);
        sink.report(&web, &status("Running", true, vec![container(running(), None)])).await.unwrap();
        let crashing = pod("2");
        sink.report(&crashing, &status("Running", true, vec![container(waiting(), Some(exited()))])).await.unwrap();

        assert_eq!(metrics.running_pods(), 2);
        assert_eq!(metrics.running_containers("running"), 1);
        assert_eq!(metrics.running_containers("exited"), 1);
        assert_eq!(memory.statuses().len(), 2, "statuses reach the wrapped sink");
        let text = text(&registry);
        // Only the pod first seen pending had its start timed.
        assert!(text.contains("kubelet_pod_start_duration_seconds_count 1"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 1"), "{text}");

        sink.released(&web).await;
        assert_eq!(metrics.running_pods(), 1);
        assert_eq!(metrics.running_containers("running"), 0);
    }
}
