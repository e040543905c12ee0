//! `exec [options] ID COMMAND [ARGS...]` (or `--process FILE`): run one more process in a
//! created or running container, through [`crate::exec`]. Without --detach, wait for it,
//! passing signals on, and exit with its exit code (128+N when killed by signal N). Every
//! failure exits 255 with "exec failed: ...", as runc's.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use oci_spec::runtime::{Capability, Process};

use super::container::{Container, RuncStatus};
use super::create::write_pid_file;
use super::tty_relay::TtyRelay;
use super::RuncError;
use crate::exec::{exec_detached, exec_in_container, ExecHelper, ExecOptions, ExecOverrides, ExecProcess, ExecTarget};
use crate::sys::FORWARDED_SIGNALS;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Path to a process.json (an OCI runtime spec process) to run instead of COMMAND.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Set an environment variable (appended to the container's; may be repeated).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Current working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional gids (may be repeated).
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<i64>,
    /// Add a capability to the bounding, effective and permitted sets (may be repeated).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Do not wait: leave the process running and exit.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Pass on N extra fds (3..3+N) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allocate a pseudo-TTY (from the container's devpts): its master goes to
    /// --console-socket with --detach, else we relay it to our stdio.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket to send the terminal's master fd to (with --tty and --detach).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// AppArmor profile to run the process under (an error where AppArmor is off).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label to run the process with (an error where SELinux is off).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Sub-cgroup to run in (not supported).
    #[arg(long, hide = true)]
    pub cgroup: Vec<String>,
    /// Accepted for runc compatibility: containers are never paused.
    #[arg(long = "ignore-paused", hide = true)]
    pub ignore_paused: bool,
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub(super) fn exec(root: &Path, args: &ExecArgs) -> Result<i32, RuncError> {
    refuse_unsupported(args)?;
    let c = Container::load(root, &args.id)?;
    let pid = match c.status {
        RuncStatus::Stopped => return Err(RuncError::ExecStopped),
        RuncStatus::Creating => return Err(RuncError::NotRunning),
        RuncStatus::Paused => return Err(RuncError::ExecPaused),
        RuncStatus::Created | RuncStatus::Running => c.live_pid().ok_or(RuncError::ExecStopped)?,
    };
    if args.process.is_none() && args.command.is_empty() {
        return Err(RuncError::BadConfig("process args cannot be empty".to_string()));
    }
    let spec = crate::container::load_bundle(&c.rec.record.state.bundle).map_err(RuncError::Spec)?;
    let target = ExecTarget {
        id: args.id.clone(),
        init_pid: pid,
        init_start_time: c.rec.record.pid_start_time,
        cgroup_procs: c.cgroup()?.map(|cg| cg.procs_files()).unwrap_or_default(),
        spec,
    };
    let mut process = match &args.process {
        Some(path) => read_process(path)?,
        None => overrides(args)?.apply(target.container_process().unwrap_or(&Process::default())),
    };
    if args.tty {
        process.set_terminal(Some(true));
    }
    if let Some(profile) = args.apparmor.as_ref().filter(|p| !p.is_empty()) {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = args.process_label.as_ref().filter(|l| !l.is_empty()) {
        process.set_selinux_label(Some(label.clone()));
    }
    let helper = ExecHelper::this_binary();
    let (console, relay_end) = console_for(args, process.terminal().unwrap_or(false))?;
    let options = ExecOptions { preserve_fds: args.preserve_fds, console, ..ExecOptions::default() };
    if args.detach {
        let pid = exec_detached(&helper, &target, &process, options).map_err(exec_err)?;
        if let Some(pid_file) = &args.pid_file {
            write_pid_file(pid_file, pid.as_raw())?;
        }
        return Ok(0);
    }
    let mask = forwarded_signals();
    mask.thread_block().map_err(|source| RuncError::Sys { what: "cannot block signals", source })?;
    let exec = exec_in_container(&helper, &target, &process, options).map_err(exec_err)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, exec.pid().as_raw())?; // on error, dropping `exec` kills it
    }
    // The master was sent before the process exec'd, so it is waiting on the socket.
    let relay = match relay_end {
        Some(socket) => {
            let (_, master) = crate::sys::receive_fd(socket.as_fd())
                .map_err(|source| RuncError::Sys { what: "cannot receive the terminal's master", source })?;
            Some(TtyRelay::new(master))
        }
        None => None,
    };
    let code = wait_forwarding(exec, &mask, relay);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
    code
}

/// The console socket for the helper, and our end of it when we relay the terminal
/// ourselves; runc's rules on which combinations make sense.
fn console_for(args: &ExecArgs, terminal: bool) -> Result<(Option<OwnedFd>, Option<UnixStream>), RuncError> {
    match (&args.console_socket, terminal, args.detach) {
        (None, false, _) => Ok((None, None)),
        (None, true, true) => Err(RuncError::Terminal),
        (None, true, false) => {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
                .map_err(|source| RuncError::Sys { what: "cannot create the terminal's socket pair", source })?;
            Ok((Some(theirs), Some(UnixStream::from(ours))))
        }
        (Some(_), false, _) | (Some(_), true, false) => Err(RuncError::ConsoleWithoutTerminal),
        (Some(path), true, true) => {
            let socket = UnixStream::connect(path).map_err(super::io_err("cannot connect to console socket", path))?;
            Ok((Some(socket.into()), None))
        }
    }
}

/// Flags runc has and this runtime cannot honour: refused before anything runs.
fn refuse_unsupported(args: &ExecArgs) -> Result<(), RuncError> {
    let unsupported = |what: &str| Err(RuncError::BadConfig(format!("{what} is not supported")));
    if !args.cgroup.is_empty() {
        return unsupported("--cgroup (sub-cgroups)");
    }
    Ok(())
}

fn exec_err(e: crate::exec::ExecError) -> RuncError {
    RuncError::Exec(Box::new(e))
}

/// A process.json, with the field at fault named when it does not parse.
fn read_process(path: &Path) -> Result<Process, RuncError> {
    let text = std::fs::read(path).map_err(super::io_err("cannot open process file", path))?;
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text)).map_err(|e| {
        RuncError::BadProcess { path: path.to_path_buf(), field: e.path().to_string(), source: e.into_inner() }
    })
}

/// runc's getProcess: the flags over the container's process.
fn overrides(args: &ExecArgs) -> Result<ExecOverrides, RuncError> {
    let (uid, gid) = match &args.user {
        Some(user) => parse_user(user)?,
        None => (None, None),
    };
    let additional_gids = args
        .additional_gids
        .iter()
        .map(|&gid| {
            u32::try_from(gid)
                .map_err(|_| RuncError::BadConfig(format!("additional-gids must be a positive number {gid}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(ExecOverrides {
        args: args.command.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        uid,
        gid,
        additional_gids,
        capabilities: parse_caps(&args.cap),
        no_new_privileges: args.no_new_privs.then_some(true),
    })
}

/// "UID" or "UID:GID", numeric, as runc's --user.
fn parse_user(user: &str) -> Result<(Option<u32>, Option<u32>), RuncError> {
    let parse = |id: &str| {
        id.parse::<u32>().map_err(|_| RuncError::BadConfig(format!("invalid --user {user:?}: expected UID[:GID]")))
    };
    match user.split_once(':') {
        Some((uid, gid)) => Ok((Some(parse(uid)?), Some(parse(gid)?))),
        None => Ok((Some(parse(user)?), None)),
    }
}

/// Capability names as the spec accepts them ("CAP_SYS_ADMIN", "sys_admin"); unknown ones are
/// skipped with a warning, as runc does.
fn parse_caps(names: &[String]) -> Vec<Capability> {
    let (known, unknown): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|name| (name, serde_json::from_value::<Capability>(serde_json::Value::from(name.as_str()))))
        .partition(|(_, parsed)| parsed.is_ok());
    if !unknown.is_empty() {
        let names: Vec<&String> = unknown.iter().map(|(name, _)| *name).collect();
        tracing::warn!("ignoring unknown or unavailable capabilities: {names:?}");
    }
    known.into_iter().filter_map(|(_, parsed)| parsed.ok()).collect()
}

fn forwarded_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        mask.add(*signal);
    }
    mask
}

/// Wait for the process, passing the signals we get on to it (through its helper), and
/// relaying its terminal when we hold the master (a window change then resizes the pty, whose
/// kernel signals the process itself).
fn wait_forwarding(mut exec: ExecProcess, mask: &SigSet, mut relay: Option<TtyRelay>) -> Result<i32, RuncError> {
    let signals = SignalFd::new(mask).map_err(|source| RuncError::Sys { what: "cannot create signalfd", source })?;
    loop {
        if let Some(code) = exec.try_wait().map_err(exec_err)? {
            if let Some(relay) = relay.as_mut() {
                relay.drain();
            }
            return Ok(code);
        }
        let mut fds =
            vec![PollFd::new(exec.as_fd(), PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(relay) = &relay {
            fds.extend(relay.poll_fds());
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(source) => return Err(RuncError::Sys { what: "cannot wait for the process", source }),
        }
        let signalled = fds[1].any().unwrap_or(false);
        let ready = relay.as_ref().map(|r| r.ready(&fds[2..]));
        drop(fds);
        if let (Some(relay), Some(ready)) = (relay.as_mut(), ready) {
            relay.pump(&ready);
        }
        if signalled {
            let info =
                signals.read_signal().map_err(|source| RuncError::Sys { what: "cannot read signals", source })?;
            match (info.and_then(|i| Signal::try_from(i.ssi_signo as i32).ok()), &relay) {
                (Some(Signal::SIGWINCH), Some(relay)) => relay.resize(),
                (Some(signal), _) => exec.signal(signal),
                (None, _) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_uid_and_optional_gid() {
        assert_eq!(parse_user("1000").unwrap(), (Some(1000), None));
        assert_eq!(parse_user("1000:5").unwrap(), (Some(1000), Some(5)));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn capabilities_by_any_spelling_unknown_skipped() {
        let caps = parse_caps(&["CAP_SYS_ADMIN".to_string(), "net_raw".to_string(), "CAP_NOPE".to_string()]);
        assert_eq!(caps, vec![Capability::SysAdmin, Capability::NetRaw]);
    }
}
