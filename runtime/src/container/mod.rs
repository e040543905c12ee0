//! Creating one container process from an OCI bundle: the monitor clones it into its new
//! namespaces ([`spawn`]); the child sets itself up ([`init`]) and waits on an exec FIFO
//! until the monitor starts it.

pub(crate) mod caps;
pub(crate) mod console;
mod devices;
pub mod hooks;
mod idmap;
mod init;
pub(crate) mod lsm;
mod mounts;
mod namespaces;
mod paths;
mod personality;
pub(crate) mod process;
mod rootfs;
pub(crate) mod sched;
pub(crate) mod seccomp;
mod spec;
mod stage;
mod sysctl;
mod timens;
mod userns;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::cgroups::InitJoin;
use crate::sys::{self, CloneResult};
use hooks::{HookError, HookKind, HookState};

pub use console::ConsoleError;
pub use idmap::IdmapError;
pub use init::InitError;
pub use lsm::LsmError;
pub(crate) use mounts::recursive_option_names as recursive_mount_options;
pub use sched::SchedError;
pub use seccomp::{supported as seccomp_support, Supported as SeccompSupport};
pub use spec::{load_bundle, SpecError};
pub use timens::TimensError;
pub use userns::UsernsError;

/// How long the monitor waits for a child to finish its setup, hooks aside.
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
    #[error("invalid user namespace configuration")]
    UserNamespace(#[source] UsernsError),
    #[error("invalid time namespace configuration")]
    TimeNamespace(#[source] TimensError),
    #[error("invalid process")]
    Lsm(#[source] LsmError),
    #[error("invalid process")]
    Sched(#[source] SchedError),
    #[error("cannot prepare the id-mapped mounts of container {id}")]
    Idmap {
        id: String,
        #[source]
        source: IdmapError,
    },
    #[error("cannot set up the user namespace of container {id} (pid {pid})")]
    IdMaps {
        id: String,
        pid: i32,
        #[source]
        source: UsernsError,
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
    /// How the child joins its cgroup: the files it writes "0" to, and the cgroup2 directory
    /// it is cloned into (on refusal, it writes that directory's cgroup.procs instead).
    pub cgroup_join: InitJoin,
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
pub fn spawn(mut init: InitSpec) -> Result<Pid, ContainerError> {
    let flags = namespaces::clone_flags(&init.spec)?;
    userns::validate(&init.spec).map_err(ContainerError::UserNamespace)?;
    timens::validate(&init.spec).map_err(ContainerError::TimeNamespace)?;
    if let Some(process) = init.spec.process() {
        lsm::validate(process).map_err(ContainerError::Lsm)?;
        sched::validate(process).map_err(ContainerError::Sched)?;
    }
    let idmap_err = |source| ContainerError::Idmap { id: init.id.clone(), source };
    let mount_maps = idmap::MountMaps::read(&init.bundle).map_err(idmap_err)?;
    idmap::validate(&init.spec, &mount_maps).map_err(idmap_err)?;
    let idmapped = idmap::prepare(&init.spec, &mount_maps).map_err(idmap_err)?;
    let staged = namespaces::needs_staging(&init.spec);
    let seccomp = seccomp::compile_cached(&init.spec);
    // Datagrams, so each message (a hook request, the pid, the report) arrives whole.
    let (parent_end, child_end) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|source| ContainerError::Pipe { id: init.id.clone(), source })?;
    let id = init.id.clone();
    let first_flags = if staged { CloneFlags::empty() } else { flags };
    match clone_first(&mut init.cgroup_join, first_flags)
        .map_err(|source| ContainerError::Clone { id: id.clone(), source })?
    {
        CloneResult::Child => {
            drop(parent_end);
            if staged {
                stage::run(init, child_end, flags, Prepared { joined: false, idmapped, seccomp })
            } else {
                init::run_child(init, child_end, Prepared { joined: false, idmapped, seccomp })
            }
        }
        CloneResult::Parent { child } => {
            drop(child_end);
            drop((idmapped, seccomp)); // the child holds its copies
            let setup = ParentSetup {
                hooks: RuntimeHooks {
                    hooks: init.spec.hooks().clone(),
                    state: HookState::of_spec(&init.spec, &id, &init.bundle),
                },
                new_userns: flags.contains(CloneFlags::CLONE_NEWUSER),
                spec: init.spec,
                staged,
            };
            let mut sync = std::fs::File::from(parent_end);
            setup.drive(&id, child, &mut sync).map_err(|(pid, e)| {
                // The child exits on its own after reporting a failure; kill it in case it
                // hangs, then reap it so no zombie is left behind.
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                }
                e
            })
        }
    }
}

/// The first clone (the init, or the intermediate whose clone it is), straight into the
/// cgroup2 directory when there is one; if the kernel refuses (before 5.7, or a cgroup that
/// cannot take it), the child joins it through its cgroup.procs instead.
fn clone_first(join: &mut InitJoin, flags: CloneFlags) -> Result<CloneResult, nix::Error> {
    if let Some(dir) = join.clone_into.take() {
        let opened = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        match opened.and_then(|fd| sys::clone_into_cgroup(flags, fd.as_fd())) {
            Ok(cloned) => return Ok(cloned),
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot clone into the cgroup, joining after"),
        }
        join.task_files.push(dir.join("cgroup.procs"));
    }
    sys::clone_process(flags)
}

/// What the runtime side made for the init before the clone.
pub(super) struct Prepared {
    /// An intermediate process already joined the spec's namespaces by path.
    joined: bool,
    idmapped: Vec<idmap::IdmappedMount>,
    /// The seccomp filter, compiled (or found in the cache) before the clone.
    seccomp: Option<std::rc::Rc<seccomp::Filter>>,
}

/// The runtime side of a container's setup.
struct ParentSetup {
    hooks: RuntimeHooks,
    spec: Spec,
    new_userns: bool,
    staged: bool,
}

impl ParentSetup {
    /// The init's pid (the child itself, or the one the intermediate cloned) once it is set
    /// up; on failure, the init to kill (none when the intermediate failed).
    fn drive(&self, id: &str, child: Pid, sync: &mut std::fs::File) -> Result<Pid, (Option<Pid>, ContainerError)> {
        let pid = if self.staged { stage::receive_pid(id, child, sync).map_err(|e| (None, e))? } else { child };
        self.map_ids(id, pid, sync)
            .and_then(|()| wait_for_setup(id, pid, sync, &self.hooks))
            .map_err(|e| (Some(pid), e))?;
        Ok(pid)
    }

    /// A new user namespace: write its id maps (and the oom score, which the init cannot
    /// lower from inside it), then let the init go on.
    fn map_ids(&self, id: &str, pid: Pid, sync: &mut std::fs::File) -> Result<(), ContainerError> {
        if !self.new_userns {
            return Ok(());
        }
        let map_err = |source| ContainerError::IdMaps { id: id.to_string(), pid: pid.as_raw(), source };
        userns::write_id_maps(pid, &self.spec).map_err(map_err)?;
        if let Some(score) = self.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            let path = PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
            std::fs::write(&path, score.to_string())
                .map_err(|source| map_err(UsernsError::WriteMap { path, source }))?;
        }
        sync.write_all(init::IDS_MAPPED.as_bytes()).map_err(|source| ContainerError::SyncWrite {
            id: id.to_string(),
            pid: pid.as_raw(),
            source,
        })
    }
}

/// What the runtime side needs to run the prestart and createRuntime hooks.
struct RuntimeHooks {
    hooks: Option<oci_spec::runtime::Hooks>,
    state: HookState,
}

/// Read the child's messages: a request to run the runtime-side hooks (answered with the
/// child's host pid once they passed), then "ok" or an error message.
fn wait_for_setup(id: &str, pid: Pid, sync: &mut std::fs::File, hooks: &RuntimeHooks) -> Result<(), ContainerError> {
    let mut report = receive(id, pid, sync, Some(SETUP_TIMEOUT))?;
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
        // The child now runs the createContainer hooks: their timeouts come on top, and one
        // without a timeout lifts the deadline (as prestart and createRuntime ones have none).
        let timeout = hooks::total_timeout(HookKind::CreateContainer, hooks.hooks.as_ref()).map(|t| SETUP_TIMEOUT + t);
        report = receive(id, pid, sync, timeout)?;
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

/// One message from the child ("" once it closed its end), waiting at most `timeout` (for
/// ever when None).
pub(super) fn receive(
    id: &str,
    pid: Pid,
    sync: &std::fs::File,
    timeout: Option<Duration>,
) -> Result<String, ContainerError> {
    let read_err = |source| ContainerError::SyncRead { id: id.to_string(), pid: pid.as_raw(), source };
    let mut fds = [PollFd::new(sync.as_fd(), PollFlags::POLLIN)];
    let poll_timeout = timeout.map_or(PollTimeout::NONE, |t| PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX));
    let ready = poll(&mut fds, poll_timeout).map_err(|e| read_err(e.into()))?;
    if let (0, Some(timeout)) = (ready, timeout) {
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
