//! One pull: resolve the manifest (through an index when needed), fetch the config, download
//! and unpack each missing layer, record the image.

use std::path::Path;

use oci_spec::image::ImageConfiguration;

use super::manifest::{self, layer_compression, ImageManifest, Manifest};
use super::registry::RegistryClient;
use super::store::{ImageRecord, LayerRecord, Layout};
use super::{unpack, Digest, ImageError, PullProgress, Reference};

const CONFIG_MEDIA_TYPES: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// Fetch everything `reference` needs into `layout`; returns the record to index.
pub async fn pull(
    layout: &Layout,
    reference: &Reference,
    progress: &dyn PullProgress,
) -> Result<ImageRecord, ImageError> {
    let shown = reference.to_string();
    let client = RegistryClient::new(reference)?;
    let (manifest, manifest_digest, manifest_body) = resolve_manifest(&client, reference).await?;

    let config_digest = &manifest.config.digest;
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

    let config_bytes = if layout.has_blob(config_digest) {
        layout.read_blob(config_digest)?
    } else {
        let bytes = client.fetch_config(&manifest.config).await?;
        layout.write_blob(config_digest, &bytes)?;
        bytes
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

    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
        ensure_layer(layout, &client, descriptor, &diff_id, progress).await?;
        layers.push(LayerRecord {
            digest: descriptor.digest.clone(),
            diff_id,
            size: descriptor.size,
            media_type: descriptor.media_type.clone(),
        });
    }
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
        let temp = layout.temp_path("download");
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await.map_err(ImageError::io("create", temp.as_path()))?;
            client.download_blob(descriptor, &mut file, &temp, progress).await?;
            layout.commit_blob(&temp, digest)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result?;
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
