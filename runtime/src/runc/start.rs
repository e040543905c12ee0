//! `start`: release a created container's init from its exec FIFO.

use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use super::container::{self, Container, ContainerStatus, EXEC_FIFO};
use super::RuncError;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    pub id: String,
}

pub(super) fn start(root: &Path, id: &str) -> Result<(), RuncError> {
    let mut c = Container::load(root, id)?;
    match c.status {
        ContainerStatus::Created | ContainerStatus::Creating => {}
        ContainerStatus::Running => return Err(RuncError::AlreadyRunning),
        ContainerStatus::Stopped => return Err(RuncError::StartStopped),
    }
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
    tracing::debug!(%id, "started container");
    Ok(())
}
