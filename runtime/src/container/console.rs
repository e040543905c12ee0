//! `process.terminal` with a console socket (runc's `--console-socket`): a pty from the
//! container's own devpts (opened after pivot_root), its master sent to the caller over the
//! socket (SCM_RIGHTS, named "/dev/ptmx" as runc names it), its slave the init's controlling
//! terminal, stdin, stdout, stderr and /dev/console.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::pty::{openpty, Winsize};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Process;

use super::mounts::{mount_bind, MountError, MountOptions};

/// The name runc sends with the master.
const MASTER_NAME: &str = "/dev/ptmx";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot open a pty in the container's /dev/pts")]
    Open(#[source] nix::Error),
    #[error("cannot name the pty's slave")]
    Name(#[source] nix::Error),
    #[error("cannot open the pty's slave {path}")]
    OpenSlave {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot mount the pty at /dev/console")]
    Console(#[source] Box<MountError>),
    #[error("cannot send the pty's master over the console socket")]
    Send(#[source] nix::Error),
    #[error("cannot make the pty the process's stdio")]
    Stdio(#[source] nix::Error),
}

/// Set the pty up and send its master over `socket`, with the pty at /dev/console for a
/// container's init (`as_console`), not for an exec'd process (runc mounts it once). Needs a
/// session leader without a controlling terminal (after setsid), and the container's root in
/// place.
pub(crate) fn set_up(socket: &OwnedFd, process: &Process, as_console: bool) -> Result<(), ConsoleError> {
    let size = process.console_size().as_ref().map(|b| Winsize {
        ws_row: u16::try_from(b.height()).unwrap_or(u16::MAX),
        ws_col: u16::try_from(b.width()).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = openpty(size.as_ref(), None).map_err(ConsoleError::Open)?;
    let path = nix::unistd::ttyname(&pty.slave).map_err(ConsoleError::Name)?;
    // Without O_NOCTTY, by a session leader that has none: it becomes our controlling terminal.
    let slave = open(&path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|source| ConsoleError::OpenSlave { path: path.clone(), source })?;
    drop(pty.slave);
    if as_console {
        let options = MountOptions { flags: MsFlags::MS_BIND, ..Default::default() };
        mount_bind(&path, Path::new("/dev/console"), &options).map_err(|e| ConsoleError::Console(Box::new(e)))?;
    }
    send_master(socket, &pty.master)?;
    drop(pty.master);
    nix::unistd::dup2_stdin(slave.as_fd()).map_err(ConsoleError::Stdio)?;
    nix::unistd::dup2_stdout(slave.as_fd()).map_err(ConsoleError::Stdio)?;
    nix::unistd::dup2_stderr(slave.as_fd()).map_err(ConsoleError::Stdio)?;
    Ok(())
}

fn send_master(socket: &OwnedFd, master: &OwnedFd) -> Result<(), ConsoleError> {
    let fds = [master.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    let name = [IoSlice::new(MASTER_NAME.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &name, &control, MsgFlags::empty(), None).map_err(ConsoleError::Send)?;
    Ok(())
}
