//! Creating one container process from an OCI bundle: the monitor clones it into its new
//! namespaces ([`spawn`]); the child sets itself up ([`init`]) and waits on an exec FIFO
//! until the monitor starts it.

pub(crate) mod caps;
mod console;
mod devices;
pub mod hooks;
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

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::sys::{self, CloneResult};
use hooks::{HookError, HookKind, HookState};

pub use console::ConsoleError;
pub use init::InitError;
pub use seccomp::{supported as seccomp_support, Supported as SeccompSupport};
pub use spec::{load_bundle, SpecError};

/// How long the monitor waits for a child to finish its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unsupported namespace configuration: {0}")]
    Unsupported(String),
    #[error("cannot create sync socket for container {id}")]
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
    #[error("cannot resume container {id} (pid {pid}) after its hooks")]
    SyncWrite {
        id: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}")]
    Hook {
        id: String,
        #[source]
        source: Box<HookError>,
    },
}

/// Everything the container's init needs, prepared by the monitor before the clone.
pub struct InitSpec {
    pub id: String,
    pub spec: Spec,
    /// Absolute path of the bundle (the hooks' state and working directory).
    pub bundle: PathBuf,
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
    /// A FIFO the child holds open (close-on-exec) until it execs, writing the error of a
    /// failed startContainer hook there first: `start` reads it to EOF to know the user
    /// process runs. None when the caller does not wait (the monitor).
    pub start_fifo: Option<PathBuf>,
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
    /// `process.terminal`: a pty made in the container, its master sent over this connected
    /// console socket, its slave the process's stdio.
    Terminal(OwnedFd),
}

/// Clone the container process for `init` and wait until it is set up and paused before exec.
/// Returns its host pid. The caller (single-threaded monitor) becomes its parent.
pub fn spawn(init: InitSpec) -> Result<Pid, ContainerError> {
    let flags = namespaces::clone_flags(&init.spec)?;
    // Datagrams, so each message (a hook request, the pid, the report) arrives whole.
    let (parent_end, child_end) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|source| ContainerError::Pipe { id: init.id.clone(), source })?;
    let id = init.id.clone();
    match sys::clone_process(flags).map_err(|source| ContainerError::Clone { id: id.clone(), source })? {
        CloneResult::Child => {
            drop(parent_end);
            init::run_child(init, child_end)
        }
        CloneResult::Parent { child } => {
            drop(child_end);
            let hooks = RuntimeHooks {
                hooks: init.spec.hooks().clone(),
                state: HookState::of_spec(&init.spec, &id, &init.bundle),
            };
            drop(init);
            match wait_for_setup(&id, child, parent_end, &hooks) {
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

/// What the runtime side needs to run the prestart and createRuntime hooks.
struct RuntimeHooks {
    hooks: Option<oci_spec::runtime::Hooks>,
    state: HookState,
}

/// Read the child's messages: a request to run the runtime-side hooks (answered with the
/// child's host pid once they passed), then "ok" or an error message.
fn wait_for_setup(id: &str, pid: Pid, sync: OwnedFd, hooks: &RuntimeHooks) -> Result<(), ContainerError> {
    let mut sync = std::fs::File::from(sync);
    let mut report = receive(id, pid, &sync, SETUP_TIMEOUT)?;
    if report == init::RUN_HOOKS {
        let state = hooks.state.with("creating", Some(pid.as_raw()));
        let hook_err = |e| ContainerError::Hook { id: id.to_string(), source: Box::new(e) };
        let cwd = Some(state.bundle.as_path());
        hooks::run_all(HookKind::Prestart, hooks.hooks.as_ref(), &state, cwd).map_err(hook_err)?;
        hooks::run_all(HookKind::CreateRuntime, hooks.hooks.as_ref(), &state, cwd).map_err(hook_err)?;
        sync.write_all(pid.as_raw().to_string().as_bytes()).map_err(|source| ContainerError::SyncWrite {
            id: id.to_string(),
            pid: pid.as_raw(),
            source,
        })?;
        // The child now runs the createContainer hooks: their timeouts come on top.
        let extra = hooks::total_timeout(HookKind::CreateContainer, hooks.hooks.as_ref()).unwrap_or_default();
        report = receive(id, pid, &sync, SETUP_TIMEOUT + extra)?;
    }
    match report.as_str() {
        init::SETUP_OK => Ok(()),
        "" => Err(ContainerError::Setup {
            id: id.to_string(),
            message: "container process exited without reporting".to_string(),
        }),
        message => Err(ContainerError::Setup { id: id.to_string(), message: message.to_string() }),
    }
}

/// One message from the child ("" once it closed its end), waiting at most `timeout`.
fn receive(id: &str, pid: Pid, sync: &std::fs::File, timeout: Duration) -> Result<String, ContainerError> {
    let read_err = |source| ContainerError::SyncRead { id: id.to_string(), pid: pid.as_raw(), source };
    let mut fds = [PollFd::new(sync.as_fd(), PollFlags::POLLIN)];
    let ready =
        poll(&mut fds, PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)).map_err(|e| read_err(e.into()))?;
    if ready == 0 {
        return Err(ContainerError::SetupTimeout { id: id.to_string(), pid: pid.as_raw(), timeout });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let n = (&*sync).read(&mut buf).map_err(read_err)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
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
