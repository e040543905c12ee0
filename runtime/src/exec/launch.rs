//! The caller's side of an exec: start the helper (safe from any thread: a plain spawn), send
//! it the request, read its reports, and never leave it or its process behind.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::wire::{Channel, Report, Request, CONTROL_FD_ENV};
use super::{ExecError, ExecTarget, HELPER_COMMAND};

/// How long a helper told to stop (or that reported its end) may take to exit before it is
/// SIGKILLed.
const HELPER_GRACE: Duration = Duration::from_secs(5);

/// The helper's `argv[0]`, followed by ":" and the container id.
pub const HELPER_ARG0: &str = "nodelet-exec-helper";

/// How to start the helper: a binary whose `main` calls [`super::helper_main`] when started
/// with these arguments.
#[derive(Debug, Clone)]
pub struct ExecHelper {
    program: PathBuf,
    args: Vec<OsString>,
}

impl ExecHelper {
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> ExecHelper {
        ExecHelper { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }

    /// The running binary itself (`/proc/self/exe`, which survives an upgrade on disk) with
    /// [`HELPER_COMMAND`] as its first argument.
    pub fn this_binary() -> ExecHelper {
        ExecHelper::new("/proc/self/exe", [HELPER_COMMAND])
    }
}

/// The exec'd process's stdio (the helper's, which it inherits) and the caller's fds
/// 3..3+`preserve_fds` passed on to it, as runc's `--preserve-fds`.
#[derive(Debug)]
pub struct ExecOptions {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub preserve_fds: u32,
    /// For a process with `terminal`: a connected Unix socket the pty's master is sent to
    /// (SCM_RIGHTS, as runc's `--console-socket`); the pty's slave becomes its stdio.
    pub console: Option<OwnedFd>,
}

impl Default for ExecOptions {
    /// The caller's own stdio, as `runc exec` without a terminal.
    fn default() -> Self {
        ExecOptions {
            stdin: Stdio::inherit(),
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
            preserve_fds: 0,
            console: None,
        }
    }
}

/// A process running in a container, supervised by its helper (our child). Dropping it before
/// its exit kills it.
#[derive(Debug)]
pub struct ExecProcess {
    id: String,
    pid: Pid,
    helper: Child,
    helper_reaped: bool,
    control: Channel,
    exit_code: Option<i32>,
    /// Its stdout and stderr when [`ExecOptions`] asked for pipes.
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// Run `process` in the container and return once it has exec'd (a missing executable, a bad
/// user or cwd is an error here, not an exit code). Blocks while the helper sets up.
pub fn exec_in_container(
    helper: &ExecHelper,
    target: &ExecTarget,
    process: &Process,
    options: ExecOptions,
) -> Result<ExecProcess, ExecError> {
    start(helper, target, process, options, false, None)
}

/// Like [`exec_in_container`], but nobody waits for the process: the helper exits once it has
/// exec'd, so it is re-parented to the caller's subreaper (or init). Returns its host pid.
pub fn exec_detached(
    helper: &ExecHelper,
    target: &ExecTarget,
    process: &Process,
    options: ExecOptions,
) -> Result<Pid, ExecError> {
    let mut exec = start(helper, target, process, options, true, None)?;
    exec.reap_helper();
    Ok(exec.pid)
}

/// Spawn the helper and read its first report, within `timeout` if one is given.
pub(super) fn start(
    helper: &ExecHelper,
    target: &ExecTarget,
    process: &Process,
    options: ExecOptions,
    detach: bool,
    timeout: Option<Duration>,
) -> Result<ExecProcess, ExecError> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let id = target.id.clone();
    let process = target.effective_process(process)?;
    match (process.terminal().unwrap_or(false), options.console.is_some()) {
        (true, false) => return Err(ExecError::Terminal { id }),
        (false, true) => {
            return Err(ExecError::InvalidProcess { id, reason: "a console socket needs process.terminal" })
        }
        _ => {}
    }
    let request = Request {
        id: id.clone(),
        init_pid: target.init_pid.as_raw(),
        init_start_time: target.init_start_time,
        cgroup_procs: target.cgroup_procs.clone(),
        process,
        seccomp: target.spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        preserve_fds: options.preserve_fds,
        detach,
        console_fd: options.console.as_ref().map(|fd| fd.as_raw_fd()),
    };
    let (ours, theirs) = UnixStream::pair().map_err(|source| ExecError::Socket { id: id.clone(), source })?;
    let control = Channel::new(ours).map_err(|source| ExecError::Socket { id: id.clone(), source })?;
    let console = options.console.as_ref().map(|fd| fd.as_raw_fd());
    let mut helper_child = spawn_helper(helper, &target.id, &theirs, console, options)?;
    drop(theirs);
    let mut exec = ExecProcess {
        id,
        pid: Pid::from_raw(0),
        stdout: helper_child.stdout.take(),
        stderr: helper_child.stderr.take(),
        helper: helper_child,
        helper_reaped: false,
        control,
        exit_code: None,
    };
    // On any error below, dropping `exec` stops the helper and reaps it.
    exec.control.send(&request).map_err(|source| exec.control_error(source))?;
    if !exec.readable_by(deadline)? {
        return Err(ExecError::StartTimeout { id: exec.id.clone(), timeout: timeout.unwrap_or_default() });
    }
    match exec.next_report()? {
        Report::Started { pid } => {
            exec.pid = Pid::from_raw(pid);
            Ok(exec)
        }
        Report::Failed { message } => Err(ExecError::Setup { id: exec.id.clone(), message }),
        other => Err(ExecError::Protocol { id: exec.id.clone(), report: format!("{other:?}") }),
    }
}

/// The helper inherits our end of the control socket and the console socket (if any) at
/// their numbers; both are closed here once it runs.
fn spawn_helper(
    helper: &ExecHelper,
    id: &str,
    theirs: &UnixStream,
    console: Option<RawFd>,
    options: ExecOptions,
) -> Result<Child, ExecError> {
    let mut command = Command::new(&helper.program);
    command
        .arg0(format!("{HELPER_ARG0}:{id}")) // what ps shows: which container it serves
        .args(&helper.args)
        .env(CONTROL_FD_ENV, theirs.as_raw_fd().to_string())
        .stdin(options.stdin)
        .stdout(options.stdout)
        .stderr(options.stderr);
    crate::sys::inherit_fd(&mut command, theirs.as_raw_fd());
    if let Some(fd) = console {
        crate::sys::inherit_fd(&mut command, fd);
    }
    command.spawn().map_err(|source| ExecError::SpawnHelper { program: helper.program.clone(), source })
}

impl ExecProcess {
    /// The process's pid on the host.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The exit code (128+N when killed by signal N) once the helper has reported it; never
    /// blocks. Poll [`AsFd::as_fd`] for readability to know when to call it again.
    pub fn try_wait(&mut self) -> Result<Option<i32>, ExecError> {
        if self.exit_code.is_none() && self.readable_by(Some(Instant::now()))? {
            match self.next_report()? {
                Report::Exited { code } => {
                    self.exit_code = Some(code);
                    self.reap_helper();
                }
                other => return Err(ExecError::Protocol { id: self.id.clone(), report: format!("{other:?}") }),
            }
        }
        Ok(self.exit_code)
    }

    /// Block until the process has exited; its exit code.
    pub fn wait(&mut self) -> Result<i32, ExecError> {
        loop {
            if let Some(code) = self.try_wait()? {
                return Ok(code);
            }
            self.readable_by(None)?;
        }
    }

    /// Pass `signal` on to the process (through its helper, which is still its parent, so it
    /// cannot hit a reused pid). Does nothing once it has exited.
    pub fn signal(&self, signal: Signal) {
        if self.exit_code.is_none() && !self.helper_reaped {
            let _ = nix::sys::signal::kill(self.helper_pid(), signal);
        }
    }

    /// Have the helper SIGKILL the process; its exit code (137) is then reported as usual.
    pub fn kill(&self) {
        self.control.shutdown_write();
    }

    fn helper_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.helper.id()).unwrap_or(i32::MAX))
    }

    /// Whether a report (or the helper's exit) can be read without blocking, waiting until
    /// `deadline` (None: for as long as it takes).
    fn readable_by(&self, deadline: Option<Instant>) -> Result<bool, ExecError> {
        if self.control.has_buffered() {
            return Ok(true);
        }
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => poll_timeout(deadline.saturating_duration_since(Instant::now())),
            };
            let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(n) => return Ok(n > 0),
                Err(nix::errno::Errno::EINTR) => continue, // a signal handler ran on this thread
                Err(e) => return Err(self.control_error(e.into())),
            }
        }
    }

    /// The next report; the helper's end (it died) is an error naming its exit status.
    fn next_report(&mut self) -> Result<Report, ExecError> {
        match self.control.recv::<Report>() {
            Ok(Some(report)) => Ok(report),
            Ok(None) => {
                let status = self.reap_helper();
                Err(ExecError::HelperDied { id: self.id.clone(), pid: self.helper.id(), status })
            }
            Err(source) => Err(self.control_error(source)),
        }
    }

    pub(super) fn control_error(&self, source: std::io::Error) -> ExecError {
        ExecError::Control { id: self.id.clone(), pid: self.helper.id(), source }
    }

    /// Wait for the helper, which is exiting (it reported its end or closed its socket).
    fn reap_helper(&mut self) -> String {
        self.helper_reaped = true;
        match self.helper.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }

    /// Stop the process and its helper: ask the helper to kill it, give the helper a grace
    /// period to report and exit, then SIGKILL the helper.
    fn stop(&mut self) {
        self.kill();
        let deadline = Instant::now() + HELPER_GRACE;
        while !self.helper_reaped {
            match self.readable_by(Some(deadline)) {
                Ok(true) => {
                    if let Ok(Report::Exited { code }) = self.next_report() {
                        self.exit_code = Some(code);
                    }
                }
                Ok(false) | Err(_) => {
                    tracing::warn!(id = %self.id, helper = self.helper.id(), "exec helper did not stop: killing it");
                    let _ = self.helper.kill();
                    self.reap_helper();
                }
            }
        }
    }
}

impl AsFd for ExecProcess {
    /// Readable when the helper has reported the exit code, or is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.control.as_fd()
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if !self.helper_reaped {
            self.stop();
        }
    }
}

pub(super) fn poll_timeout(duration: Duration) -> PollTimeout {
    PollTimeout::try_from(duration).unwrap_or(PollTimeout::MAX)
}
