//! The wire format between [`super::Runtime`] and the monitor: one JSON object per line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Creating,
    Created,
    Running,
    Stopped,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    pub id: String,
    pub status: ContainerStatus,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// 128+signal when killed by a signal, as shells and the kubelet report it.
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    /// From config.json, so the agent can map containers back to pods.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Ping,
    Create {
        id: String,
        bundle: PathBuf,
        log_path: PathBuf,
    },
    Start {
        id: String,
    },
    State {
        id: String,
    },
    List,
    Kill {
        id: String,
        signal: i32,
    },
    Delete {
        id: String,
        force: bool,
    },
    /// Answered with a `List` of every container, then the connection stays open and the
    /// monitor sends a `Changed` or `Deleted` line each time a container's state changes.
    Watch,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Response {
    Ok,
    State {
        state: Box<ContainerState>,
    },
    List {
        states: Vec<ContainerState>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// To watchers: the container's state after a change.
    Changed {
        state: Box<ContainerState>,
    },
    /// To watchers: the container is gone.
    Deleted {
        id: String,
    },
}

/// One line from the monitor: an answer or a pushed change, and `seq`, the number of the
/// last change the monitor had sent to its watchers when it wrote the line. A client that
/// saw `seq` on an answer knows that a watcher has every change the answer reflects once
/// it has read up to that number.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Line {
    #[serde(flatten)]
    pub response: Response,
    /// Absent from monitors that predate watching.
    #[serde(default)]
    pub seq: u64,
}

/// One change a watcher of the monitor sees.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerEvent {
    Changed { state: ContainerState, seq: u64 },
    Deleted { id: String, seq: u64 },
}

impl ContainerEvent {
    pub fn seq(&self) -> u64 {
        match self {
            ContainerEvent::Changed { seq, .. } | ContainerEvent::Deleted { seq, .. } => *seq,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidState,
    Failed,
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
        })
    }
}
