//! The on-disk layout of the image store and its crash-safe writes.
//!
//! ```text
//! <root>/blobs/sha256/<hex>          manifests, configs and layer blobs, content-addressed
//! <root>/layers/sha256/<diffid hex>/ unpacked layers, shared between images
//! <root>/index.json                  normalized reference -> image record
//! <root>/lock                        flocked around index updates and collections
//! <root>/tmp/<pid>-<random>/         one per open store: downloads and unpacks in progress,
//!                                    busy.json (its pulls' pins); see [`super::work_dir`]
//! ```
//!
//! Nothing appears under its final name before it is complete: files are written to the work
//! directory, fsynced and renamed; layers are unpacked there, synced and renamed.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::store_lock::{StoreLock, StoreLockGuard};
use super::work_dir::WorkDir;
use super::{Digest, ImageError};

/// What the index remembers about a pulled image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub reference: String,
    pub digest: Digest,
    pub repo_digest: String,
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub images: BTreeMap<String, ImageRecord>,
}

#[derive(Clone)]
pub struct Layout {
    root: PathBuf,
    lock: StoreLock,
    work: Arc<WorkDir>,
}

impl Layout {
    /// Create the directories, drop leftovers of dead processes' pulls and claim a work
    /// directory.
    pub fn create(root: PathBuf) -> Result<Layout, ImageError> {
        for dir in [root.join("blobs").join("sha256"), root.join("layers").join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(ImageError::io("create", dir))?;
        }
        let lock = StoreLock::new(&root);
        let work = {
            let _guard = lock.lock()?;
            WorkDir::claim(&root.join("tmp"))?
        };
        work.remove_adopted();
        Ok(Layout { root, lock, work: Arc::new(work) })
    }

    /// The store's lock across processes (see [`super::store_lock`]).
    pub fn lock(&self) -> Result<StoreLockGuard, ImageError> {
        self.lock.lock()
    }

    /// Publish this store's pinned digests (computed under the lock, so that concurrent
    /// publishers cannot overwrite a newer set with an older one).
    pub fn publish_busy(&self, busy: impl FnOnce() -> HashSet<Digest>) -> Result<(), ImageError> {
        let _guard = self.lock()?;
        self.work.publish_busy(&busy())
    }

    /// [`Layout::publish_busy`] for a caller that holds the lock.
    pub fn publish_busy_locked(&self, _held: &StoreLockGuard, busy: &HashSet<Digest>) -> Result<(), ImageError> {
        self.work.publish_busy(busy)
    }

    /// What other processes' pulls have pinned; the caller holds the lock.
    pub fn busy_elsewhere(&self, _held: &StoreLockGuard) -> Result<HashSet<Digest>, ImageError> {
        self.work.busy_elsewhere()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    /// This store's own directory under `tmp/`.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Unpacked layers are keyed by diff id: the same content compressed differently is
    /// unpacked once.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// A fresh name in the work directory.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let suffix: u64 = rand::thread_rng().gen();
        self.work_dir().join(format!("{what}-{suffix:016x}"))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(ImageError::io("read", path))
    }

    /// Store verified bytes under their digest.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        write_atomic(&self.temp_path("blob"), &self.blob_path(digest), bytes)
    }

    /// Move a verified, fsynced download into place.
    pub fn commit_blob(&self, temp: &Path, digest: &Digest) -> Result<(), ImageError> {
        let path = self.blob_path(digest);
        std::fs::rename(temp, &path).map_err(ImageError::io("rename into place", path.as_path()))?;
        sync_dir(&self.blobs_dir())
    }

    /// Move a fully unpacked, synced layer into place. Another pull may have won the race:
    /// then its copy is kept and ours dropped.
    pub fn commit_layer(&self, temp: &Path, diff_id: &Digest) -> Result<(), ImageError> {
        let path = self.layer_dir(diff_id);
        if let Err(e) = std::fs::rename(temp, &path) {
            if path.is_dir() {
                remove_dir_all_quiet(temp);
                return Ok(());
            }
            return Err(ImageError::io("rename into place", path)(e));
        }
        sync_dir(&self.layers_dir())
    }

    pub fn load_index(&self) -> Result<Index, ImageError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ImageError::CorruptIndex { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::io("read", path)(e)),
        }
    }

    pub fn save_index(&self, index: &Index) -> Result<(), ImageError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|source| ImageError::CorruptIndex { path: path.clone(), source })?;
        write_atomic(&self.temp_path("index"), &path, &bytes)
    }
}

/// Write, fsync, rename, fsync the directory.
pub fn write_atomic(temp: &Path, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut file = File::create(temp).map_err(ImageError::io("create", temp))?;
    file.write_all(bytes).map_err(ImageError::io("write", temp))?;
    file.sync_all().map_err(ImageError::io("fsync", temp))?;
    std::fs::rename(temp, path).map_err(ImageError::io("rename into place", path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ImageError::io("fsync", dir))
}

pub fn remove_dir_all_quiet(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary directory");
        }
    }
}
