//! The worker's view of one pod: what is wanted (plan), what the runtime shows (observed),
//! and what the worker remembers between steps (memory: errors, backoffs, deletion progress).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::ids::ContainerOwner;
use super::probe::{ContainerProbes, ProbeView};
use super::runtime_port::{ContainerInfo, ImageInfo, PullPolicy, SandboxInfo};

/// Kubernetes' default terminationGracePeriodSeconds.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(text: Option<&str>) -> RestartPolicy {
        match text {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Where a container sits in the pod's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// spec.containers.
    App,
    /// An init container: runs to completion, in order, before the next one starts.
    Init,
    /// A restartable init container (`restartPolicy: Always`): started in order with the init
    /// containers, kept running beside the app containers, stopped after them.
    Sidecar,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub kind: ContainerKind,
    pub image: String,
    pub pull_policy: PullPolicy,
    pub probes: ContainerProbes,
}

impl ContainerPlan {
    fn from_container(container: &k8s_openapi::api::core::v1::Container, kind: ContainerKind) -> ContainerPlan {
        let image = container.image.clone().unwrap_or_default();
        ContainerPlan {
            name: container.name.clone(),
            kind,
            pull_policy: PullPolicy::for_container(container.image_pull_policy.as_deref(), &image),
            image,
            probes: ContainerProbes::from_container(container),
        }
    }

    /// Whether the attempt that exited with `exit_code` is followed by another.
    pub fn restarts(&self, policy: RestartPolicy, exit_code: i32) -> bool {
        match self.kind {
            ContainerKind::App => policy.restarts(exit_code),
            ContainerKind::Init => exit_code != 0 && policy != RestartPolicy::Never,
            ContainerKind::Sidecar => true,
        }
    }
}

/// Why the pod is going away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The API set deletionTimestamp: stop, release, then the final delete.
    Deleted { grace: Duration },
    /// The pod vanished from its source: stop and release, nothing to report.
    Gone { grace: Duration },
}

impl Removal {
    pub fn grace(self) -> Duration {
        match self {
            Removal::Deleted { grace } | Removal::Gone { grace } => grace,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodPlan {
    pub uid: String,
    pub restart_policy: RestartPolicy,
    /// spec.initContainers, in order: run-to-completion ones and sidecars.
    pub init_containers: Vec<ContainerPlan>,
    /// spec.containers.
    pub containers: Vec<ContainerPlan>,
    pub removal: Option<Removal>,
    /// terminationGracePeriodSeconds: the grace of a kill for a failed probe, unless the
    /// probe sets its own.
    pub termination_grace: Duration,
    /// The pod has volumes to set up before its sandbox and containers.
    pub has_volumes: bool,
}

impl PodPlan {
    /// `gone` says the pod left its source entirely.
    pub fn from_pod(pod: &Pod, gone: bool) -> PodPlan {
        let spec = pod.spec.clone().unwrap_or_default();
        let seconds = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(0));
        let termination_grace = spec.termination_grace_period_seconds.map_or(DEFAULT_GRACE, seconds);
        let grace = pod.metadata.deletion_grace_period_seconds.map_or(termination_grace, seconds);
        let removal = if gone {
            Some(Removal::Gone { grace })
        } else if pod.metadata.deletion_timestamp.is_some() {
            Some(Removal::Deleted { grace })
        } else {
            None
        };
        PodPlan {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            restart_policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
            init_containers: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| {
                    let sidecar = c.restart_policy.as_deref() == Some("Always");
                    ContainerPlan::from_container(c, if sidecar { ContainerKind::Sidecar } else { ContainerKind::Init })
                })
                .collect(),
            containers: spec.containers.iter().map(|c| ContainerPlan::from_container(c, ContainerKind::App)).collect(),
            removal,
            termination_grace,
            has_volumes: spec.volumes.as_ref().is_some_and(|v| !v.is_empty()),
        }
    }
}

impl PodPlan {
    /// Init containers (and sidecars) in order, then the app containers.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init_containers.iter().chain(&self.containers)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerPlan> {
        self.all_containers().find(|c| c.name == name)
    }

    /// The containers that keep running once the pod is initialized: sidecars and apps.
    pub fn long_running(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.all_containers().filter(|c| c.kind != ContainerKind::Init)
    }
}

/// One attempt of a container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    pub info: ContainerInfo,
}

/// The runtime's containers of one pod, by container name, oldest attempt first, and what
/// their probes found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub containers: BTreeMap<String, Vec<Attempt>>,
    pub probes: ProbeView,
}

impl Observed {
    /// Pick this pod's containers out of the runtime's list.
    pub fn for_pod(uid: &str, all: &[ContainerInfo]) -> Observed {
        let mut containers: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
        for info in all {
            let Some(owner) = ContainerOwner::from_annotations(&info.annotations) else {
                continue;
            };
            if owner.pod_uid == uid {
                containers
                    .entry(owner.container_name)
                    .or_default()
                    .push(Attempt { attempt: owner.attempt, info: info.clone() });
            }
        }
        for attempts in containers.values_mut() {
            attempts.sort_by_key(|a| a.attempt);
        }
        Observed { containers, probes: ProbeView::default() }
    }

    pub fn latest(&self, name: &str) -> Option<&Attempt> {
        self.containers.get(name).and_then(|a| a.last())
    }

    pub fn previous(&self, name: &str) -> Option<&Attempt> {
        self.containers.get(name).and_then(|a| a.len().checked_sub(2).and_then(|i| a.get(i)))
    }

    pub fn all(&self) -> impl Iterator<Item = &Attempt> {
        self.containers.values().flatten()
    }
}

/// A reason and message a container shows while waiting, as kubelet words them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// What the worker remembers about one container between steps.
#[derive(Clone, Debug, Default)]
pub struct ContainerMemory {
    pub image: Option<ImageInfo>,
    /// The last error of a pull or create, shown as the waiting reason.
    pub error: Option<Waiting>,
    /// No pull or create before this instant (after an error).
    pub retry_at: Option<Instant>,
    pub error_streak: u32,
    /// Restarts done in a row without a long enough run in between.
    pub crash_streak: u32,
    /// The attempt whose exit was last seen, and when the worker saw it.
    pub exit_seen: Option<(u32, Instant)>,
    /// The kill of an attempt that failed its liveness or startup probe, under way.
    pub probe_kill: Option<ProbeKill>,
    /// The attempt that was sent SIGTERM to stop the pod (or its sidecars).
    pub term_sent: Option<u32>,
}

/// How far the kill of an unhealthy attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeKill {
    pub attempt: u32,
    pub term_sent_at: Instant,
    pub kill_sent: bool,
}

/// What the worker remembers about the pod between steps.
#[derive(Clone, Debug, Default)]
pub struct PodMemory {
    pub sandbox: Option<SandboxInfo>,
    /// The pod IP stays reported after the sandbox is released.
    pub pod_ip: Option<std::net::Ipv4Addr>,
    pub sandbox_released: bool,
    pub sandbox_error: Option<String>,
    pub sandbox_retry_at: Option<Instant>,
    pub sandbox_error_streak: u32,
    /// Every volume is set up (since this worker started: an adopted pod sets them up again,
    /// reusing what exists).
    pub volumes_ready: bool,
    pub volume_retry_at: Option<Instant>,
    pub volume_error_streak: u32,
    /// When the volumes filled from objects and the pod are rewritten next.
    pub volume_resync_at: Option<Instant>,
    pub containers: BTreeMap<String, ContainerMemory>,
    pub term_sent_at: Option<Instant>,
    pub kill_sent: bool,
    pub torn_down: bool,
}

impl PodMemory {
    pub fn container(&self, name: &str) -> ContainerMemory {
        self.containers.get(name).cloned().unwrap_or_default()
    }

    pub fn container_mut(&mut self, name: &str) -> &mut ContainerMemory {
        self.containers.entry(name.to_string()).or_default()
    }
}
