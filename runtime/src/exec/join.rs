//! The helper's hold on the container: a pidfd on its init (checked to be the container's),
//! the namespaces of the init that differ from ours, and its cgroups' `cgroup.procs` files.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;

use crate::monitor::procfs;

#[derive(Debug, thiserror::Error)]
pub(super) enum JoinError {
    #[error("container init (pid {pid}) is gone")]
    InitGone {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("pid {pid} is no longer the container's init (it exited, the pid was reused)")]
    NotTheInit { pid: i32 },
    #[error("pid {pid} is not in the container's cgroup {path}")]
    NotInCgroup { pid: i32, path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup file {path}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join the {namespaces} namespaces of the container init (pid {pid})")]
    Setns {
        pid: i32,
        namespaces: String,
        #[source]
        source: nix::Error,
    },
}

/// Namespaces by their `/proc/<pid>/ns` name. Time has no nix constant.
const NAMESPACES: [(&str, CloneFlags); 8] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
];

/// The container's init, held by a pidfd: setns through it fails (ESRCH) once that very
/// process is gone, whatever got its pid since.
pub(super) struct Init {
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

/// Open the init, then check that the pid still names it: opened first, so a check that
/// passes proves the pidfd is the container's init and not a later process with its pid.
pub(super) fn open_init(pid: i32, start_time: Option<u64>, cgroup_procs: &[PathBuf]) -> Result<Init, JoinError> {
    let init = Pid::from_raw(pid);
    let pidfd = crate::sys::pidfd_open(init).map_err(|source| JoinError::InitGone { pid, source })?;
    if !procfs::is_same_live_process(init, start_time) {
        return Err(JoinError::NotTheInit { pid });
    }
    if let Some(path) = cgroup_procs.first() {
        let listed = std::fs::read_to_string(path).map_err(|source| JoinError::Read { path: path.clone(), source })?;
        if !listed.lines().any(|line| line.trim() == pid.to_string()) {
            return Err(JoinError::NotInCgroup { pid, path: path.clone() });
        }
    }
    Ok(Init { pid: init, pidfd })
}

/// The `cgroup.procs` files, opened now while this process still sees the host's cgroupfs;
/// the exec'd child writes "0" to them (which moves the writer) before it execs.
pub(super) fn open_cgroups(paths: &[PathBuf]) -> Result<Vec<(PathBuf, File)>, JoinError> {
    paths
        .iter()
        .map(|path| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| JoinError::OpenCgroup { path: path.clone(), source })?;
            Ok((path.clone(), file))
        })
        .collect()
}

/// The namespaces of `pid` that are not ours (the ones a container shares with the host are
/// not joined, as runc joins only those of its config). Namespaces this kernel lacks (no
/// /proc entry on either side) are skipped.
pub(super) fn differing_namespaces(pid: Pid) -> Result<CloneFlags, JoinError> {
    let mut flags = CloneFlags::empty();
    for (name, flag) in NAMESPACES {
        let theirs = ns_id(&format!("/proc/{pid}/ns/{name}"))?;
        let ours = ns_id(&format!("/proc/self/ns/{name}"))?;
        if theirs != ours {
            flags |= flag;
        }
    }
    Ok(flags)
}

fn ns_id(path: &str) -> Result<Option<(u64, u64)>, JoinError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JoinError::Read { path: PathBuf::from(path), source }),
    }
}

/// Join the namespaces `flags` of the init, all at once (setns with a pidfd, Linux 5.8).
pub(super) fn enter(init: &Init, flags: CloneFlags) -> Result<(), JoinError> {
    if flags.is_empty() {
        return Ok(());
    }
    setns(&init.pidfd, flags).map_err(|source| JoinError::Setns {
        pid: init.pid.as_raw(),
        namespaces: names(flags),
        source,
    })
}

/// "mnt,pid,net" for error messages.
fn names(flags: CloneFlags) -> String {
    NAMESPACES.iter().filter(|(_, flag)| flags.contains(*flag)).map(|(name, _)| *name).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespaces_do_not_differ() {
        assert_eq!(differing_namespaces(nix::unistd::getpid()).unwrap(), CloneFlags::empty());
    }

    #[test]
    fn namespace_names_for_messages() {
        let flags =
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        assert_eq!(names(flags), "mnt,net,time");
    }

    #[test]
    fn a_process_that_is_not_the_init_is_refused() {
        let me = nix::unistd::getpid();
        let start = procfs::start_time(me).unwrap();
        assert!(open_init(me.as_raw(), Some(start), &[]).is_ok());
        assert!(matches!(open_init(me.as_raw(), Some(start + 1), &[]), Err(JoinError::NotTheInit { .. })));
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "1\n2\n").unwrap();
        assert!(matches!(open_init(me.as_raw(), None, &[procs]), Err(JoinError::NotInCgroup { .. })));
    }
}
