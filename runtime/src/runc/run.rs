//! `run`: create and start; without --detach, stay the init's parent, forward signals to it,
//! wait, delete the container and exit with its exit code (128+N when killed by signal N).

use std::path::Path;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::container::Container;
use super::create::{create, CreateArgs};
use super::{start, RuncError};
use crate::sys::FORWARDED_SIGNALS;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Do not wait: leave the container running and exit.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

pub(super) fn run(root: &Path, args: &RunArgs) -> Result<i32, RuncError> {
    let id = &args.create.id;
    if args.detach {
        create(root, &args.create)?;
        return start_or_destroy(root, id).map(|()| 0);
    }
    // Blocked before the clone so none is lost; the init resets its own mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for sig in FORWARDED_SIGNALS {
        mask.add(*sig);
    }
    mask.thread_block().map_err(|source| RuncError::Sys { what: "cannot block signals", source })?;
    let pid = create(root, &args.create)?;
    start_or_destroy(root, id)?;
    let code = wait_forwarding(pid, &mask);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
    super::delete::delete(root, id, true)?;
    code
}

fn start_or_destroy(root: &Path, id: &str) -> Result<(), RuncError> {
    start::start(root, id).inspect_err(|_| {
        if let Ok(c) = Container::load(root, id) {
            let _ = c.destroy();
        }
    })
}

/// Wait for our child `pid`, passing on the signals we receive.
fn wait_forwarding(pid: Pid, mask: &SigSet) -> Result<i32, RuncError> {
    let signals = SignalFd::new(mask).map_err(|source| RuncError::Sys { what: "cannot create signalfd", source })?;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(source) => return Err(RuncError::Sys { what: "cannot wait for the container", source }),
        }
        let info = signals.read_signal().map_err(|source| RuncError::Sys { what: "cannot read signals", source })?;
        let Some(info) = info else { continue };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(pid, sig);
        }
    }
}
