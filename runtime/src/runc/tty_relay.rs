//! `exec -t` in the foreground without a console socket: as runc does, we take the pty's
//! master ourselves and copy between it and our stdio, with our own terminal (when stdin is
//! one) in raw mode meanwhile and its size passed on.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};

use crate::sys;

/// How long the end of the output may take to arrive once the process exited.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

pub(super) struct TtyRelay {
    stdin: std::io::Stdin,
    master: OwnedFd,
    /// Our terminal's settings before raw mode, restored on drop.
    saved: Option<Termios>,
    stdin_open: bool,
    master_open: bool,
}

/// What poll said about the relay's fds.
#[derive(Default)]
pub(super) struct Ready {
    stdin: bool,
    master: bool,
}

impl TtyRelay {
    pub fn new(master: OwnedFd) -> TtyRelay {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        let relay = TtyRelay { stdin, master, saved, stdin_open: true, master_open: true };
        relay.resize();
        relay
    }

    /// Our terminal's size onto the pty (on start and on SIGWINCH).
    pub fn resize(&self) {
        if let Ok(size) = sys::window_size(self.stdin.as_fd()) {
            let _ = sys::set_window_size(self.master.as_fd(), &size);
        }
    }

    /// The fds to poll: stdin while it is open, the master while the pty is.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = Vec::new();
        if self.stdin_open {
            fds.push(PollFd::new(self.stdin.as_fd(), PollFlags::POLLIN));
        }
        if self.master_open {
            fds.push(PollFd::new(self.master.as_fd(), PollFlags::POLLIN));
        }
        fds
    }

    /// Which of [`Self::poll_fds`] are ready, from their results.
    pub fn ready(&self, fds: &[PollFd<'_>]) -> Ready {
        let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let mut fds = fds.iter();
        let stdin = self.stdin_open && fds.next().is_some_and(is_ready);
        let master = self.master_open && fds.next().is_some_and(is_ready);
        Ready { stdin, master }
    }

    /// Copy what is ready, one read each.
    pub fn pump(&mut self, ready: &Ready) {
        if ready.stdin {
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&self.stdin, &mut buf) {
                Ok(0) | Err(_) => self.stdin_open = false,
                Ok(n) => {
                    if write_all(self.master.as_fd(), &buf[..n]).is_err() {
                        self.stdin_open = false;
                    }
                }
            }
        }
        if ready.master {
            self.copy_output();
        }
    }

    /// Whatever output is still in the pty once the process exited.
    pub fn drain(&mut self) {
        while self.master_open {
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(DRAIN_TIMEOUT).unwrap_or(PollTimeout::ZERO);
            if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
                return;
            }
            self.copy_output();
        }
    }

    /// One read from the master to our stdout; EIO means no slave is open any more.
    fn copy_output(&mut self) {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(0) | Err(_) => self.master_open = false,
            Ok(n) => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
            }
        }
    }
}

impl Drop for TtyRelay {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(self.stdin.as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
