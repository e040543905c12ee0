//! `start`: release a created container's init from its exec FIFO; with startContainer or
//! poststart hooks, wait until it has run the former and exec'd the user process, then run
//! the latter.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use super::container::{self, Container, RuncStatus, EXEC_FIFO, START_FIFO};
use super::{io_err, RuncError};
use crate::container::hooks::{self, HookKind};
use crate::monitor::ContainerStatus;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    pub id: String,
}

pub(super) fn start(root: &Path, id: &str) -> Result<(), RuncError> {
    let mut c = Container::load(root, id)?;
    match c.status {
        RuncStatus::Created | RuncStatus::Creating => {}
        RuncStatus::Running => return Err(RuncError::AlreadyRunning),
        RuncStatus::Stopped => return Err(RuncError::StartStopped),
        status @ RuncStatus::Paused => return Err(RuncError::StartInState(status)),
    }
    // Opened before the init is released, so its report (or its exec) cannot be missed.
    let report = open_start_report(&c.dir)?;
    let fifo = c.dir.join(EXEC_FIFO);
    // Non-blocking: if the init died there is no reader, and this fails (ENXIO) instead of
    // hanging.
    let writer = open(&fifo, OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|source| RuncError::Sys { what: "cannot start container: exec fifo", source })?;
    nix::unistd::write(&writer, b"0").map_err(|source| RuncError::Sys { what: "cannot start container", source })?;
    drop(writer);
    // The FIFO is gone once started, so a second start fails even before the state is saved.
    let _ = std::fs::remove_file(&fifo);
    c.rec.record.state.status = ContainerStatus::Running;
    c.rec.record.state.started_at = Some(chrono::Utc::now());
    container::save(&c.dir, &c.rec)?;
    if let Some(report) = report {
        let failure = read_report(report)?;
        let _ = std::fs::remove_file(c.dir.join(START_FIFO));
        if !failure.is_empty() {
            return Err(RuncError::StartHook(failure));
        }
    }
    let state = c.hook_state("running", c.live_pid().map(|p| p.as_raw()));
    hooks::run_logged(HookKind::Poststart, c.rec.hooks.as_ref(), &state, Some(&state.bundle));
    tracing::debug!(%id, "started container");
    Ok(())
}

/// The read end of the start FIFO (None for a container created without one). Opening
/// a FIFO for reading with O_NONBLOCK never blocks.
fn open_start_report(dir: &Path) -> Result<Option<std::fs::File>, RuncError> {
    let path = dir.join(START_FIFO);
    match open(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok(Some(std::fs::File::from(fd))),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(source) => Err(RuncError::Sys { what: "cannot open start fifo", source }),
    }
}

/// Everything the init writes before its end closes: nothing when the user process was
/// exec'd, the error otherwise.
fn read_report(mut report: std::fs::File) -> Result<String, RuncError> {
    let sys_err = |source| RuncError::Sys { what: "cannot read start fifo", source };
    // Wait in poll, then read blocking: EOF comes when the init's close-on-exec end closes.
    let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(source) => return Err(sys_err(source)),
        }
    }
    fcntl(&report, FcntlArg::F_SETFL(OFlag::empty())).map_err(sys_err)?;
    let mut text = String::new();
    report.read_to_string(&mut text).map_err(io_err("cannot read start fifo", START_FIFO))?;
    Ok(text)
}
