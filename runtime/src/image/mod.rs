//! OCI images: pull from registries (OCI distribution spec), a content-addressed store with
//! each layer unpacked once, and container root filesystems as overlayfs mounts.
//!
//! Submodules, one job each: [`reference`] (Docker's reference rules), [`registry`],
//! [`hosts`] (containerd's `certs.d/<host>/hosts.toml`: mirrors, TLS), `endpoint` (one host),
//! [`auth`], [`credentials`] and [`retry`] (HTTP), [`manifest`] (manifest/index formats),
//! [`store`] (on-disk layout, crash-safe writes), `store_lock` and `work_dir` (sharing the
//! store between processes), `inflight` (one download per digest), `pins` (a pull's pins,
//! published for other processes),
//! [`gc`] (removal of unreferenced content), [`unpack`], `header_guard` and [`beneath`] (layer
//! tarballs, bounded and confined to their directory), [`overlay`] (mounts), [`progress`].

pub mod auth;
pub mod beneath;
pub mod credentials;
mod digest;
mod endpoint;
mod error;
pub mod gc;
mod header_guard;
pub mod hosts;
mod inflight;
pub mod manifest;
pub mod overlay;
mod pins;
mod progress;
mod pull;
pub mod reference;
pub mod registry;
mod retry;
pub mod store;
mod store_lock;
pub mod unpack;
mod work_dir;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use credentials::{Credentials, DockerConfig};
pub use digest::Digest;
pub use error::ImageError;
pub use gc::Collected;
pub use progress::{NoProgress, PullProgress};
pub use pull::PARALLEL_LAYERS;
pub use reference::Reference;

use hosts::RegistryHost;
use inflight::Inflight;
use store::{ImageRecord, Index, Layout};
use store_lock::StoreLockGuard;

/// Where `nodelet agent`, `run` and `image` look for registry hosts by default (containerd's
/// is /etc/containerd/certs.d).
pub const DEFAULT_REGISTRY_CONFIG_DIR: &str = "/etc/nodelet/certs.d";

/// The node's image store (see [`store`] for the layout under its root).
pub struct ImageStore {
    layout: Layout,
    /// Per-digest download locks and pins of pulls not yet indexed.
    inflight: Arc<Inflight>,
    /// Registry credentials (a Docker config.json), when configured.
    docker_config: Option<DockerConfig>,
    /// containerd-style `certs.d` directory of registry hosts (mirrors, TLS), when configured.
    hosts_dir: Option<PathBuf>,
}

/// An image as the index records it (see [`ImageStore::summaries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub reference: String,
    /// Manifest digest "sha256:...".
    pub digest: String,
    /// "<repository>@sha256:...".
    pub repo_digest: String,
    /// Sum of compressed layer sizes.
    pub size: u64,
}

/// What [`ImageStore::remove`] and [`ImageStore::prune`] did.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// References removed from the index.
    pub images: Vec<String>,
    pub collected: Collected,
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
    /// The config digest "sha256:..." (what Docker and crictl call the image ID).
    pub id: String,
    pub config: oci_spec::image::ImageConfiguration,
    /// Sum of compressed layer sizes.
    pub size: u64,
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        Ok(ImageStore {
            layout: Layout::create(root.into())?,
            inflight: Arc::default(),
            docker_config: None,
            hosts_dir: None,
        })
    }

    /// Pull with the credentials of a Docker `config.json` (`auths`, by registry host).
    pub fn with_docker_config(self, path: &Path) -> Result<Self, ImageError> {
        Ok(self.with_credentials(DockerConfig::load(path)?))
    }

    /// Pull with these credentials (the node's) when a pull brings none of its own.
    pub fn with_credentials(mut self, config: DockerConfig) -> Self {
        self.docker_config = Some(config);
        self
    }

    /// Registry hosts from this `certs.d` directory (see [`hosts`]); it is read at each
    /// pull and may not exist.
    pub fn with_registry_hosts_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hosts_dir = Some(dir.into());
        self
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Pull by reference ("127.0.0.1:5000/web:1", "busybox", "name@sha256:..."), verify every
    /// digest, unpack layers once each. Plain HTTP only for registries on 127.0.0.0/8 (and ::1).
    /// Concurrent pulls through the same store download each blob once.
    pub async fn pull(&self, reference: &str, progress: &dyn PullProgress) -> Result<Image, ImageError> {
        self.pull_with_secrets(reference, progress, &[]).await
    }

    /// [`ImageStore::pull`] with a pod's image pull secrets: as kubelet does, every matching
    /// entry of the secrets (in order), then of the node's config, is a candidate; with none,
    /// the pull is anonymous. A candidate the registry refuses (401/403) passes the turn to
    /// the next; any other outcome ends the pull.
    pub async fn pull_with_secrets(
        &self,
        reference: &str,
        progress: &dyn PullProgress,
        secrets: &[DockerConfig],
    ) -> Result<Image, ImageError> {
        let parsed = Reference::parse(reference)?;
        let configs: Vec<&DockerConfig> = secrets.iter().chain(&self.docker_config).collect();
        let mut candidates: Vec<Credentials> = Vec::new();
        for config in &configs {
            for credentials in config.matching(&parsed.registry, &parsed.repository) {
                if !candidates.contains(credentials) {
                    candidates.push(credentials.clone());
                }
            }
        }
        let hosts = self.registry_hosts(&parsed, &configs)?;
        let Some((last, others)) = candidates.split_last() else {
            return self.pull_as(&parsed, progress, &hosts, None).await;
        };
        for credentials in others {
            match self.pull_as(&parsed, progress, &hosts, Some(credentials)).await {
                Err(error @ ImageError::Unauthorized { .. }) => {
                    tracing::info!(reference = %parsed, user = %credentials.username, %error, "credentials refused; trying the next");
                }
                other => return other,
            }
        }
        self.pull_as(&parsed, progress, &hosts, Some(last)).await
    }

    /// The registry's hosts, mirrors first (see [`hosts`]); each mirror with the first
    /// credentials `configs` hold for its own host: a mirror is never shown the registry's.
    fn registry_hosts(
        &self,
        parsed: &Reference,
        configs: &[&DockerConfig],
    ) -> Result<Vec<(RegistryHost, Option<Credentials>)>, ImageError> {
        let hosts = hosts::hosts_for(self.hosts_dir.as_deref(), parsed)?;
        Ok(hosts
            .into_iter()
            .map(|host| {
                let own = if host.mirror {
                    configs.iter().find_map(|config| {
                        config.matching(&host.authority(), &parsed.repository).first().map(|c| (*c).clone())
                    })
                } else {
                    None
                };
                (host, own)
            })
            .collect())
    }

    async fn pull_as(
        &self,
        parsed: &Reference,
        progress: &dyn PullProgress,
        hosts: &[(RegistryHost, Option<Credentials>)],
        credentials: Option<&Credentials>,
    ) -> Result<Image, ImageError> {
        tracing::info!(reference = %parsed, with_credentials = credentials.is_some(), "pulling image");
        // The registry's own host (the server) gets the candidate credentials.
        let hosts = hosts
            .iter()
            .map(|(host, own)| (host.clone(), if host.mirror { own.clone() } else { credentials.cloned() }))
            .collect();
        let context = pull::PullContext { layout: &self.layout, inflight: &self.inflight, hosts };
        let (record, pins) = pull::pull(&context, parsed, progress).await?;
        // Indexed and unpinned at once, under the store lock: a collector sees the image
        // either pinned or indexed. On a blocking thread, as another process may hold the
        // lock for a while; if this future is dropped meanwhile, the update still completes.
        let layout = self.layout.clone();
        let indexed = record.clone();
        tokio::task::spawn_blocking(move || {
            let guard = layout.lock()?;
            let mut index = layout.load_index()?;
            index.images.insert(indexed.reference.clone(), indexed);
            layout.save_index(&index)?;
            pins.release_locked(&guard)
        })
        .await
        .map_err(|source| ImageError::Task { what: format!("indexing image {}", record.reference), source })??;
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

    /// What the index says of each image, without reading their configs: for the node
    /// status and garbage collection, which look at every image often.
    pub fn summaries(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.layout.load_index()?;
        Ok(index
            .images
            .values()
            .map(|record| ImageSummary {
                reference: record.reference.clone(),
                digest: record.digest.to_string(),
                repo_digest: record.repo_digest.clone(),
                size: record.size,
            })
            .collect())
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.layout.load_index()?;
        index.images.values().map(|record| self.image(record)).collect()
    }

    /// Remove an image from the index (by reference, by manifest digest, which removes every
    /// tag of it, or by image ID or a prefix of at least 12 hex digits), then its blobs and
    /// layers that no other image uses. Layers a mounted rootfs uses stay on disk until a
    /// later collection. Ok with nothing removed when no image matches.
    pub fn remove(&self, reference: &str) -> Result<Removed, ImageError> {
        let guard = self.layout.lock()?;
        let mut index = self.layout.load_index()?;
        let matching = matching_references(&index, reference)?;
        for key in &matching {
            index.images.remove(key);
        }
        self.commit_removal(guard, index, matching)
    }

    /// Remove every image none of whose layers a mounted rootfs uses, and their content.
    ///
    /// The image store has no container records, so "in use" is read from the mounts: an
    /// image is kept when any of its layers is a lower dir of a mounted overlay (a running or
    /// created container's rootfs). An image that shares a base layer with a running
    /// container's image is therefore kept too: pruning never removes what might be in use.
    pub fn prune(&self) -> Result<Removed, ImageError> {
        let guard = self.layout.lock()?;
        let mut index = self.layout.load_index()?;
        let in_use = gc::layers_in_use(&self.layout)?;
        let unused: Vec<String> = index
            .images
            .iter()
            .filter(|(_, record)| !record.layers.iter().any(|layer| in_use.contains(&layer.diff_id)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &unused {
            index.images.remove(key);
        }
        self.commit_removal(guard, index, unused)
    }

    /// The images with a layer that a mounted overlay uses (a created or running container's
    /// rootfs), by manifest digest. The rule [`ImageStore::prune`] keeps images by.
    pub fn images_in_use(&self) -> Result<HashSet<String>, ImageError> {
        let in_use = gc::layers_in_use(&self.layout)?;
        let index = self.layout.load_index()?;
        Ok(index
            .images
            .values()
            .filter(|record| record.layers.iter().any(|layer| in_use.contains(&layer.diff_id)))
            .map(|record| record.digest.to_string())
            .collect())
    }

    /// Diff ids of the store's layers that mounted overlays use (see [`gc`]).
    pub fn layers_in_use(&self) -> Result<HashSet<Digest>, ImageError> {
        gc::layers_in_use(&self.layout)
    }

    /// Remove unreferenced blobs and layers (left by failed or interrupted pulls, or by
    /// removals whose layers were mounted at the time).
    pub fn collect_garbage(&self) -> Result<Collected, ImageError> {
        let guard = self.layout.lock()?;
        let index = self.layout.load_index()?;
        gc::collect(&self.layout, guard, &index, &self.inflight)
    }

    /// Save the index without `removed`, then collect. The index goes first: a crash in
    /// between leaves unreferenced content (collected next time), never a record without it.
    fn commit_removal(&self, guard: StoreLockGuard, index: Index, removed: Vec<String>) -> Result<Removed, ImageError> {
        if !removed.is_empty() {
            self.layout.save_index(&index)?;
            tracing::info!(images = ?removed, "removed images");
        }
        let collected = gc::collect(&self.layout, guard, &index, &self.inflight)?;
        Ok(Removed { images: removed, collected })
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
            id: record.config_digest.to_string(),
            config,
            size: record.size,
        })
    }
}

/// Index keys matching what a user typed for removal (see [`ImageStore::remove`]).
fn matching_references(index: &Index, text: &str) -> Result<Vec<String>, ImageError> {
    let keys = |matches: &dyn Fn(&ImageRecord) -> bool| -> Vec<String> {
        index.images.iter().filter(|(_, r)| matches(r)).map(|(k, _)| k.clone()).collect()
    };
    if let Ok(digest) = Digest::parse(text) {
        return Ok(keys(&|r| r.digest == digest || r.config_digest == digest));
    }
    let is_id_prefix = (12..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if is_id_prefix {
        let by_id = keys(&|r| r.config_digest.hex().starts_with(text));
        if !by_id.is_empty() {
            return Ok(by_id);
        }
    }
    let parsed = Reference::parse(text)?;
    let shown = parsed.to_string();
    if index.images.contains_key(&shown) {
        return Ok(vec![shown]);
    }
    // "name@digest": every tag of that repository with that manifest.
    Ok(match &parsed.digest {
        Some(digest) => {
            let repo_digest = format!("{}@{digest}", parsed.name());
            keys(&|r| r.repo_digest == repo_digest)
        }
        None => Vec::new(),
    })
}

#[cfg(test)]
mod tests;
