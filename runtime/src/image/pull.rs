//! One pull: resolve the manifest (through an index when needed), fetch the config, download
//! and unpack the missing layers (a few at once), record the image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use oci_spec::image::ImageConfiguration;

use super::credentials::Credentials;
use super::hosts::RegistryHost;
use super::inflight::Inflight;
use super::manifest::{self, layer_compression, ImageManifest, Manifest};
use super::pins::PublishedPins;
use super::registry::RegistryClient;
use super::store::{ImageRecord, LayerRecord, Layout};
use super::{unpack, Digest, ImageError, PullProgress, Reference};

const CONFIG_MEDIA_TYPES: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// Layers downloaded and unpacked at the same time, per pull: enough to fill a link and keep
/// both cores unpacking, few enough not to hammer a registry (containerd's default is 3).
pub const PARALLEL_LAYERS: usize = 3;

/// What a pull needs beyond the reference.
pub struct PullContext<'a> {
    pub layout: &'a Layout,
    pub inflight: &'a Arc<Inflight>,
    /// The registry's hosts, mirrors first, each with the credentials to show it.
    pub hosts: Vec<(RegistryHost, Option<Credentials>)>,
}

/// Fetch everything `reference` needs into the store; returns the record to index and the
/// pins that keep the content from garbage collectors until the caller has indexed it. On
/// failure the pins are released (and published) before the error is returned.
pub async fn pull(
    context: &PullContext<'_>,
    reference: &Reference,
    progress: &dyn PullProgress,
) -> Result<(ImageRecord, PublishedPins), ImageError> {
    let shown = reference.to_string();
    let client = RegistryClient::with_hosts(reference, context.hosts.clone())?;
    let (manifest, manifest_digest, manifest_body) = resolve_manifest(&client, reference).await?;

    if !manifest.config.media_type.is_empty() && !CONFIG_MEDIA_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(ImageError::UnsupportedMediaType {
            reference: shown,
            what: "config (not a container image)",
            media_type: manifest.config.media_type.clone(),
        });
    }
    for layer in &manifest.layers {
        if layer_compression(&layer.media_type).is_none() {
            return Err(ImageError::UnsupportedMediaType {
                reference: shown,
                what: "layer",
                media_type: layer.media_type.clone(),
            });
        }
    }

    let mut pinned = vec![manifest_digest.clone(), manifest.config.digest.clone()];
    pinned.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    // Published before looking at what the store has: from now on no collector, here or in
    // another process, removes this content.
    let mut pins = PublishedPins::pin(context.layout, context.inflight, pinned).await?;
    let manifest = Fetched { manifest, digest: manifest_digest, body: manifest_body };
    match fetch(context, &client, reference, manifest, progress, &mut pins).await {
        Ok(record) => Ok((record, pins)),
        Err(error) => {
            // Its pins are gone: let other processes collect what the pull left.
            if let Err(e) = pins.release().await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot update the store's pinned digests");
            }
            Err(error)
        }
    }
}

/// The resolved image manifest, its digest and body.
struct Fetched {
    manifest: ImageManifest,
    digest: Digest,
    body: Vec<u8>,
}

/// The config and the layers of a resolved manifest, then the manifest itself.
async fn fetch(
    context: &PullContext<'_>,
    client: &RegistryClient,
    reference: &Reference,
    fetched: Fetched,
    progress: &dyn PullProgress,
    pins: &mut PublishedPins,
) -> Result<ImageRecord, ImageError> {
    let layout = context.layout;
    let shown = reference.to_string();
    let Fetched { manifest, digest: manifest_digest, body: manifest_body } = fetched;
    let config_digest = &manifest.config.digest;
    let config_bytes = {
        let _fetching = context.inflight.lock(config_digest).await;
        if layout.has_blob(config_digest) {
            layout.read_blob(config_digest)?
        } else {
            let bytes = client.fetch_config(&manifest.config).await?;
            layout.write_blob(config_digest, &bytes)?;
            bytes
        }
    };
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Parse {
        reference: shown.clone(),
        what: "image config",
        source,
    })?;
    let diff_ids = config.rootfs().diff_ids().iter().map(|d| Digest::parse(d)).collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::LayerCountMismatch {
            reference: shown,
            diff_ids: diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    pins.extend(diff_ids.clone()).await?;

    // A few layers at a time, in manifest order. After a failure the other layers still run
    // to their end rather than being cancelled: a cancelled unpack would go on in its
    // blocking thread, unlocked, and land in the store after the pull has returned.
    // Indices, not (&descriptor, diff id) pairs: a closure taking a borrowed argument makes
    // the future not provably Send for callers behind async-trait.
    let (descriptors, diff_ids) = (&manifest.layers, &diff_ids);
    let results: Vec<Result<LayerRecord, ImageError>> = futures::stream::iter(0..descriptors.len())
        .map(|i| async move {
            let (descriptor, diff_id) = (&descriptors[i], &diff_ids[i]);
            // One download per blob within the process: a concurrent pull of the same layer
            // waits here and then finds it unpacked.
            let _fetching = context.inflight.lock(&descriptor.digest).await;
            ensure_layer(layout, client, descriptor, diff_id, progress).await?;
            Ok::<_, ImageError>(LayerRecord {
                digest: descriptor.digest.clone(),
                diff_id: diff_id.clone(),
                size: descriptor.size,
                media_type: descriptor.media_type.clone(),
            })
        })
        .buffered(PARALLEL_LAYERS)
        .collect()
        .await;
    let layers = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    // The manifest goes in last: its presence means the whole image is here.
    layout.write_blob(&manifest_digest, &manifest_body)?;

    Ok(ImageRecord {
        reference: shown,
        repo_digest: reference.with_digest(&manifest_digest),
        digest: manifest_digest,
        config_digest: config_digest.clone(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
    })
}

/// The image manifest for linux/amd64, its digest and body.
async fn resolve_manifest(
    client: &RegistryClient,
    reference: &Reference,
) -> Result<(ImageManifest, Digest, Vec<u8>), ImageError> {
    let shown = reference.to_string();
    let fetched = client.fetch_manifest(&reference.manifest_ref(), reference.digest.as_ref()).await?;
    match manifest::parse(&shown, &fetched.content_type, &fetched.body)? {
        Manifest::Image(image) => Ok((image, fetched.digest, fetched.body)),
        Manifest::Index(index) => {
            let chosen = index.select_platform(&shown)?;
            tracing::debug!(reference = %shown, manifest = %chosen.digest, "resolved index to linux/amd64");
            let fetched = client.fetch_manifest(chosen.digest.as_str(), Some(&chosen.digest)).await?;
            match manifest::parse(&shown, &fetched.content_type, &fetched.body)? {
                Manifest::Image(image) => Ok((image, fetched.digest, fetched.body)),
                Manifest::Index(_) => Err(ImageError::UnsupportedMediaType {
                    reference: shown,
                    what: "platform manifest (nested index)",
                    media_type: fetched.content_type,
                }),
            }
        }
    }
}

/// Make sure the layer is unpacked under its diff id: download the blob when missing, unpack
/// into a temp dir, check the diff id, rename into place.
async fn ensure_layer(
    layout: &Layout,
    client: &RegistryClient,
    descriptor: &manifest::Descriptor,
    diff_id: &Digest,
    progress: &dyn PullProgress,
) -> Result<(), ImageError> {
    let digest = &descriptor.digest;
    if layout.layer_dir(diff_id).is_dir() {
        progress.layer(digest.as_str(), descriptor.size, descriptor.size);
        return Ok(());
    }
    if layout.has_blob(digest) {
        progress.layer(digest.as_str(), descriptor.size, descriptor.size);
    } else {
        let temp = TempFile(layout.temp_path("download"));
        let mut file = tokio::fs::File::create(&temp.0).await.map_err(ImageError::io("create", temp.0.as_path()))?;
        client.download_blob(descriptor, &mut file, &temp.0, progress).await?;
        drop(file);
        layout.commit_blob(&temp.0, digest)?;
    }

    let blob = layout.blob_path(digest);
    let temp_dir = layout.temp_path("unpack");
    let target = layout.clone();
    let (layer, expected) = (digest.to_string(), diff_id.clone());
    let dir = temp_dir.clone();
    let unpacked = tokio::task::spawn_blocking(move || unpack_checked(&target, &blob, &dir, &layer, &expected))
        .await
        .map_err(|source| ImageError::Task { what: format!("unpacking layer {digest}"), source })
        .and_then(|r| r);
    if unpacked.is_err() {
        let dir = temp_dir.clone();
        let _ = tokio::task::spawn_blocking(move || super::store::remove_dir_all_quiet(&dir)).await;
    }
    unpacked
}

/// A download in `tmp/`, removed when dropped (failed, or cancelled because another layer of
/// the pull failed); after a successful commit it no longer exists and the removal is a no-op.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.0.display(), error = %e, "cannot remove partial download"),
        }
    }
}

fn unpack_checked(layout: &Layout, blob: &Path, dir: &Path, layer: &str, expected: &Digest) -> Result<(), ImageError> {
    std::fs::create_dir(dir).map_err(ImageError::io("create", dir))?;
    let actual = unpack::unpack_blob(blob, dir, layer)?;
    if actual != *expected {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    // Everything unpacked must be on disk before the layer gets its final name.
    let fd = std::fs::File::open(dir).map_err(ImageError::io("open", dir))?;
    nix::unistd::syncfs(&fd).map_err(|e| ImageError::io("sync", dir)(e.into()))?;
    layout.commit_layer(dir, expected)
}
