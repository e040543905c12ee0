//! Freezing and thawing a container's cgroup (`runc pause` and `resume`): v1's
//! `freezer.state`, v2's `cgroup.freeze` with `cgroup.events`. Both settle asynchronously
//! and announce nothing on v1, so each change is re-read until it took, up to a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{write_file, CgroupError};

/// How long a freeze or thaw may take to settle (runc gives up after about the same).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two reads of the state while it settles.
const SETTLE_STEP: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    /// Asked to freeze, not every task frozen yet.
    Freezing,
    Frozen,
}

/// Which interface a cgroup directory offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Freezer {
    /// `freezer.state` in the v1 freezer hierarchy.
    V1,
    /// `cgroup.freeze` and `cgroup.events` of a cgroup2 directory.
    V2,
}

impl Freezer {
    pub(super) fn state(self, dir: &Path) -> Result<FreezerState, CgroupError> {
        match self {
            Freezer::V1 => Ok(match read(&dir.join("freezer.state"))?.trim() {
                "FROZEN" => FreezerState::Frozen,
                "FREEZING" => FreezerState::Freezing,
                _ => FreezerState::Thawed,
            }),
            Freezer::V2 => {
                if read(&dir.join("cgroup.freeze"))?.trim() != "1" {
                    return Ok(FreezerState::Thawed);
                }
                let events = read(&dir.join("cgroup.events"))?;
                Ok(if events.lines().any(|l| l.trim() == "frozen 1") {
                    FreezerState::Frozen
                } else {
                    FreezerState::Freezing
                })
            }
        }
    }

    /// Freeze every task and wait until they all are; thawed again if that does not happen.
    pub(super) fn freeze(self, dir: &Path) -> Result<(), CgroupError> {
        self.freeze_within(dir, SETTLE_TIMEOUT)
    }

    fn freeze_within(self, dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
        let result = self.set(dir, true, timeout);
        if result.is_err() {
            let _ = self.set(dir, false, timeout);
        }
        result
    }

    pub(super) fn thaw(self, dir: &Path) -> Result<(), CgroupError> {
        self.set(dir, false, SETTLE_TIMEOUT)
    }

    fn set(self, dir: &Path, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
        let (file, value) = match (self, frozen) {
            (Freezer::V1, true) => ("freezer.state", "FROZEN"),
            (Freezer::V1, false) => ("freezer.state", "THAWED"),
            (Freezer::V2, true) => ("cgroup.freeze", "1"),
            (Freezer::V2, false) => ("cgroup.freeze", "0"),
        };
        let wanted = if frozen { FreezerState::Frozen } else { FreezerState::Thawed };
        let deadline = Instant::now() + timeout;
        loop {
            // v1 restarts a stuck freeze on every write of FROZEN (as runc does); v2 needs one.
            write_file(&dir.join(file), value)?;
            let state = self.state(dir)?;
            if state == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::FreezerTimeout { path: dir.to_path_buf(), wanted, state });
            }
            std::thread::sleep(SETTLE_STEP);
        }
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: PathBuf::from(path), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_state_reads_freeze_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        write("cgroup.freeze", "0\n");
        write("cgroup.events", "populated 1\nfrozen 0\n");
        assert_eq!(Freezer::V2.state(dir.path()).unwrap(), FreezerState::Thawed);
        write("cgroup.freeze", "1\n");
        assert_eq!(Freezer::V2.state(dir.path()).unwrap(), FreezerState::Freezing);
        write("cgroup.events", "populated 1\nfrozen 1\n");
        assert_eq!(Freezer::V2.state(dir.path()).unwrap(), FreezerState::Frozen);
    }

    #[test]
    fn v2_freeze_waits_for_events_and_thaws_back_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        Freezer::V2.freeze(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap(), "1");

        // The kernel never reports "frozen 1": the freeze gives up and thaws.
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let err = Freezer::V2.freeze_within(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, CgroupError::FreezerTimeout { state: FreezerState::Freezing, .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join("cgroup.freeze")).unwrap(), "0");
        Freezer::V2.thaw(dir.path()).unwrap();
        assert_eq!(Freezer::V2.state(dir.path()).unwrap(), FreezerState::Thawed);
    }

    #[test]
    fn missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Freezer::V1.state(&dir.path().join("gone")).unwrap_err();
        assert!(err.to_string().contains("gone/freezer.state"), "{err}");
    }
}
