//! Each open store owns a work directory `<root>/tmp/<pid>-<random>/`, flocked while the store
//! is open: its downloads and unpacks in progress live there, and its `busy.json` lists the
//! digests its pulls have pinned (see [`super::inflight`]) for the garbage collectors of other
//! processes. A work directory that nobody holds is a dead process's leftovers: taken in and
//! deleted by the next store opened.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use rand::Rng;

use super::store::{remove_dir_all_quiet, write_atomic};
use super::store_lock::try_lock;
use super::{Digest, ImageError};

const BUSY_FILE: &str = "busy.json";
/// Names of dead work directories taken in by a new one, to delete.
const ADOPTED_PREFIX: &str = "dead-";

pub struct WorkDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl WorkDir {
    /// Claim a new work directory under `tmp` and take in the leftovers of dead ones (see
    /// [`WorkDir::remove_adopted`]). Call with the store lock held, so that no other process
    /// claims a directory between our look at it and our lock of it.
    pub fn claim(tmp: &Path) -> Result<WorkDir, ImageError> {
        let suffix: u64 = rand::thread_rng().gen();
        let path = tmp.join(format!("{}-{suffix:016x}", std::process::id()));
        std::fs::create_dir(&path).map_err(ImageError::io("create", path.as_path()))?;
        let dir = File::open(&path).map_err(ImageError::io("open", path.as_path()))?;
        let lock = try_lock(dir, &path)?.ok_or_else(|| {
            ImageError::io("lock", path.as_path())(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        })?;
        let work = WorkDir { path, _lock: lock };
        work.adopt_dead(tmp)?;
        Ok(work)
    }

    /// Delete what [`WorkDir::claim`] took in; without the store lock (it may take a while).
    pub fn remove_adopted(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(ADOPTED_PREFIX) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_all_quiet(&entry.path());
            } else if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a leftover file");
            }
        }
    }

    /// Move the work directories no open store holds (dead processes' leftovers), and loose
    /// files, into ours: one rename each, quick under the store lock.
    fn adopt_dead(&self, tmp: &Path) -> Result<(), ImageError> {
        for entry in std::fs::read_dir(tmp).map_err(ImageError::io("list", tmp))? {
            let path = entry.map_err(ImageError::io("list", tmp))?.path();
            if path == self.path {
                continue;
            }
            let _dead = if path.is_dir() {
                let dir = File::open(&path).map_err(ImageError::io("open", path.as_path()))?;
                // Held while moving: nobody can take over a directory that is going away.
                match try_lock(dir, &path)? {
                    Some(dead) => Some(dead),
                    None => continue,
                }
            } else {
                None
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let adopted = self.path.join(format!("{ADOPTED_PREFIX}{name}"));
            std::fs::rename(&path, &adopted).map_err(ImageError::io("move out of tmp", path.as_path()))?;
            tracing::debug!(path = %path.display(), "taking over a dead store's work directory");
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tell other processes which digests this store's pulls need. Call with the store lock
    /// held (the collectors read under it).
    pub fn publish_busy(&self, busy: &HashSet<Digest>) -> Result<(), ImageError> {
        let path = self.path.join(BUSY_FILE);
        if busy.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io("remove", path)(e)),
                _ => Ok(()),
            };
        }
        let sorted: BTreeSet<&str> = busy.iter().map(Digest::as_str).collect();
        let bytes = serde_json::to_vec(&sorted).expect("a set of strings serializes");
        write_atomic(&self.path.join(format!("{BUSY_FILE}.new")), &path, &bytes)
    }

    /// The digests that pulls of other live stores on this root have pinned. Call with the
    /// store lock held.
    pub fn busy_elsewhere(&self) -> Result<HashSet<Digest>, ImageError> {
        let tmp = self.path.parent().expect("a work dir is under tmp/");
        let mut busy = HashSet::new();
        for dir in live_dirs(tmp)?.into_iter().filter(|dir| *dir != self.path) {
            let path = dir.join(BUSY_FILE);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io("read", path)(e)),
            };
            let digests: Vec<String> = serde_json::from_slice(&bytes)
                .map_err(|source| ImageError::CorruptPins { path: path.clone(), source })?;
            for digest in digests {
                busy.insert(Digest::parse(&digest)?);
            }
        }
        Ok(busy)
    }
}

/// Work directories some open store holds.
fn live_dirs(tmp: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir(tmp).map_err(ImageError::io("list", tmp))? {
        let path = entry.map_err(ImageError::io("list", tmp))?.path();
        if !path.is_dir() {
            continue;
        }
        let dir = match File::open(&path) {
            Ok(dir) => dir,
            // Swept by another opener meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io("open", path)(e)),
        };
        if try_lock(dir, &path)?.is_none() {
            live.push(path);
        }
    }
    Ok(live)
}
