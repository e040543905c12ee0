//! Creating one container process from an OCI bundle: the monitor clones it into its new
//! namespaces ([`spawn`]); the child sets itself up ([`init`]) and waits on an exec FIFO
//! until the monitor starts it.

pub(crate) mod caps;
mod devices;
mod init;
mod mounts;
mod namespaces;
mod paths;
mod personality;
pub(crate) mod process;
mod rootfs;
pub(crate) mod seccomp;
mod spec;
mod sysctl;

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::sys::{self, CloneResult};

pub use init::InitError;
pub use seccomp::{supported as seccomp_support, Supported as SeccompSupport};
pub use spec::{load_bundle, SpecError};

/// How long the monitor waits for a child to finish its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unsupported namespace configuration: {0}")]
    Unsupported(String),
    #[error("cannot create sync pipe for container {id}")]
    Pipe {
        id: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot clone container process for {id}")]
    Clone {
        id: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot read setup result of container {id} (pid {pid})")]
    SyncRead {
        id: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id} (pid {pid}) did not finish setup within {timeout:?}")]
    SetupTimeout { id: String, pid: i32, timeout: Duration },
    #[error("container {id} setup failed: {message}")]
    Setup { id: String, message: String },
}

/// Everything the container's init needs, prepared by the monitor before the clone.
pub struct InitSpec {
    pub id: String,
    pub spec: Spec,
    /// Absolute path of the rootfs on the host.
    pub rootfs: PathBuf,
    /// cgroup.procs files to join (the child writes "0" to each).
    pub cgroup_procs: Vec<PathBuf>,
    /// Host cgroup directories to show at a spec mount of type "cgroup": (name, dir); the name
    /// is empty for a pure v2 host (the dir is mounted at the destination itself).
    pub cgroup_views: Vec<(String, PathBuf)>,
    /// Where the user process's stdin, stdout and stderr come from.
    pub stdio: Stdio,
    /// A FIFO the child reads one byte from before exec (written by `start`).
    pub exec_fifo: PathBuf,
    /// Inherited fds 3..3+N passed on to the user process (runc's `--preserve-fds`).
    pub preserve_fds: u32,
    /// chroot instead of pivot_root (runc's `--no-pivot`, for rootfs on ramfs).
    pub no_pivot: bool,
}

/// The user process's stdio.
pub enum Stdio {
    /// stdin from /dev/null, stdout and stderr on this log file (opened O_APPEND by the
    /// monitor), so logs land with no relay process.
    Log(OwnedFd),
    /// Keep the caller's fds 0-2, as runc does without a terminal: the caller (a shim, a
    /// shell) owns the pipes.
    Inherit,
}

/// Clone the container process for `init` and wait until it is set up and paused before exec.
/// Returns its host pid. The caller (single-threaded monitor) becomes its parent.
pub fn spawn(init: InitSpec) -> Result<Pid, ContainerError> {
    let flags = namespaces::clone_flags(&init.spec)?;
    let (sync_read, sync_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|source| ContainerError::Pipe { id: init.id.clone(), source })?;
    let id = init.id.clone();
    match sys::clone_process(flags).map_err(|source| ContainerError::Clone { id: id.clone(), source })? {
        CloneResult::Child => {
            drop(sync_read);
            init::run_child(init, sync_write)
        }
        CloneResult::Parent { child } => {
            drop(sync_write);
            drop(init);
            match wait_for_setup(&id, child, sync_read) {
                Ok(()) => Ok(child),
                Err(e) => {
                    // The child exits on its own after reporting a failure; kill it in case it
                    // hangs, then reap it so no zombie is left behind.
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(e)
                }
            }
        }
    }
}

/// Read the child's report: "ok", or an error message, then EOF.
fn wait_for_setup(id: &str, pid: Pid, sync_read: OwnedFd) -> Result<(), ContainerError> {
    let timeout = PollTimeout::try_from(SETUP_TIMEOUT).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(sync_read.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, timeout).map_err(|e| ContainerError::SyncRead {
        id: id.to_string(),
        pid: pid.as_raw(),
        source: e.into(),
    })?;
    if ready == 0 {
        return Err(ContainerError::SetupTimeout { id: id.to_string(), pid: pid.as_raw(), timeout: SETUP_TIMEOUT });
    }
    let mut report = String::new();
    std::fs::File::from(sync_read).read_to_string(&mut report).map_err(|source| ContainerError::SyncRead {
        id: id.to_string(),
        pid: pid.as_raw(),
        source,
    })?;
    match report.as_str() {
        init::SETUP_OK => Ok(()),
        "" => Err(ContainerError::Setup {
            id: id.to_string(),
            message: "container process exited without reporting".to_string(),
        }),
        message => Err(ContainerError::Setup { id: id.to_string(), message: message.to_string() }),
    }
}

/// The `rootfs` of a bundle, resolved against the bundle directory.
pub fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| PathBuf::from("rootfs"));
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}
