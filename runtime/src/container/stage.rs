//! The intermediate process of a staged spawn (runc's nsexec stages, in one hop): it joins
//! the spec's namespaces by path, the user namespace first, then clones the init into the
//! new ones as a sibling (CLONE_PARENT), so the runtime side stays the init's parent. It
//! tells the runtime side the init's pid on the sync socket and exits.

use std::io::Write;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::{init, namespaces, userns, ContainerError, InitSpec, Prepared, SETUP_TIMEOUT};
use crate::error_chain;
use crate::sys::{self, CloneResult};

/// What the intermediate sends before the pid.
const PID_PREFIX: &str = "pid ";

#[derive(Debug, thiserror::Error)]
enum StageError {
    #[error("cannot join the spec's namespaces")]
    Join(#[source] namespaces::NamespaceError),
    #[error("invalid user namespace configuration")]
    Mappings(#[source] userns::UsernsError),
    #[error("cannot clone the container process")]
    Clone(#[source] nix::Error),
    #[error("cannot create the pipe that orders the setup messages")]
    Pipe(#[source] nix::Error),
}

/// The intermediate's whole life: never returns.
pub(super) fn run(init: InitSpec, sync: OwnedFd, flags: CloneFlags, prepared: Prepared) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| join_and_clone(&init, flags)));
    let mut report = std::fs::File::from(sync);
    match outcome {
        Ok(Ok((CloneResult::Child, reported))) => {
            // The init shares the sync socket: its first message must come after our pid.
            wait_for_eof(reported);
            init::run_child(init, report.into(), Prepared { joined: true, ..prepared })
        }
        Ok(Ok((CloneResult::Parent { child }, reported))) => {
            let code = i32::from(report.write_all(format!("{PID_PREFIX}{child}").as_bytes()).is_err());
            drop(reported); // the init may go on
            sys::exit_immediately(code)
        }
        Ok(Err(e)) => {
            let _ = report.write_all(error_chain(&e).as_bytes());
            sys::exit_immediately(1)
        }
        Err(_) => sys::exit_immediately(1),
    }
}

/// Join the namespaces and clone the init. Besides the side of the clone we are on, our end
/// of a pipe that orders the messages on the shared sync socket: the intermediate holds the
/// write end until it has sent the init's pid, the init reads the other end to EOF first.
fn join_and_clone(init: &InitSpec, flags: CloneFlags) -> Result<(CloneResult, OwnedFd), StageError> {
    namespaces::join_by_path(&init.spec).map_err(StageError::Join)?;
    if namespaces::joins(&init.spec, LinuxNamespaceType::User) {
        userns::check_joined_mappings(&init.spec).map_err(StageError::Mappings)?;
    }
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(StageError::Pipe)?;
    match sys::clone_process(flags | CloneFlags::CLONE_PARENT).map_err(StageError::Clone)? {
        CloneResult::Child => Ok((CloneResult::Child, read_end)),
        parent => Ok((parent, write_end)),
    }
}

/// Block until every writer of `pipe` has closed it (nothing is ever written).
fn wait_for_eof(pipe: OwnedFd) {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&pipe, &mut byte) {
            Ok(0) => return,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// The runtime side: the init's pid from the intermediate, which is then reaped (killed
/// first when it did not answer).
pub(super) fn receive_pid(id: &str, intermediate: Pid, sync: &std::fs::File) -> Result<Pid, ContainerError> {
    let message = super::receive(id, intermediate, sync, Some(SETUP_TIMEOUT));
    if message.is_err() {
        let _ = nix::sys::signal::kill(intermediate, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waitpid(intermediate, None);
    let message = message?;
    match message.strip_prefix(PID_PREFIX).and_then(|n| n.parse::<i32>().ok()) {
        Some(pid) => Ok(Pid::from_raw(pid)),
        None if message.is_empty() => Err(ContainerError::Setup {
            id: id.to_string(),
            message: "the intermediate process exited without reporting".to_string(),
        }),
        None => Err(ContainerError::Setup { id: id.to_string(), message }),
    }
}
