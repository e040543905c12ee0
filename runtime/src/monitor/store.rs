//! Per-container state on disk: `<root>/containers/<id>/state.json`, replaced atomically
//! (write a temp file, fsync, rename, fsync the directory) so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ContainerState, RuntimeError};

const STATE_FILE: &str = "state.json";

/// What the monitor remembers of a container, beyond the public state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub state: ContainerState,
    /// /proc/<pid>/stat start time, to tell our process from a later one with the same pid.
    pub pid_start_time: Option<u64>,
    pub cgroups_path: Option<String>,
}

impl Record {
    /// A container just forked and waiting for `start`.
    pub(crate) fn created(
        id: &str,
        pid: nix::unistd::Pid,
        bundle: PathBuf,
        annotations: std::collections::BTreeMap<String, String>,
        cgroups_path: Option<String>,
    ) -> Record {
        Record {
            state: ContainerState {
                id: id.to_string(),
                status: super::ContainerStatus::Created,
                pid: Some(pid.as_raw()),
                bundle,
                created_at: chrono::Utc::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                oom_killed: false,
                annotations,
            },
            pid_start_time: super::procfs::start_time(pid),
            cgroups_path,
        }
    }
}

pub(crate) fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

pub(crate) fn container_dir(root: &Path, id: &str) -> PathBuf {
    containers_dir(root).join(id)
}

pub(crate) fn save(root: &Path, record: &Record) -> Result<(), RuntimeError> {
    save_in(&container_dir(root, &record.state.id), record, Durability::Fsync)
}

/// Whether a save must survive a machine crash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync the file and the directory: the monitor's records outlive reboots of the agent.
    Fsync,
    /// Rename only: state under /run dies with the machine anyway (nodelet-runc, like runc).
    Volatile,
}

/// Atomically replace `<dir>/state.json` with `value` (also used by nodelet-runc, whose
/// records wrap a [`Record`] with the fields runc's `state` shows).
pub(crate) fn save_in(dir: &Path, value: &impl Serialize, durability: Durability) -> Result<(), RuntimeError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::StateFile { path, source }
    };
    let json =
        serde_json::to_vec_pretty(value).map_err(|source| RuntimeError::Encode { what: "container state", source })?;
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&json).map_err(io_err(&tmp))?;
    if durability == Durability::Volatile {
        return std::fs::rename(&tmp, &path).map_err(io_err(&path));
    }
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// `<dir>/state.json`; None when the file is missing (a create that never finished).
pub(crate) fn load_from<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Option<T>, RuntimeError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RuntimeError::StateFile { path, source }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|source| RuntimeError::Decode { what: "container state", source })
}

/// Every container record on disk. Directories without a state file (a create that never
/// finished) are skipped.
pub(crate) fn load_all(root: &Path) -> Result<Vec<Record>, RuntimeError> {
    let dir = containers_dir(root);
    let entries = std::fs::read_dir(&dir).map_err(|source| RuntimeError::StateFile { path: dir.clone(), source })?;
    let mut records = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path().join(STATE_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(record) => records.push(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable state file")
            }
        }
    }
    Ok(records)
}
