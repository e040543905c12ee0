//! The store's lock across processes: the agent and `nodelet image` (or two of either) may
//! work on the same root. An exclusive flock on `<root>/lock` is held for every
//! read-modify-write of the index, for publishing a pull's pins, and for garbage collection,
//! so none of them sees the others half-done.
//!
//! Each call opens the file anew: flock locks belong to the open file description, so two
//! threads of one process exclude each other exactly as two processes do.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::ImageError;

#[derive(Clone, Debug)]
pub struct StoreLock {
    path: PathBuf,
}

/// Held while the lock is; released when dropped (or when the process dies).
pub struct StoreLockGuard {
    _flock: Flock<File>,
}

impl StoreLock {
    pub fn new(root: &Path) -> StoreLock {
        StoreLock { path: root.join("lock") }
    }

    /// Wait for the lock. Holders keep it for file-system work only (never across network
    /// I/O), so the wait is short.
    pub fn lock(&self) -> Result<StoreLockGuard, ImageError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(ImageError::io("open", self.path.as_path()))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io("lock", self.path.as_path())(errno.into()))?;
        Ok(StoreLockGuard { _flock: flock })
    }
}

/// Try an exclusive flock on `file` without waiting: `Ok(None)` when another open file
/// (another store instance, in this process or another) holds it.
pub fn try_lock(file: File, path: &Path) -> Result<Option<Flock<File>>, ImageError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(flock) => Ok(Some(flock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ImageError::io("lock", path)(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_other_open_files_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StoreLock::new(dir.path());
        let held = lock.lock().unwrap();
        let other = File::open(dir.path().join("lock")).unwrap();
        assert!(try_lock(other, dir.path()).unwrap().is_none(), "held by the guard");
        drop(held);
        let other = File::open(dir.path().join("lock")).unwrap();
        assert!(try_lock(other, dir.path()).unwrap().is_some(), "free once dropped");
    }
}
