//! The helper process (see the module docs of [`super`]): read the request, get hold of the
//! container, join its namespaces, fork the process, report, and supervise it.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::child::{self, ChildSetup};
use super::join::{self, JoinError};
use super::wire::{Channel, Report, Request, CONTROL_FD_ENV};
use crate::container::process::{self, ProcessError};
use crate::container::seccomp::{self, SeccompError};
use crate::error_chain;
use crate::sys::{self, CloneResult, FORWARDED_SIGNALS};

/// Exit code of a helper that could not start the process (as `runc exec` fails).
const FAILED: i32 = 255;

#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("the exec helper must be single-threaded (it has {threads} threads): call helper_main first in main")]
    Threads { threads: String },
    #[error("cannot start a new session")]
    Setsid(#[source] nix::Error),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("invalid seccomp profile of the container")]
    Seccomp(#[source] SeccompError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot {what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot read the setup report of the process (pid {pid})")]
    Report {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Child(String),
    #[error("stopped by the caller before the process started")]
    Cancelled,
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> HelperError {
    move |source| HelperError::Sys { what, source }
}

/// The helper's entry point: a binary calls it first thing in `main` when its first argument
/// is [`super::HELPER_COMMAND`], before it starts any thread. Never returns.
pub fn helper_main() -> ! {
    let code = match control_channel() {
        Ok(mut control) => serve(&mut control),
        Err(message) => {
            eprintln!("nodelet exec helper: {message}");
            2
        }
    };
    std::process::exit(code)
}

/// Our end of the socket pair, whose number the caller put in the environment.
fn control_channel() -> Result<Channel, String> {
    let raw = std::env::var(CONTROL_FD_ENV).map_err(|_| format!("not started by an exec ({CONTROL_FD_ENV} unset)"))?;
    let number: RawFd = raw.parse().map_err(|_| format!("invalid {CONTROL_FD_ENV} {raw:?}"))?;
    let fd = sys::take_inherited_fd(number).map_err(|e| format!("control fd {number}: {e}"))?;
    Channel::new(UnixStream::from(fd)).map_err(|e| format!("control fd {number}: {e}"))
}

/// Read the request, start the process, report; supervise it unless detached. The exit code.
fn serve(control: &mut Channel) -> i32 {
    let request: Request = match control.recv() {
        Ok(Some(request)) => request,
        Ok(None) => return FAILED, // the caller went away
        Err(e) => {
            // A caller of another version, most likely.
            let _ = control.send(&Report::Failed { message: format!("invalid exec request: {e}") });
            return FAILED;
        }
    };
    let (child, signals) = match launch(&request, control) {
        Ok(launched) => launched,
        Err(e) => {
            let _ = control.send(&Report::Failed { message: error_chain(&e) });
            return FAILED;
        }
    };
    let _ = control.send(&Report::Started { pid: child.as_raw() });
    if request.detach {
        return 0;
    }
    let code = supervise(child, control, &signals);
    let _ = control.send(&Report::Exited { code });
    code
}

/// Everything up to the exec of the process; its pid and the signals to supervise it with.
fn launch(request: &Request, control: &Channel) -> Result<(Pid, SignalFd), HelperError> {
    check_single_threaded()?;
    let console = request
        .console_fd
        .map(|fd| sys::take_inherited_fd(fd).map_err(sys_err("take the console socket")))
        .transpose()?;
    // Our own session: a terminal's signals reach only the caller, which passes them on once.
    nix::unistd::setsid().map_err(HelperError::Setsid)?;
    let init = join::open_init(request.init_pid, request.init_start_time, &request.cgroup_procs)?;
    let cgroups = join::open_cgroups(&request.cgroup_procs)?;
    let filter = request.seccomp.as_ref().map(seccomp::compile_profile).transpose().map_err(HelperError::Seccomp)?;
    // Before the mount namespace changes what /proc/self is.
    process::set_oom_score_adj(&request.process)?;
    let namespaces = join::differing_namespaces(init.pid)?;
    let signals = block_signals()?;
    join::enter(&init, namespaces - CloneFlags::CLONE_NEWCGROUP)?;
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create the report pipe"))?;
    // Forked after setns, so that the child is in the container's pid namespace.
    match sys::clone_process(CloneFlags::empty()).map_err(sys_err("fork the process"))? {
        CloneResult::Child => {
            drop(report_read);
            let setup = ChildSetup {
                request,
                init: &init,
                cgroups: &cgroups,
                cgroup_ns: namespaces.contains(CloneFlags::CLONE_NEWCGROUP),
                seccomp: filter.as_ref(),
                console: console.as_ref(),
            };
            child::run(setup, report_write)
        }
        CloneResult::Parent { child } => {
            drop(report_write);
            drop(console);
            wait_for_exec(child, report_read, control)?;
            let signals = SignalFd::new(&signals).map_err(sys_err("create a signalfd"))?;
            Ok((child, signals))
        }
    }
}

/// setns of a mount namespace and fork both need a process with one thread.
fn check_single_threaded() -> Result<(), HelperError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).map(str::trim).unwrap_or("?");
    if threads == "1" {
        Ok(())
    } else {
        Err(HelperError::Threads { threads: threads.to_string() })
    }
}

/// Blocked before the fork, so that none is lost; the child unblocks them all.
fn block_signals() -> Result<SigSet, HelperError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for &signal in FORWARDED_SIGNALS {
        mask.add(signal);
    }
    mask.thread_block().map_err(sys_err("block signals"))?;
    Ok(mask)
}

/// The child's report: EOF with nothing written means it exec'd. If the caller gives up
/// meanwhile (closes its end), the child is killed.
fn wait_for_exec(child: Pid, report: OwnedFd, control: &Channel) -> Result<(), HelperError> {
    let mut cancelled = false;
    loop {
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN), PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        let watched = if cancelled { &mut fds[..1] } else { &mut fds[..] };
        match poll(watched, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(source) => return Err(HelperError::Sys { what: "wait for the process to exec", source }),
            Ok(_) => {}
        }
        if !cancelled && fds[1].any().unwrap_or(false) {
            let _ = kill(child, Signal::SIGKILL);
            cancelled = true;
        }
        if fds[0].any().unwrap_or(false) {
            break;
        }
    }
    let mut message = String::new();
    let read = std::fs::File::from(report).read_to_string(&mut message);
    if cancelled || !message.is_empty() || read.is_err() {
        let _ = waitpid(child, None); // it exits right after reporting, or was killed
    }
    match read {
        Err(source) => Err(HelperError::Report { pid: child.as_raw(), source }),
        Ok(_) if cancelled => Err(HelperError::Cancelled),
        Ok(_) if !message.is_empty() => Err(HelperError::Child(message)),
        Ok(_) => Ok(()),
    }
}

/// Wait for the process, passing signals on, and kill it when the caller closes its end.
/// Its exit code, 128+N when killed by signal N.
fn supervise(child: Pid, control: &Channel, signals: &SignalFd) -> i32 {
    let mut caller_gone = false;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) => {}
            Err(_) => return FAILED, // not our child any more: cannot happen
        }
        let mut fds =
            [PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        let watched = if caller_gone { &mut fds[..1] } else { &mut fds[..] };
        if let Err(Errno::EINTR) | Ok(0) = poll(watched, PollTimeout::NONE) {
            continue;
        }
        if !caller_gone && fds[1].any().unwrap_or(false) {
            let _ = kill(child, Signal::SIGKILL);
            caller_gone = true;
        }
        if fds[0].any().unwrap_or(false) {
            forward(child, signals);
        }
    }
}

fn forward(child: Pid, signals: &SignalFd) {
    if let Ok(Some(info)) = signals.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(signal) => {
                let _ = kill(child, signal);
            }
        }
    }
}
