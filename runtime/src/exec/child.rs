//! The exec'd process between the helper's fork and its execve, already in the container's
//! namespaces (but its cgroup namespace): cgroups, then the process spec in runc's order, then
//! exec. A failure is written to the report pipe, which the exec closes when it succeeds.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

use super::join::Init;
use super::wire::Request;
use crate::container::caps::{self, CapsError};
use crate::container::console::{self, ConsoleError};
use crate::container::lsm::{self, LsmError};
use crate::container::process::{self, Command, ProcessError};
use crate::container::sched::{self, SchedError};
use crate::container::seccomp::{Filter, SeccompError};
use crate::{error_chain, sys};

/// The child's exit code when it never exec'd (the helper reports the error, not this).
const SETUP_FAILED: i32 = 255;

#[derive(Debug, thiserror::Error)]
pub(super) enum ChildError {
    #[error("cannot reset signal handling")]
    Signals(#[source] nix::Error),
    #[error("cannot make the process non-dumpable")]
    Dumpable(#[source] nix::Error),
    #[error("cannot join cgroup {path}")]
    JoinCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join the cgroup namespace of the container init (pid {pid})")]
    CgroupNamespace {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start a new session")]
    Setsid(#[source] nix::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot set capabilities")]
    Caps(#[source] CapsError),
    #[error("cannot load the container's seccomp filter")]
    Seccomp(#[source] SeccompError),
    #[error("cannot set the parent death signal")]
    DeathSignal(#[source] nix::Error),
    #[error("cannot close inherited file descriptors")]
    CloseFds(#[source] nix::Error),
    #[error("cannot set up the terminal")]
    Console(#[source] ConsoleError),
    #[error("cannot set the scheduling of the process")]
    Sched(#[source] SchedError),
    #[error("cannot set the security labels of the process")]
    Lsm(#[source] LsmError),
}

/// What the helper hands over to its child.
pub(super) struct ChildSetup<'a> {
    pub request: &'a Request,
    pub init: &'a Init,
    pub cgroups: &'a [(PathBuf, File)],
    /// Whether the init has a cgroup namespace of its own to join.
    pub cgroup_ns: bool,
    pub seccomp: Option<&'a Filter>,
    /// The console socket for a terminal.
    pub console: Option<&'a OwnedFd>,
}

/// The child's whole life: exec, or report why not and exit. Never returns into the helper.
pub(super) fn run(setup: ChildSetup<'_>, report: OwnedFd) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exec(&setup, report)));
    sys::exit_immediately(outcome.unwrap_or(SETUP_FAILED))
}

fn exec(setup: &ChildSetup<'_>, report: OwnedFd) -> i32 {
    let mut report = File::from(report);
    let error = match prepare(setup, report.as_raw_fd()) {
        Ok(command) => ChildError::Process(process::exec(&command)),
        Err(e) => e,
    };
    let _ = report.write_all(error_chain(&error).as_bytes());
    SETUP_FAILED
}

/// runc's order for a setns process: cgroups and namespaces, session, rlimits, seccomp when
/// it must be loaded with privileges, bounding set, user, capabilities, cwd, no_new_privs;
/// the filter otherwise goes on last, so that it sees no syscall of ours but the execve.
fn prepare(setup: &ChildSetup<'_>, report: RawFd) -> Result<Command, ChildError> {
    let process = &setup.request.process;
    sys::reset_signals().map_err(ChildError::Signals)?;
    // In the container's pid namespace with the runtime's binary as /proc/<pid>/exe until
    // execve: closed to the container's processes (CVE-2019-5736), as runc does.
    nix::sys::prctl::set_dumpable(false).map_err(ChildError::Dumpable)?;
    join_cgroups(setup)?;
    nix::unistd::setsid().map_err(ChildError::Setsid)?;
    if let Some(socket) = setup.console {
        console::set_up(socket, process, false).map_err(ChildError::Console)?;
    }
    process::set_rlimits(process)?;
    sched::apply(process).map_err(ChildError::Sched)?;
    lsm::apply_on_exec(process).map_err(ChildError::Lsm)?;
    let late_filter = load_filter_if_privileged(setup.seccomp, process)?;
    let caps = process.capabilities().as_ref();
    caps::limit_bounding_set(caps).map_err(ChildError::Caps)?;
    process::set_user(process)?;
    process::set_umask(process);
    caps::apply_process_sets(caps).map_err(ChildError::Caps)?;
    process::change_cwd(process)?;
    let command = process::resolve_command(process)?;
    process::set_no_new_privileges(process)?;
    if !setup.request.detach {
        // After the uid change, which clears it: if the helper is killed, so is the process.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(ChildError::DeathSignal)?;
    }
    // Only stdio and the preserved fds reach the process (the report pipe closes on exec).
    sys::close_fds_except(&kept_fds(setup.request.preserve_fds, report)).map_err(ChildError::CloseFds)?;
    if let Some(filter) = late_filter {
        filter.load().map_err(ChildError::Seccomp)?;
    }
    Ok(command)
}

/// Into the container's cgroups (through the files the helper opened on the host), then into
/// its cgroup namespace, so that the namespace's root is the cgroup we are now in.
fn join_cgroups(setup: &ChildSetup<'_>) -> Result<(), ChildError> {
    for (path, file) in setup.cgroups {
        let mut file: &File = file;
        file.write_all(b"0").map_err(|source| ChildError::JoinCgroup { path: path.clone(), source })?;
    }
    if setup.cgroup_ns {
        setns(&setup.init.pidfd, CloneFlags::CLONE_NEWCGROUP)
            .map_err(|source| ChildError::CgroupNamespace { pid: setup.init.pid.as_raw(), source })?;
    }
    Ok(())
}

/// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it now, before the
/// capabilities are dropped (as the container's init and runc do). Otherwise keep it for last.
fn load_filter_if_privileged<'a>(
    filter: Option<&'a Filter>,
    process: &Process,
) -> Result<Option<&'a Filter>, ChildError> {
    match filter {
        Some(filter) if !process.no_new_privileges().unwrap_or(false) => {
            filter.load().map_err(ChildError::Seccomp)?;
            Ok(None)
        }
        filter => Ok(filter),
    }
}

/// 0-2, the preserved 3..3+N, and the report pipe.
fn kept_fds(preserve_fds: u32, report: RawFd) -> Vec<RawFd> {
    let preserved = (3..3i64.saturating_add(i64::from(preserve_fds))).filter_map(|fd| RawFd::try_from(fd).ok());
    (0..3).chain(preserved).chain(std::iter::once(report)).collect()
}
