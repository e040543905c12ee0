//! Container probes as kubelet runs them: startup, liveness and readiness, each in a task of
//! its own per container attempt ([`task`]), over HTTP, TCP, gRPC or exec in the container
//! ([`handler`]). A probe's results pass its thresholds ([`tally`]) and land in the pod's
//! [`ProbeResults`], which wakes the pod worker when a verdict changes. The worker reads them
//! as part of what it observes, so `step::decide` and `status` stay pure: a liveness or
//! startup failure becomes a kill there, readiness becomes `ready` and the Ready condition.
//! [`PodProber`] starts the tasks as containers run (liveness and readiness only once the
//! startup probe passed) and stops them when containers stop or the pod goes.

pub mod grpc;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod pod_prober;
pub mod results;
pub mod spec;
pub mod tally;
pub mod task;
pub mod tcp;

pub use metrics::ProbeMetrics;
pub use pod_prober::PodProber;
pub use results::{ProbeResults, ProbeView, Verdicts};
pub use spec::{ContainerProbes, Handler, ProbeSpec};

/// The user agent of kubelet 1.32's probes (nodelet reports itself as a 1.32 kubelet).
pub const USER_AGENT: &str = "kube-probe/1.32";

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];

    /// kubelet's name: the `probe_type` metric label and the start of its messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// As kubelet words a kill: "failed liveness probe".
    pub fn lowercase(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// A probe's standing once a threshold was reached. No verdict yet is `None` wherever this is
/// kept: readiness then means not ready, startup not started, liveness alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// What one run of a probe's handler found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Counts as a success (kubelet's probe.Warning): a redirect to another host, not followed.
    Warning(String),
    Failure(String),
    /// The probe could not run (a port name the container does not declare, a runtime
    /// error): kubelet throws such results away, neither success nor failure.
    Unknown(String),
}
