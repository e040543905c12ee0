//! The node's container monitor (see docs/architecture.md): [`run_monitor`] is the one
//! process that parents every container; [`Runtime`] is the agent's client for it.

mod client;
mod containers;
pub(crate) mod procfs;
mod protocol;
mod server;
pub(crate) mod store;

use std::path::PathBuf;

pub use client::{ContainerEvents, Runtime, WatchStart};
pub use protocol::{ContainerEvent, ContainerState, ContainerStatus};
pub use server::run_monitor;

use crate::cgroups::CgroupError;
use crate::container::{ContainerError, SpecError};

/// The monitor's socket, relative to the runtime root.
pub const SOCKET_NAME: &str = "monitor.sock";
/// The monitor's pid file, relative to the runtime root.
pub const PID_FILE_NAME: &str = "monitor.pid";
/// Where a spawned monitor's stdout and stderr go, relative to the runtime root.
pub const LOG_FILE_NAME: &str = "monitor.log";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    // --- errors the monitor reports to clients -------------------------------------------
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("container {id} already exists")]
    AlreadyExists { id: String },
    #[error("container {id} is {status}: cannot {operation}")]
    InvalidState { id: String, status: ContainerStatus, operation: &'static str },
    #[error("invalid container id {id:?}: use letters, digits, '-', '_' and '.'")]
    InvalidId { id: String },
    #[error("monitor failed: {message}")]
    Monitor { message: String },

    // --- client side -----------------------------------------------------------------------
    #[error("cannot talk to the monitor at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot spawn the monitor {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor at {path} did not answer within {seconds}s")]
    MonitorTimeout { path: PathBuf, seconds: u64 },
    #[error("the monitor closed the connection at {path} without answering")]
    NoAnswer { path: PathBuf },
    #[error("unexpected answer from the monitor: {answer}")]
    UnexpectedAnswer { answer: String },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot decode {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    // --- monitor side ----------------------------------------------------------------------
    #[error("another monitor holds the lock {path}")]
    AlreadyRunning { path: PathBuf },
    #[error("cannot set up the monitor: {what} {path}")]
    Setup {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor system call failed: {what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write container state {path}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read bundle of container {id}")]
    Spec {
        id: String,
        #[source]
        source: Box<SpecError>,
    },
    #[error("rootfs {path} of container {id} is missing")]
    Rootfs {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open log file {path}")]
    LogFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create exec fifo {path}")]
    ExecFifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start container {id} through {path}")]
    Start {
        id: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot signal container {id} (pid {pid})")]
    Signal {
        id: String,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cgroup of container {id}")]
    Cgroup {
        id: String,
        #[source]
        source: Box<CgroupError>,
    },
    #[error("cannot create container {id}")]
    Container {
        id: String,
        #[source]
        source: Box<ContainerError>,
    },
    #[error("cannot remove container directory {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// "outer: inner: root cause" of a runtime error, for logs and the wire.
pub fn error_text(error: &RuntimeError) -> String {
    crate::error_chain(error)
}
