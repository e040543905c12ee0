//! The monitor's table of containers and what each request does to it.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::procfs;
use super::store::{self, Record};
use super::{ContainerState, ContainerStatus, RuntimeError};
use crate::cgroups::{CgroupLimits, ContainerCgroup};
use crate::container::{self, InitSpec, Stdio};

/// Exit code reported for a container that ended while no monitor watched it.
pub(crate) const UNKNOWN_EXIT_CODE: i32 = 255;
const EXEC_FIFO: &str = "exec.fifo";
/// How long delete waits for a killed container that is not our child.
const ADOPTED_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    record: Record,
    /// For containers adopted after a monitor restart (not our children): readable on exit.
    pidfd: Option<OwnedFd>,
}

pub(crate) struct Containers {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
    /// Ids whose state changed (or that were deleted) since the last [`Containers::take_changes`],
    /// for the monitor's watchers.
    changed: Vec<String>,
}

impl Containers {
    /// Load the records on disk and find which of their processes still live.
    pub fn load(root: &Path) -> Result<Self, RuntimeError> {
        let mut containers = Containers { root: root.to_path_buf(), entries: BTreeMap::new(), changed: Vec::new() };
        for record in store::load_all(root)? {
            let id = record.state.id.clone();
            let entry = containers.adopt(record);
            containers.entries.insert(id, entry);
        }
        Ok(containers)
    }

    fn adopt(&self, mut record: Record) -> Entry {
        let live = matches!(record.state.status, ContainerStatus::Created | ContainerStatus::Running);
        if live {
            if let Some(pid) = record.state.pid.map(Pid::from_raw) {
                if procfs::is_same_live_process(pid, record.pid_start_time) {
                    match crate::sys::pidfd_open(pid) {
                        Ok(pidfd) => {
                            tracing::info!(id = %record.state.id, %pid, "adopted running container");
                            return Entry { record, pidfd: Some(pidfd) };
                        }
                        Err(e) => {
                            tracing::warn!(id = %record.state.id, %pid, error = %e, "cannot watch adopted container")
                        }
                    }
                }
            }
        }
        if record.state.status != ContainerStatus::Stopped {
            mark_stopped(&mut record, UNKNOWN_EXIT_CODE, false);
            self.persist(&record);
        }
        Entry { record, pidfd: None }
    }

    /// Pidfds of adopted containers, keyed by id, for the poll loop.
    pub fn pidfds(&self) -> Vec<(String, &OwnedFd)> {
        self.entries.iter().filter_map(|(id, e)| e.pidfd.as_ref().map(|fd| (id.clone(), fd))).collect()
    }

    fn persist(&self, record: &Record) {
        if let Err(e) = store::save(&self.root, record) {
            tracing::error!(id = %record.state.id, error = %crate::error_chain(&e), "cannot save container state");
        }
    }

    /// The ids changed since the last call, each once, in the order they first changed.
    pub fn take_changes(&mut self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut changes = std::mem::take(&mut self.changed);
        changes.retain(|id| seen.insert(id.clone()));
        changes
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry, RuntimeError> {
        self.entries.get_mut(id).ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        self.entries
            .get(id)
            .map(|e| e.record.state.clone())
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    pub fn list(&self) -> Vec<ContainerState> {
        self.entries.values().map(|e| e.record.state.clone()).collect()
    }

    pub fn create(&mut self, id: &str, bundle: &Path, log_path: &Path) -> Result<ContainerState, RuntimeError> {
        validate_id(id)?;
        if self.entries.contains_key(id) {
            return Err(RuntimeError::AlreadyExists { id: id.to_string() });
        }
        let dir = store::container_dir(&self.root, id);
        std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::StateFile { path: dir.clone(), source })?;
        let created = self.create_in(id, bundle, log_path, &dir);
        match created {
            Ok(record) => {
                let state = record.state.clone();
                self.entries.insert(id.to_string(), Entry { record, pidfd: None });
                self.changed.push(id.to_string());
                Ok(state)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn create_in(&self, id: &str, bundle: &Path, log_path: &Path, dir: &Path) -> Result<Record, RuntimeError> {
        let spec = container::load_bundle(bundle)
            .map_err(|source| RuntimeError::Spec { id: id.to_string(), source: Box::new(source) })?;
        let rootfs = container::rootfs_path(bundle, &spec);
        let rootfs = rootfs.canonicalize().map_err(|source| RuntimeError::Rootfs {
            id: id.to_string(),
            path: rootfs.clone(),
            source,
        })?;
        let exec_fifo = make_exec_fifo(dir)?;
        let log = open_log(log_path)?;
        let linux = spec.linux().as_ref();
        let cgroups_path = linux.and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned());
        let cgroup = match &cgroups_path {
            Some(path) => {
                let limits = CgroupLimits::from_linux(linux);
                let cgroup = ContainerCgroup::on_host(path).map_err(cgroup_err(id))?;
                cgroup.create(&limits).map_err(cgroup_err(id))?;
                Some(cgroup)
            }
            None => None,
        };
        let annotations: BTreeMap<String, String> =
            spec.annotations().clone().unwrap_or_default().into_iter().collect::<HashMap<_, _>>().into_iter().collect();
        let init = InitSpec {
            id: id.to_string(),
            spec,
            bundle: bundle.to_path_buf(),
            rootfs,
            cgroup_join: cgroup.as_ref().map(|c| c.init_join()).unwrap_or_default(),
            cgroup_views: cgroup.as_ref().map(|c| c.hierarchy_dirs()).unwrap_or_default(),
            stdio: Stdio::Log(log),
            exec_fifo,
            start_fifo: None,
            preserve_fds: 0,
            no_pivot: false,
        };
        let pid = match container::spawn(init) {
            Ok(pid) => pid,
            Err(source) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(RuntimeError::Container { id: id.to_string(), source: Box::new(source) });
            }
        };
        let record = Record::created(id, pid, bundle.to_path_buf(), annotations, cgroups_path);
        self.persist(&record);
        tracing::info!(%id, %pid, "created container");
        Ok(record)
    }

    /// Release the container's init from its exec FIFO.
    pub fn start(&mut self, id: &str) -> Result<(), RuntimeError> {
        let fifo = store::container_dir(&self.root, id).join(EXEC_FIFO);
        let entry = self.entry(id)?;
        if entry.record.state.status != ContainerStatus::Created {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                status: entry.record.state.status,
                operation: "start",
            });
        }
        let start_err = |source| RuntimeError::Start { id: id.to_string(), path: fifo.clone(), source };
        // Non-blocking: if the container died, there is no reader and this fails (ENXIO)
        // instead of hanging the monitor.
        let writer =
            open(&fifo, OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()).map_err(start_err)?;
        nix::unistd::write(&writer, b"0").map_err(start_err)?;
        drop(writer);
        let _ = std::fs::remove_file(&fifo);
        entry.record.state.status = ContainerStatus::Running;
        entry.record.state.started_at = Some(chrono::Utc::now());
        let record = entry.record.clone();
        self.persist(&record);
        self.changed.push(id.to_string());
        tracing::info!(%id, "started container");
        Ok(())
    }

    pub fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let entry = self.entry(id)?;
        let Some(pid) = live_pid(&entry.record) else {
            return Ok(()); // already stopped: nothing to signal
        };
        let signal = Signal::try_from(signal).map_err(|source| RuntimeError::Signal {
            id: id.to_string(),
            pid: pid.as_raw(),
            source,
        })?;
        match kill(pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(RuntimeError::Signal { id: id.to_string(), pid: pid.as_raw(), source }),
        }
    }

    /// Remove the container: its process (SIGKILL; a running one only with `force`), its
    /// cgroup and its state directory.
    pub fn delete(&mut self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let entry = self.entry(id)?;
        let status = entry.record.state.status;
        if status == ContainerStatus::Running && !force && live_pid(&entry.record).is_some() {
            return Err(RuntimeError::InvalidState { id: id.to_string(), status, operation: "delete without force" });
        }
        if status != ContainerStatus::Stopped {
            kill_and_wait(id, entry);
            let record = entry.record.clone();
            self.persist(&record);
            self.changed.push(id.to_string());
        }
        let record = self.entry(id)?.record.clone();
        if let Some(path) = &record.cgroups_path {
            let cgroup = ContainerCgroup::on_host(path).map_err(cgroup_err(id))?;
            for (pid, code, killed) in kill_stragglers(&cgroup) {
                self.child_exited(pid, code, killed);
            }
            cgroup.remove().map_err(cgroup_err(id))?;
        }
        let dir = store::container_dir(&self.root, id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuntimeError::RemoveDir { path: dir, source }),
        }
        self.entries.remove(id);
        self.changed.push(id.to_string());
        tracing::info!(%id, "deleted container");
        Ok(())
    }

    /// Record the exit of a child the monitor reaped.
    pub fn child_exited(&mut self, pid: Pid, exit_code: i32, signaled_kill: bool) {
        let Some(entry) = self.entries.values_mut().find(|e| {
            e.record.state.pid == Some(pid.as_raw())
                && e.record.state.status != ContainerStatus::Stopped
                && e.pidfd.is_none()
        }) else {
            return; // an orphan re-parented to us, not a container init
        };
        let oom = signaled_kill && oom_killed(&entry.record);
        mark_stopped(&mut entry.record, exit_code, oom);
        tracing::info!(id = %entry.record.state.id, %pid, exit_code, oom, "container exited");
        let record = entry.record.clone();
        self.persist(&record);
        self.changed.push(record.state.id.clone());
    }

    /// An adopted container's pidfd became readable: it is gone, its status unknowable.
    pub fn adopted_exited(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.pidfd = None;
        mark_stopped(&mut entry.record, UNKNOWN_EXIT_CODE, false);
        tracing::info!(%id, "adopted container exited");
        let record = entry.record.clone();
        self.persist(&record);
        self.changed.push(id.to_string());
    }
}

fn cgroup_err(id: &str) -> impl Fn(crate::cgroups::CgroupError) -> RuntimeError + '_ {
    move |source| RuntimeError::Cgroup { id: id.to_string(), source: Box::new(source) }
}

/// Ids name directories: keep them to a safe alphabet.
fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_string() })
    }
}

fn make_exec_fifo(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let path = dir.join(EXEC_FIFO);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|source| RuntimeError::ExecFifo { path: path.clone(), source })?;
    Ok(path)
}

fn open_log(path: &Path) -> Result<OwnedFd, RuntimeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let log_err = |source| RuntimeError::LogFile { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(log_err)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path).map_err(log_err)?;
    Ok(OwnedFd::from(file))
}

/// The pid to signal, if the container still runs the process we started.
fn live_pid(record: &Record) -> Option<Pid> {
    if record.state.status == ContainerStatus::Stopped {
        return None;
    }
    let pid = Pid::from_raw(record.state.pid?);
    procfs::is_same_live_process(pid, record.pid_start_time).then_some(pid)
}

fn mark_stopped(record: &mut Record, exit_code: i32, oom_killed: bool) {
    record.state.status = ContainerStatus::Stopped;
    record.state.exit_code = Some(exit_code);
    record.state.oom_killed = oom_killed;
    record.state.finished_at = Some(chrono::Utc::now());
}

fn oom_killed(record: &Record) -> bool {
    record
        .cgroups_path
        .as_deref()
        .and_then(|p| ContainerCgroup::on_host(p).ok())
        .is_some_and(|c| c.oom_kill_count() > 0)
}

/// SIGKILL the container's init and wait until it is gone, recording how it ended.
fn kill_and_wait(id: &str, entry: &mut Entry) {
    let Some(pid) = entry.record.state.pid.map(Pid::from_raw) else {
        mark_stopped(&mut entry.record, UNKNOWN_EXIT_CODE, false);
        return;
    };
    if let Some(pidfd) = entry.pidfd.take() {
        if live_pid(&entry.record).is_some() {
            let _ = kill(pid, Signal::SIGKILL);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(ADOPTED_EXIT_TIMEOUT).unwrap_or(PollTimeout::MAX);
            if let Ok(0) | Err(_) = poll(&mut fds, timeout) {
                tracing::warn!(%id, %pid, "adopted container did not exit after SIGKILL");
            }
        }
        mark_stopped(&mut entry.record, UNKNOWN_EXIT_CODE, false);
        return;
    }
    let _ = kill(pid, Signal::SIGKILL);
    // Our child: waitpid both waits and reaps, so the SIGCHLD loop will not see it again.
    let (code, killed) = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break (code, false),
            Ok(WaitStatus::Signaled(_, sig, _)) => break (128 + sig as i32, sig == Signal::SIGKILL),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break (UNKNOWN_EXIT_CODE, false),
        }
    };
    let oom = killed && oom_killed(&entry.record);
    mark_stopped(&mut entry.record, code, oom);
}

/// Without a pid namespace, processes may outlive the init: kill what is left in the cgroup
/// so the directory can be removed.
/// Returns the children reaped meanwhile, so other containers' exits are not lost.
fn kill_stragglers(cgroup: &ContainerCgroup) -> Vec<(Pid, i32, bool)> {
    let mut reaped = Vec::new();
    for _ in 0..50 {
        let pids = cgroup.pids();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        reaped.extend(reap_children());
        std::thread::sleep(Duration::from_millis(20));
    }
    reaped
}

/// Reap every exited child without blocking; returns (pid, exit code, killed by SIGKILL).
pub(crate) fn reap_children() -> Vec<(Pid, i32, bool)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => reaped.push((pid, code, false)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => reaped.push((pid, 128 + sig as i32, sig == Signal::SIGKILL)),
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(_) => continue,
        }
    }
}
