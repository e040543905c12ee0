//! kubelet's `prober_probe_total`: probe runs by type, result, container and pod.

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{Outcome, ProbeKind};

type Labels = Vec<(String, String)>;

/// kubelet's `result` label values.
const SUCCESSFUL: &str = "successful";
const FAILED: &str = "failed";
const UNKNOWN: &str = "unknown";

/// Cheap to clone: every clone counts into the same family. Unregistered (Default) it counts
/// into nothing anyone reads, which is what tests and the release-only workers need.
#[derive(Clone, Debug, Default)]
pub struct ProbeMetrics {
    total: Family<Labels, Counter>,
}

/// The pod a probe belongs to, as its series name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLabels {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodLabels {
    pub fn of(pod: &Pod) -> PodLabels {
        PodLabels {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// One probe of one container: its series differ only by result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSeries {
    pub pod: PodLabels,
    pub container: String,
    pub kind: ProbeKind,
}

impl ProbeSeries {
    /// In label-name order, as kubelet's output lists them.
    fn labels(&self, result: &str) -> Labels {
        [
            ("container", self.container.as_str()),
            ("namespace", self.pod.namespace.as_str()),
            ("pod", self.pod.name.as_str()),
            ("pod_uid", self.pod.uid.as_str()),
            ("probe_type", self.kind.as_str()),
            ("result", result),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl ProbeMetrics {
    pub fn register(registry: &mut Registry) -> ProbeMetrics {
        let metrics = ProbeMetrics::default();
        // prometheus-client appends "_total" to counters.
        registry.register(
            "prober_probe",
            "Cumulative number of a liveness, readiness or startup probe for a container by result",
            metrics.total.clone(),
        );
        metrics
    }

    /// Count one run. Unknown outcomes are not counted: kubelet throws prober errors away
    /// before it counts.
    pub fn count(&self, series: &ProbeSeries, outcome: &Outcome) {
        let result = match outcome {
            Outcome::Success | Outcome::Warning(_) => SUCCESSFUL,
            Outcome::Failure(_) => FAILED,
            Outcome::Unknown(_) => return,
        };
        self.total.get_or_create(&series.labels(result)).inc();
    }

    /// Drop the probe's series, as kubelet does when its probe worker ends for good.
    pub fn forget(&self, series: &ProbeSeries) {
        for result in [SUCCESSFUL, FAILED, UNKNOWN] {
            self.total.remove(&series.labels(result));
        }
    }

    /// The count of `series` with `result` ("successful", "failed").
    #[cfg(test)]
    pub fn value(&self, series: &ProbeSeries, result: &str) -> u64 {
        self.total.get_or_create(&series.labels(result)).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counts_by_result_with_kubelets_labels_and_forgets() {
        let mut registry = Registry::default();
        let metrics = ProbeMetrics::register(&mut registry);
        let pod = PodLabels { name: "web".into(), namespace: "default".into(), uid: "u1".into() };
        let series = ProbeSeries { pod, container: "app".into(), kind: ProbeKind::Readiness };
        metrics.count(&series, &Outcome::Failure("refused".into()));
        metrics.count(&series, &Outcome::Success);
        metrics.count(&series, &Outcome::Warning("redirect".into()));
        metrics.count(&series, &Outcome::Unknown("port \"x\" not found".into()));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert!(text.contains("# TYPE prober_probe counter"), "{text}");
        assert!(
            text.contains(r#"prober_probe_total{container="app",namespace="default",pod="web",pod_uid="u1",probe_type="Readiness",result="successful"} 2"#),
            "{text}"
        );
        assert_eq!(metrics.value(&series, FAILED), 1);
        metrics.forget(&series);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert!(!text.contains("pod=\"web\""), "{text}");
    }
}
