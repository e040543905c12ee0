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

pub(crate) fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

pub(crate) fn container_dir(root: &Path, id: &str) -> PathBuf {
    containers_dir(root).join(id)
}

pub(crate) fn save(root: &Path, record: &Record) -> Result<(), RuntimeError> {
    let dir = container_dir(root, &record.state.id);
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::StateFile { path, source }
    };
    let json =
        serde_json::to_vec_pretty(record).map_err(|source| RuntimeError::Encode { what: "container state", source })?;
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&json).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))
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
