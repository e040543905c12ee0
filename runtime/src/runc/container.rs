//! One nodelet-runc container on disk (`<root>/<id>/state.json`, the monitor's record plus
//! what runc's `state` shows) and its live status, derived from the init's pid.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};

use super::{io_err, RuncError};
use crate::cgroups::{ContainerCgroup, FreezerState};
use crate::container::hooks::{self, HookKind, HookState};
use crate::monitor::procfs;
use crate::monitor::store::{self, Record};
use crate::monitor::ContainerStatus;

/// runc's statuses: the record's, plus "paused" while the container's cgroup is frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuncStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for RuncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuncStatus::Creating => "creating",
            RuncStatus::Created => "created",
            RuncStatus::Running => "running",
            RuncStatus::Paused => "paused",
            RuncStatus::Stopped => "stopped",
        })
    }
}

/// The FIFO the init blocks on until `start` writes to it.
pub(super) const EXEC_FIFO: &str = "exec.fifo";
/// The FIFO `start` reads until the init execs (EOF) or reports a failed startContainer hook;
/// made only for a spec with startContainer or poststart hooks.
pub(super) const START_FIFO: &str = "start.fifo";
/// How long delete waits for a SIGKILLed process (not our child) to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `create` records: the monitor's record plus the fields of runc's state output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RuncRecord {
    #[serde(flatten)]
    pub record: Record,
    /// config.json's ociVersion, shown as the state's ociVersion (as runc does).
    pub oci_version: String,
    pub rootfs: PathBuf,
    /// config.json's hooks: poststart runs at `start`, poststop at `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

/// runc's `state` document (libcontainer's containerState): same keys, same order.
#[derive(Debug, Serialize)]
pub(super) struct StateDoc {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: RuncStatus,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
}

/// A loaded container: its directory, record and current status.
pub(super) struct Container {
    pub dir: PathBuf,
    pub rec: RuncRecord,
    pub status: RuncStatus,
}

/// runc's id rule: letters, digits, '_', '+', '-', '.'; not "." or "..", so it can name a dir.
pub(super) fn validate_id(id: &str) -> Result<(), RuncError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuncError::InvalidId { id: id.to_string() })
    }
}

pub(super) fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

pub(super) fn save(dir: &Path, rec: &RuncRecord) -> Result<(), RuncError> {
    store::save_in(dir, rec, store::Durability::Volatile).map_err(|e| RuncError::State(Box::new(e)))
}

impl Container {
    pub fn load(root: &Path, id: &str) -> Result<Container, RuncError> {
        validate_id(id).map_err(|_| RuncError::NotExist)?;
        let dir = container_dir(root, id);
        let rec: RuncRecord =
            store::load_from(&dir).map_err(|e| RuncError::State(Box::new(e)))?.ok_or(RuncError::NotExist)?;
        let status = live_status(&rec.record);
        Ok(Container { dir, rec, status })
    }

    /// Every container under `root`, sorted by id; unreadable entries are skipped.
    pub fn load_all(root: &Path) -> Vec<Container> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> =
            entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().map(str::to_string)).collect();
        ids.sort();
        ids.iter().filter_map(|id| Container::load(root, id).ok()).collect()
    }

    pub fn id(&self) -> &str {
        &self.rec.record.state.id
    }

    /// The init's pid while it lives (0 once stopped, as runc prints it).
    pub fn live_pid(&self) -> Option<Pid> {
        match self.status {
            RuncStatus::Stopped => None,
            _ => self.rec.record.state.pid.map(Pid::from_raw),
        }
    }

    pub fn cgroup(&self) -> Result<Option<ContainerCgroup>, RuncError> {
        self.rec.record.cgroups_path.as_deref().map(on_host).transpose()
    }

    pub fn state_doc(&self) -> StateDoc {
        let state = &self.rec.record.state;
        StateDoc {
            oci_version: self.rec.oci_version.clone(),
            id: state.id.clone(),
            pid: self.live_pid().map(|p| p.as_raw()).unwrap_or(0),
            status: self.status,
            bundle: state.bundle.clone(),
            rootfs: self.rec.rootfs.clone(),
            created: state.created_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            annotations: state.annotations.clone(),
            owner: String::new(),
        }
    }

    /// The state the hooks read, with `status` and `pid`.
    pub fn hook_state(&self, status: &'static str, pid: Option<i32>) -> HookState {
        let state = &self.rec.record.state;
        HookState {
            oci_version: self.rec.oci_version.clone(),
            id: state.id.clone(),
            status,
            pid,
            bundle: state.bundle.clone(),
            annotations: state.annotations.clone(),
        }
    }

    /// SIGKILL the init, wait until it is gone, kill what is left in the cgroup, remove the
    /// cgroup and the state directory: nothing of the container stays behind. Then the
    /// poststop hooks, whose failures are only logged.
    pub fn destroy(self) -> Result<(), RuncError> {
        let state = self.hook_state("stopped", None);
        let hooks = self.rec.hooks.clone();
        self.remove()?;
        hooks::run_logged(HookKind::Poststop, hooks.as_ref(), &state, Some(&state.bundle));
        Ok(())
    }

    fn remove(self) -> Result<(), RuncError> {
        if self.status == RuncStatus::Paused {
            // Frozen tasks die only once thawed: kill them all first, so none runs again.
            self.kill_paused(Signal::SIGKILL)?;
        }
        if let Some(pid) = self.live_pid() {
            kill_and_wait(pid);
        }
        if let Some(cgroup) = self.cgroup()? {
            kill_cgroup(&cgroup);
            let path = self.rec.record.cgroups_path.clone().unwrap_or_default();
            cgroup.remove().map_err(|e| RuncError::Cgroup { path, source: Box::new(e) })?;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("cannot remove", &self.dir)(e)),
            _ => Ok(()),
        }
    }

    /// As runc does for SIGKILL: signal every process of the paused container, then thaw it
    /// so that they can die.
    pub fn kill_paused(&self, signal: Signal) -> Result<(), RuncError> {
        let Some(cgroup) = self.cgroup()? else {
            return Ok(());
        };
        for pid in cgroup.pids() {
            let _ = kill(pid, signal); // a process may be gone meanwhile
        }
        self.thaw()
    }

    pub fn freeze(&self) -> Result<(), RuncError> {
        self.with_cgroup(|cgroup| cgroup.freeze())
    }

    pub fn thaw(&self) -> Result<(), RuncError> {
        self.with_cgroup(|cgroup| cgroup.thaw())
    }

    fn with_cgroup(
        &self,
        op: impl FnOnce(&ContainerCgroup) -> Result<(), crate::cgroups::CgroupError>,
    ) -> Result<(), RuncError> {
        let path = self.rec.record.cgroups_path.clone().unwrap_or_default();
        let Some(cgroup) = self.cgroup()? else {
            return Err(RuncError::NoCgroup);
        };
        op(&cgroup).map_err(|e| RuncError::Cgroup { path, source: Box::new(e) })
    }
}

pub(super) fn on_host(path: &str) -> Result<ContainerCgroup, RuncError> {
    ContainerCgroup::on_host(path).map_err(|e| RuncError::Cgroup { path: path.to_string(), source: Box::new(e) })
}

/// Created until `start`, running after; paused while its cgroup is frozen; stopped once the
/// init is gone (or its pid was reused by another process, told apart by its start time).
fn live_status(record: &Record) -> RuncStatus {
    let alive =
        record.state.pid.is_some_and(|pid| procfs::is_same_live_process(Pid::from_raw(pid), record.pid_start_time));
    if !alive {
        return RuncStatus::Stopped;
    }
    if is_frozen(record) {
        return RuncStatus::Paused;
    }
    match record.state.status {
        ContainerStatus::Creating => RuncStatus::Creating,
        ContainerStatus::Created => RuncStatus::Created,
        ContainerStatus::Running => RuncStatus::Running,
        ContainerStatus::Stopped => RuncStatus::Stopped,
    }
}

/// Frozen, or on its way there (a pause that did not finish still holds its tasks).
fn is_frozen(record: &Record) -> bool {
    let Some(cgroup) = record.cgroups_path.as_deref().and_then(|p| ContainerCgroup::on_host(p).ok()) else {
        return false;
    };
    matches!(cgroup.freezer_state(), Ok(FreezerState::Frozen | FreezerState::Freezing))
}

/// SIGKILL a process that is not our child and wait (on a pidfd) until it has exited.
pub(super) fn kill_and_wait(pid: Pid) {
    let pidfd = crate::sys::pidfd_open(pid).ok();
    match kill(pid, Signal::SIGKILL) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return,
        Err(e) => tracing::warn!(%pid, error = %e, "cannot kill container init"),
    }
    if let Some(pidfd) = pidfd {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(EXIT_TIMEOUT).unwrap_or(PollTimeout::MAX);
        if let Ok(0) | Err(_) = poll(&mut fds, timeout) {
            tracing::warn!(%pid, "container init did not exit after SIGKILL");
        }
    }
}

/// Without a pid namespace, processes may outlive the init: kill them all so the cgroup
/// directory can be removed.
fn kill_cgroup(cgroup: &ContainerCgroup) {
    for _ in 0..250 {
        let pids = cgroup.pids();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
