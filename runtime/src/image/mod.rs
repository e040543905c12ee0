//! OCI images: pull from registries (OCI distribution spec), a content-addressed store with
//! each layer unpacked once, and container root filesystems as overlayfs mounts.
//!
//! Submodules, one job each: [`reference`] (Docker's reference rules), [`registry`] and
//! [`auth`] (HTTP), [`manifest`] (manifest/index formats), [`store`] (on-disk layout, crash-safe
//! writes), [`unpack`] and [`beneath`] (layer tarballs, confined to their directory),
//! [`overlay`] (mounts), [`progress`].

pub mod auth;
pub mod beneath;
mod digest;
mod error;
pub mod manifest;
pub mod overlay;
mod progress;
mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use digest::Digest;
pub use error::ImageError;
pub use progress::{NoProgress, PullProgress};
pub use reference::Reference;

use store::{ImageRecord, Layout};

/// The node's image store (see [`store`] for the layout under its root).
pub struct ImageStore {
    layout: Layout,
    /// Serialises read-modify-write of `index.json` within this process.
    index_lock: Mutex<()>,
}

/// A pulled image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Normalized, e.g. "127.0.0.1:5000/web:1", "docker.io/library/busybox:latest".
    pub reference: String,
    /// Manifest digest "sha256:...".
    pub digest: String,
    /// "<repository>@sha256:..." (Kubernetes imageID).
    pub repo_digest: String,
    pub config: oci_spec::image::ImageConfiguration,
    /// Sum of compressed layer sizes.
    pub size: u64,
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        Ok(ImageStore { layout: Layout::create(root.into())?, index_lock: Mutex::new(()) })
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Pull by reference ("127.0.0.1:5000/web:1", "busybox", "name@sha256:..."), verify every
    /// digest, unpack layers once each. Plain HTTP only for registries on 127.0.0.0/8 (and ::1).
    pub async fn pull(&self, reference: &str, progress: &dyn PullProgress) -> Result<Image, ImageError> {
        let parsed = Reference::parse(reference)?;
        tracing::info!(reference = %parsed, "pulling image");
        let record = pull::pull(&self.layout, &parsed, progress).await?;
        {
            let _guard = self.lock_index();
            let mut index = self.layout.load_index()?;
            index.images.insert(record.reference.clone(), record.clone());
            self.layout.save_index(&index)?;
        }
        tracing::info!(reference = %record.reference, digest = %record.digest, "pulled image");
        self.image(&record)
    }

    /// Local lookup by reference or by digest ("sha256:...", "name@sha256:..."); Ok(None) when
    /// not present.
    pub fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        match self.find(reference)? {
            Some(record) => self.image(&record).map(Some),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.layout.load_index()?;
        index.images.values().map(|record| self.image(record)).collect()
    }

    /// Mount an overlayfs of the image's layers at `<container_dir>/rootfs`, upper and work
    /// dirs under `container_dir`. Idempotent (already mounted -> Ok).
    pub fn mount_rootfs(&self, image: &Image, container_dir: &Path) -> Result<PathBuf, ImageError> {
        let record = self.find(&image.digest)?.ok_or_else(|| ImageError::MissingLayer {
            reference: image.reference.clone(),
            layer: "(image no longer in the store)".to_string(),
        })?;
        let lower_dirs = record
            .layers
            .iter()
            .rev()
            .map(|layer| {
                let dir = self.layout.layer_dir(&layer.diff_id);
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(ImageError::MissingLayer {
                        reference: record.reference.clone(),
                        layer: layer.diff_id.to_string(),
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        overlay::mount_overlay(&lower_dirs, container_dir)
    }

    /// Unmount and remove upper/work/rootfs under `container_dir`. Idempotent.
    pub fn unmount_rootfs(&self, container_dir: &Path) -> Result<(), ImageError> {
        overlay::unmount_overlay(container_dir)
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves the file itself consistent (atomic writes).
        self.index_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn find(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        let index = self.layout.load_index()?;
        if let Ok(digest) = Digest::parse(reference) {
            return Ok(index.images.values().find(|r| r.digest == digest).cloned());
        }
        let parsed = Reference::parse(reference)?;
        if let Some(record) = index.images.get(&parsed.to_string()) {
            return Ok(Some(record.clone()));
        }
        // "name@digest" matches an image pulled by tag with that manifest.
        Ok(parsed.digest.as_ref().and_then(|digest| {
            let name = parsed.name();
            index.images.values().find(|r| r.digest == *digest && r.repo_digest == format!("{name}@{digest}")).cloned()
        }))
    }

    fn image(&self, record: &ImageRecord) -> Result<Image, ImageError> {
        let bytes = self.layout.read_blob(&record.config_digest)?;
        let config = serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
            reference: record.reference.clone(),
            what: "image config",
            source,
        })?;
        Ok(Image {
            reference: record.reference.clone(),
            digest: record.digest.to_string(),
            repo_digest: record.repo_digest.clone(),
            config,
            size: record.size,
        })
    }
}
