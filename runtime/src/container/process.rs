//! The user process: identity, limits, stdio, and the final exec.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{access, AccessFlags, Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot set rlimit {resource}")]
    Rlimit {
        resource: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set supplementary groups {gids:?}")]
    Groups {
        gids: Vec<u32>,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set gid {gid}")]
    Gid {
        gid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set uid {uid}")]
    Uid {
        uid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot keep capabilities across the uid change")]
    KeepCaps(#[source] nix::Error),
    #[error("cannot set oom_score_adj to {score}")]
    OomScoreAdj {
        score: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] nix::Error),
    #[error("cannot change to working directory {path}")]
    Cwd {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set up stdio from {path}")]
    Stdio {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("executable {program:?} not found in $PATH or not executable")]
    NotFound { program: String },
    #[error("argument or environment entry contains a NUL byte: {value:?}")]
    Nul { value: String },
    #[error("cannot exec {path}")]
    Exec {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// The resolved program, arguments and environment, ready for execve.
pub(crate) struct Command {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

fn cstring(value: &str) -> Result<CString, ProcessError> {
    CString::new(value).map_err(|_| ProcessError::Nul { value: value.to_string() })
}

fn rlimit_resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

pub(crate) fn set_rlimits(process: &Process) -> Result<(), ProcessError> {
    for limit in process.rlimits().iter().flatten() {
        setrlimit(rlimit_resource(limit.typ()), limit.soft(), limit.hard())
            .map_err(|source| ProcessError::Rlimit { resource: format!("{:?}", limit.typ()), source })?;
    }
    Ok(())
}

/// Switch to the spec's uid, gid and supplementary groups, keeping capabilities (the caller
/// then sets the ones the spec lists).
pub(crate) fn set_user(process: &Process) -> Result<(), ProcessError> {
    let user = process.user();
    let gids: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
    let groups: Vec<Gid> = gids.iter().copied().map(Gid::from_raw).collect();
    nix::unistd::setgroups(&groups).map_err(|source| ProcessError::Groups { gids: gids.clone(), source })?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|source| ProcessError::Gid { gid: user.gid(), source })?;
    nix::sys::prctl::set_keepcaps(true).map_err(ProcessError::KeepCaps)?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|source| ProcessError::Uid { uid: user.uid(), source })?;
    nix::sys::prctl::set_keepcaps(false).map_err(ProcessError::KeepCaps)
}

/// `process.user.umask`, when given (otherwise the inherited umask stays).
pub(crate) fn set_umask(process: &Process) {
    if let Some(umask) = process.user().umask() {
        nix::sys::stat::umask(Mode::from_bits_truncate(umask));
    }
}

/// `process.oomScoreAdj`, written while the init still has CAP_SYS_RESOURCE (lowering the
/// score needs it) and sees the host's /proc.
pub(crate) fn set_oom_score_adj(process: &Process) -> Result<(), ProcessError> {
    let Some(score) = process.oom_score_adj() else {
        return Ok(());
    };
    std::fs::write("/proc/self/oom_score_adj", score.to_string())
        .map_err(|source| ProcessError::OomScoreAdj { score, source })
}

pub(crate) fn set_no_new_privileges(process: &Process) -> Result<(), ProcessError> {
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(ProcessError::NoNewPrivs)?;
    }
    Ok(())
}

pub(crate) fn change_cwd(process: &Process) -> Result<(), ProcessError> {
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|source| ProcessError::Cwd { path: cwd.clone(), source })
}

/// stdin from the container's /dev/null; stdout and stderr on the log file.
pub(super) fn set_stdio(log: &OwnedFd) -> Result<(), ProcessError> {
    let null = Path::new("/dev/null");
    let stdio_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProcessError::Stdio { path, source }
    };
    let stdin = open(null, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(stdio_err(null))?;
    nix::unistd::dup2_stdin(stdin.as_fd()).map_err(stdio_err(null))?;
    let log_path = Path::new("<log file>");
    nix::unistd::dup2_stdout(log.as_fd()).map_err(stdio_err(log_path))?;
    nix::unistd::dup2_stderr(log.as_fd()).map_err(stdio_err(log_path))
}

/// Resolve `args[0]` against the container's $PATH (from the spec's env, not ours), after
/// the user and cwd are set so the executable check runs with the container's identity.
/// Without HOME in the env, the user's home from the container's /etc/passwd (or "/") is
/// added, as runc does.
pub(crate) fn resolve_command(process: &Process) -> Result<Command, ProcessError> {
    let args: Vec<String> = process.args().clone().unwrap_or_default();
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        env.push(format!("HOME={}", home_of(process.user().uid(), &passwd).unwrap_or("/")));
    }
    let program = args.first().cloned().unwrap_or_default();
    let search_path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let path =
        find_executable(&program, search_path).ok_or_else(|| ProcessError::NotFound { program: program.clone() })?;
    Ok(Command {
        path: CString::new(path.as_os_str().as_bytes())
            .map_err(|_| ProcessError::Nul { value: path.display().to_string() })?,
        args: args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
    })
}

/// The home directory of `uid` in an /etc/passwd (name:password:uid:gid:gecos:home:shell).
fn home_of(uid: u32, passwd: &str) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [_, _, id, _, _, home, ..] if id.parse() == Ok(uid) && !home.is_empty() => Some(*home),
            _ => None,
        }
    })
}

fn find_executable(program: &str, search_path: &str) -> Option<PathBuf> {
    let is_executable = |p: &Path| p.is_file() && access(p, AccessFlags::X_OK).is_ok();
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| is_executable(p))
}

/// Replace this process with the user program. Returns only on failure.
pub(crate) fn exec(command: &Command) -> ProcessError {
    match nix::unistd::execve(&command.path, &command.args, &command.env) {
        Err(source) => ProcessError::Exec { path: PathBuf::from(command.path.to_string_lossy().into_owned()), source },
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::home_of;

    #[test]
    fn home_comes_from_the_users_passwd_entry() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv/web:/bin/sh\nbad line\nnohome:x:7:7:::\n";
        assert_eq!(home_of(0, passwd), Some("/root"));
        assert_eq!(home_of(1000, passwd), Some("/srv/web"));
        assert_eq!(home_of(7, passwd), None, "an empty home is no home");
        assert_eq!(home_of(5, passwd), None);
    }
}
