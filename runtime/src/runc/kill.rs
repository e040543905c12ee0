//! `kill ID [SIGNAL]`: signal the init (or, with --all, every process of the cgroup). SIGKILL
//! to a paused container kills all of it and thaws it, as with runc.

use std::path::Path;
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::signal::{kill as send, Signal};

use super::container::{Container, RuncStatus};
use super::RuncError;

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Send the signal to every process of the container.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// A name (TERM, SIGTERM, kill) or a number; SIGTERM by default.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub(super) fn kill(root: &Path, args: &KillArgs) -> Result<(), RuncError> {
    let signal = parse_signal(&args.signal)?;
    let c = Container::load(root, &args.id)?;
    signal_container(&c, args.all, signal)?;
    if c.status == RuncStatus::Paused && signal == Signal::SIGKILL {
        // Frozen tasks die only once thawed (runc does the same); other signals wait for
        // `resume`.
        c.thaw()?;
    }
    Ok(())
}

fn signal_container(c: &Container, all: bool, signal: Signal) -> Result<(), RuncError> {
    if all {
        if let Some(cgroup) = c.cgroup()? {
            for pid in cgroup.pids() {
                let _ = send(pid, signal); // a process may exit meanwhile
            }
        }
        return Ok(());
    }
    if c.status == RuncStatus::Stopped {
        return Err(RuncError::NotRunning);
    }
    let pid = c.live_pid().ok_or(RuncError::NotRunning)?;
    match send(pid, signal) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err(RuncError::NotRunning),
        Err(source) => Err(RuncError::Sys { what: "cannot send signal", source }),
    }
}

/// As runc: a number, or a name with or without "SIG", in any case.
pub(super) fn parse_signal(raw: &str) -> Result<Signal, RuncError> {
    let invalid = || RuncError::InvalidSignal(raw.to_string());
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = raw.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
