//! The on-disk layout of the image store and its crash-safe writes.
//!
//! ```text
//! <root>/blobs/sha256/<hex>          manifests, configs and layer blobs, content-addressed
//! <root>/layers/sha256/<diffid hex>/ unpacked layers, shared between images
//! <root>/index.json                  normalized reference -> image record
//! <root>/tmp/                        downloads and unpacks in progress (emptied on open)
//! ```
//!
//! Nothing appears under its final name before it is complete: files are written to `tmp/`,
//! fsynced and renamed; layers are unpacked into `tmp/`, synced and renamed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

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

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Create the directories and drop leftovers of interrupted pulls.
    pub fn create(root: PathBuf) -> Result<Layout, ImageError> {
        let layout = Layout { root };
        match std::fs::remove_dir_all(layout.tmp_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("clean", layout.tmp_dir())(e)),
        }
        for dir in [layout.blobs_dir(), layout.layers_dir(), layout.tmp_dir()] {
            std::fs::create_dir_all(&dir).map_err(ImageError::io("create", dir))?;
        }
        Ok(layout)
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

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
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

    /// A fresh name under `tmp/`.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let suffix: u64 = rand::thread_rng().gen();
        self.tmp_dir().join(format!("{what}-{suffix:016x}"))
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
fn write_atomic(temp: &Path, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
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
