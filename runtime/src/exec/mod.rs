//! Running one more process in a running container, as `runc exec` does: the init's
//! namespaces and cgroups, then the process spec (env, cwd, user, umask, capabilities,
//! rlimits, no_new_privs, oom_score_adj, the container's seccomp profile), then execve.
//!
//! # Why a helper process
//!
//! Joining a mount namespace with setns(2) needs a single-threaded caller, and the child of a
//! fork in a multithreaded process (the agent runs tokio) may only make async-signal-safe calls
//! until it execs: no allocation, so no libseccomp, no JSON, no error text. So the caller never
//! joins anything, in any of its threads. It starts a *helper* ([`ExecHelper`]: its own binary
//! re-executed with [`HELPER_COMMAND`], whose `main` calls [`helper_main`] first thing) with
//! `std::process::Command`, which is safe from any thread, and sends it a request over a socket
//! pair. The helper is a fresh single-threaded process; it
//!
//! 1. opens a pidfd on the container's init and checks it is still that process (start time,
//!    cgroup membership), opens the container's `cgroup.procs` files while it still sees the
//!    host's cgroupfs, compiles the seccomp profile and sets oom_score_adj;
//! 2. joins the init's namespaces that differ from its own with one `setns(pidfd)` (Linux
//!    5.8), all but the cgroup namespace;
//! 3. forks, so that the child is in the container's pid namespace. The child joins the
//!    container's cgroups through those files, and only then its cgroup namespace (whose root
//!    must be above the cgroup it is in); it applies the process spec and execs; a setup error
//!    comes back on a close-on-exec pipe;
//! 4. reports the child's pid and, unless detached, stays its parent: it forwards the signals it
//!    gets, SIGKILLs the child when the caller closes its end of the socket (a timeout, a
//!    dropped future, a dead caller), and reports the exit code (128+N when killed by signal
//!    N). The child has SIGKILL as its parent-death signal, so a killed helper takes it along.
//!
//! The helper itself never joins the container's cgroups, so it counts against none of its
//! limits and `ps` shows only the exec'd process.

mod capture;
mod child;
mod helper;
mod join;
mod launch;
mod overrides;
mod target;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use capture::{exec_sync, run_sync, ExecOutput, EXEC_SYNC_OUTPUT_LIMIT};
pub use helper::helper_main;
pub use launch::{exec_detached, exec_in_container, ExecHelper, ExecOptions, ExecProcess, HELPER_ARG0};
pub use overrides::ExecOverrides;
pub use target::ExecTarget;

use crate::cgroups::CgroupError;
use crate::container::SpecError;
use crate::monitor::{ContainerStatus, RuntimeError};

/// The first argument that makes a binary run [`helper_main`] (see [`ExecHelper::this_binary`]).
pub const HELPER_COMMAND: &str = "exec-helper";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("invalid process for exec in container {id}: {reason}")]
    InvalidProcess { id: String, reason: &'static str },
    #[error("cannot exec in container {id}: process.terminal needs a console socket to send the pty to")]
    Terminal { id: String },
    #[error("container {id} is {status}: cannot exec in it")]
    NotRunning { id: String, status: ContainerStatus },
    #[error("cannot get the state of container {id}")]
    State {
        id: String,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error("cannot read the bundle of container {id}")]
    Spec {
        id: String,
        #[source]
        source: Box<SpecError>,
    },
    #[error("cgroup of container {id}")]
    Cgroup {
        id: String,
        #[source]
        source: Box<CgroupError>,
    },
    #[error("cannot create the exec control socket for container {id}")]
    Socket {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the exec helper {program}")]
    SpawnHelper {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot talk to the exec helper (pid {pid}) of container {id}")]
    Control {
        id: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the exec helper (pid {pid}) of container {id} exited without reporting ({status})")]
    HelperDied { id: String, pid: u32, status: String },
    #[error("unexpected report from the exec helper of container {id}: {report}")]
    Protocol { id: String, report: String },
    #[error("cannot exec in container {id}: {message}")]
    Setup { id: String, message: String },
    #[error("exec in container {id} did not start within {timeout:?}")]
    StartTimeout { id: String, timeout: Duration },
    #[error("the exec task for container {id} failed")]
    Task {
        id: String,
        #[source]
        source: tokio::task::JoinError,
    },
}
