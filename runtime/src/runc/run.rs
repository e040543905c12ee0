//! `run`: create and start; without --detach, stay the init's parent, forward signals to it,
//! relay its terminal (`process.terminal`: runc's own pty relay), wait, delete the container
//! and exit with its exit code (128+N when killed by signal N).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::container::Container;
use super::create::{create, create_with, load_bundle, wants_terminal, CreateArgs};
use super::tty_relay::TtyRelay;
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
    // In the foreground, runc relays a terminal itself: a console socket makes no sense.
    if args.create.console_socket.is_some() {
        return Err(RuncError::ConsoleWithoutTerminal);
    }
    let loaded = load_bundle(&args.create);
    // An unreadable bundle: no terminal, and create reports why.
    let terminal_asked = loaded.as_ref().is_ok_and(|(_, spec)| wants_terminal(spec));
    let (console, relay_end) = if terminal_asked { console_pair()? } else { (None, None) };
    // Blocked before the clone so none is lost; the init resets its own mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for sig in FORWARDED_SIGNALS {
        mask.add(*sig);
    }
    mask.thread_block().map_err(|source| RuncError::Sys { what: "cannot block signals", source })?;
    let pid = create_with(root, &args.create, console, loaded)?;
    // The init sent the master during create.
    let relay = match relay_end {
        Some(socket) => match crate::sys::receive_fd(socket.as_fd()) {
            Ok((_, master)) => Some(TtyRelay::new(master)),
            Err(source) => {
                let _ = Container::load(root, id).map(|c| c.destroy());
                return Err(RuncError::Sys { what: "cannot receive the terminal's master", source });
            }
        },
        None => None,
    };
    start_or_destroy(root, id)?;
    let code = wait_forwarding(pid, &mask, relay);
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

/// A connected pair: one end for the init's console, ours to receive the master on.
fn console_pair() -> Result<(Option<OwnedFd>, Option<UnixStream>), RuncError> {
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|source| RuncError::Sys { what: "cannot create the terminal's socket pair", source })?;
    Ok((Some(theirs), Some(UnixStream::from(ours))))
}

/// Wait for our child `pid`, passing on the signals we receive, and relaying its terminal
/// when we hold the master (a window change then resizes the pty, which signals the process).
fn wait_forwarding(pid: Pid, mask: &SigSet, mut relay: Option<TtyRelay>) -> Result<i32, RuncError> {
    let signals = SignalFd::new(mask).map_err(|source| RuncError::Sys { what: "cannot create signalfd", source })?;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(finish(relay, code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(finish(relay, 128 + sig as i32)),
            Ok(_) => {}
            Err(source) => return Err(RuncError::Sys { what: "cannot wait for the container", source }),
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(relay) = &relay {
            fds.extend(relay.poll_fds());
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(source) => return Err(RuncError::Sys { what: "cannot wait for the container", source }),
        }
        let signalled = fds[0].any().unwrap_or(false);
        let ready = relay.as_ref().map(|r| r.ready(&fds[1..]));
        drop(fds);
        if let (Some(relay), Some(ready)) = (relay.as_mut(), ready) {
            relay.pump(&ready);
        }
        if !signalled {
            continue;
        }
        let info = signals.read_signal().map_err(|source| RuncError::Sys { what: "cannot read signals", source })?;
        match (info.and_then(|i| Signal::try_from(i.ssi_signo as i32).ok()), &relay) {
            (Some(Signal::SIGCHLD) | None, _) => {}
            (Some(Signal::SIGWINCH), Some(relay)) => relay.resize(),
            (Some(sig), _) => {
                let _ = kill(pid, sig);
            }
        }
    }
}

/// The exit code, once the end of the terminal's output is relayed.
fn finish(relay: Option<TtyRelay>, code: i32) -> i32 {
    if let Some(mut relay) = relay {
        relay.drain();
    }
    code
}
