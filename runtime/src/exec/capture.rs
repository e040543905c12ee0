//! `exec_sync`: run a command in a container within a timeout and keep a bounded amount of
//! what it writes, as the kubelet's exec probes need (CRI's ExecSync).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::launch::{self, poll_timeout};
use super::{ExecError, ExecHelper, ExecOptions, ExecOverrides, ExecProcess, ExecTarget};
use crate::monitor::{ContainerStatus, Runtime};

/// What [`exec_sync`] keeps of each of stdout and stderr: the kubelet keeps 10 KiB of an
/// exec probe's output.
pub const EXEC_SYNC_OUTPUT_LIMIT: usize = 10 * 1024;

/// How long after the timeout the killed process may take to be reported gone.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, 128+N when killed by signal N (137 when killed at the timeout).
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command was still running at the timeout and was killed.
    pub timed_out: bool,
    /// Output past the limit was dropped.
    pub truncated: bool,
}

/// Run `argv` in the monitor's running container `id`, with the container's env, cwd, user,
/// capabilities and seccomp profile, as the kubelet's exec probes do: kill it after `timeout`,
/// keep [`EXEC_SYNC_OUTPUT_LIMIT`] bytes of each of stdout and stderr. The waiting runs on
/// tokio's blocking pool (a poll(2) loop in one thread), the setns work in a helper process;
/// dropping the future kills the process too.
pub async fn exec_sync(
    runtime: &Runtime,
    helper: &ExecHelper,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let state =
        runtime.state(id).await.map_err(|source| ExecError::State { id: id.to_string(), source: Box::new(source) })?;
    let pid = match (state.status, state.pid) {
        (ContainerStatus::Running, Some(pid)) => Pid::from_raw(pid),
        (status, _) => return Err(ExecError::NotRunning { id: id.to_string(), status }),
    };
    // Closed when this future is dropped: the blocking loop then kills the process.
    let (cancelled, _cancel_on_drop) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ExecError::Socket { id: id.to_string(), source: e.into() })?;
    let (helper, task_id, argv) = (helper.clone(), id.to_string(), argv.to_vec());
    let task = tokio::task::spawn_blocking(move || {
        let target = ExecTarget::from_bundle(&state.id, pid, &state.bundle)?;
        let base = target.container_process().cloned().unwrap_or_default();
        let process = ExecOverrides { args: argv, ..Default::default() }.apply(&base);
        run(&helper, &target, &process, timeout, EXEC_SYNC_OUTPUT_LIMIT, Some(cancelled))
    });
    task.await.map_err(|source| ExecError::Task { id: task_id, source })?
}

/// The blocking core of [`exec_sync`]: run `process` in `target`, stdin from /dev/null, and
/// keep at most `limit` bytes of each of stdout and stderr. A process still running at
/// `timeout` is killed and reported with `timed_out`; one that does not even start by then is
/// an [`ExecError::StartTimeout`].
pub fn run_sync(
    helper: &ExecHelper,
    target: &ExecTarget,
    process: &Process,
    timeout: Duration,
    limit: usize,
) -> Result<ExecOutput, ExecError> {
    run(helper, target, process, timeout, limit, None)
}

/// [`run_sync`], also killing the process as soon as `cancel` becomes readable (its write end
/// closed).
fn run(
    helper: &ExecHelper,
    target: &ExecTarget,
    process: &Process,
    timeout: Duration,
    limit: usize,
    cancel: Option<OwnedFd>,
) -> Result<ExecOutput, ExecError> {
    let deadline = Instant::now() + timeout;
    let options = ExecOptions {
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        preserve_fds: 0,
        console: None,
    };
    let mut exec = launch::start(helper, target, process, options, false, Some(timeout))?;
    let mut stdout = Capture::new(exec.stdout.take().map(OwnedFd::from), limit);
    let mut stderr = Capture::new(exec.stderr.take().map(OwnedFd::from), limit);
    let mut cancel = cancel;
    let mut timed_out = false;
    let exit_code = loop {
        if let Some(code) = exec.try_wait()? {
            break code;
        }
        let now = Instant::now();
        if !timed_out && now >= deadline {
            exec.kill();
            timed_out = true;
        }
        if timed_out && now >= deadline + KILL_GRACE {
            drop(exec); // kills the helper, and with it the process (its parent-death signal)
            break 128 + libc::SIGKILL;
        }
        let until = if timed_out { deadline + KILL_GRACE } else { deadline };
        let fds = [stdout.fd(), stderr.fd(), cancel.as_ref().map(|c| c.as_fd())];
        let [out_ready, err_ready, cancel_ready] = wait_readable(&exec, fds, until)?;
        if out_ready {
            stdout.read_some();
        }
        if err_ready {
            stderr.read_some();
        }
        if cancel_ready {
            exec.kill();
            cancel = None;
        }
    };
    // What the process wrote is in the pipes by now; a background child of it may hold them
    // open for longer, so take what is there and do not wait for EOF.
    stdout.drain();
    stderr.drain();
    let truncated = stdout.truncated || stderr.truncated;
    Ok(ExecOutput { exit_code, stdout: stdout.bytes, stderr: stderr.bytes, timed_out, truncated })
}

/// Poll the helper's reports and the fds still open in `fds` until one is ready or `until`;
/// which of `fds` are readable.
fn wait_readable<const N: usize>(
    exec: &ExecProcess,
    fds: [Option<BorrowedFd<'_>>; N],
    until: Instant,
) -> Result<[bool; N], ExecError> {
    let mut polled = vec![PollFd::new(exec.as_fd(), PollFlags::POLLIN)];
    let mut slots = [None; N];
    for (slot, fd) in slots.iter_mut().zip(fds) {
        if let Some(fd) = fd {
            *slot = Some(polled.len());
            polled.push(PollFd::new(fd, PollFlags::POLLIN));
        }
    }
    match poll(&mut polled, poll_timeout(until.saturating_duration_since(Instant::now()))) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(exec.control_error(e.into())),
    }
    Ok(slots.map(|slot| slot.is_some_and(|i| polled[i].any().unwrap_or(false))))
}

/// One output pipe, read into a buffer that keeps the first `limit` bytes (the rest is read
/// and dropped, so the writer never blocks on a full pipe).
struct Capture {
    pipe: Option<File>,
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(pipe: Option<OwnedFd>, limit: usize) -> Capture {
        Capture { pipe: pipe.map(File::from), bytes: Vec::new(), limit, truncated: false }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(|p| p.as_fd())
    }

    /// One read; at EOF (or on an error) the pipe is closed. Whether it may have more.
    fn read_some(&mut self) -> bool {
        let Some(pipe) = &mut self.pipe else {
            return false;
        };
        let mut chunk = [0u8; 8192];
        match pipe.read(&mut chunk) {
            Ok(0) => {
                self.pipe = None;
                false
            }
            Ok(n) => {
                self.keep(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.pipe = None;
                false
            }
        }
    }

    fn keep(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.truncated |= chunk.len() > room;
    }

    /// Read what the pipe holds now, without waiting for more.
    fn drain(&mut self) {
        let nonblocking = self.pipe.as_ref().map(|p| fcntl(p, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok());
        if nonblocking == Some(true) {
            while self.read_some() {}
        }
        self.pipe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_and_drains_without_blocking() {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut capture = Capture::new(Some(read), 5);
        nix::unistd::write(&write, b"hello world").unwrap();
        assert!(capture.read_some());
        assert_eq!(capture.bytes, b"hello");
        assert!(capture.truncated);
        nix::unistd::write(&write, b"more").unwrap();
        capture.drain(); // the writer is still open: must not wait for EOF
        assert!(capture.fd().is_none());
        assert_eq!(capture.bytes, b"hello");
    }

    #[test]
    fn eof_closes_the_pipe() {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut capture = Capture::new(Some(read), 100);
        nix::unistd::write(&write, b"ok\n").unwrap();
        drop(write);
        assert!(capture.read_some());
        assert!(!capture.read_some());
        assert!(capture.fd().is_none());
        assert_eq!(capture.bytes, b"ok\n");
        assert!(!capture.truncated);
    }
}
