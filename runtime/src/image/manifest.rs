//! Manifests and indexes as registries serve them, in both the OCI and the Docker schema 2
//! flavours (same JSON shape, different media types), and the choice of the linux/amd64
//! manifest from an index. Schema 1 is recognised only to be refused clearly.

use serde::Deserialize;

use super::{Digest, ImageError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header for manifest requests: every kind we can use, single manifests first.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

pub const TARGET_OS: &str = "linux";
pub const TARGET_ARCH: &str = "amd64";
pub const TARGET_PLATFORM: &str = "linux/amd64";

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ImageIndex {
    pub manifests: Vec<Descriptor>,
}

/// What a manifest endpoint returned.
#[derive(Debug)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Fields used only to tell the kinds apart when Content-Type is missing or generic.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Parse a manifest body; `content_type` is the registry's Content-Type header (may be empty).
pub fn parse(reference: &str, content_type: &str, body: &[u8]) -> Result<Manifest, ImageError> {
    let parse_error = |what, source| ImageError::Parse { reference: reference.to_string(), what, source };
    let probe: Probe = serde_json::from_slice(body).map_err(|e| parse_error("manifest", e))?;
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    let declared = probe.media_type.as_deref().unwrap_or("");
    if probe.schema_version == Some(1)
        || [content_type, declared].iter().any(|t| *t == DOCKER_SCHEMA1 || *t == DOCKER_SCHEMA1_SIGNED)
    {
        return Err(ImageError::Schema1 { reference: reference.to_string() });
    }
    let kind = [content_type, declared]
        .into_iter()
        .find(|t| [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].contains(t))
        .map(str::to_string)
        .or_else(|| {
            // OCI allows omitting mediaType; fall back on the shape.
            if probe.manifests.is_some() {
                Some(OCI_INDEX.to_string())
            } else if probe.config.is_some() {
                Some(OCI_MANIFEST.to_string())
            } else {
                None
            }
        });
    match kind.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => {
            Ok(Manifest::Index(serde_json::from_slice(body).map_err(|e| parse_error("image index", e))?))
        }
        Some(_) => Ok(Manifest::Image(serde_json::from_slice(body).map_err(|e| parse_error("image manifest", e))?)),
        None => Err(ImageError::UnsupportedMediaType {
            reference: reference.to_string(),
            what: "manifest",
            media_type: if content_type.is_empty() { declared } else { content_type }.to_string(),
        }),
    }
}

impl ImageIndex {
    /// The linux/amd64 image manifest (variant ignored: amd64 has none in practice).
    pub fn select_platform(&self, reference: &str) -> Result<&Descriptor, ImageError> {
        self.manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.os == TARGET_OS && p.architecture == TARGET_ARCH))
            .ok_or_else(|| ImageError::NoMatchingPlatform {
                reference: reference.to_string(),
                platform: TARGET_PLATFORM,
                available: self.available_platforms(),
            })
    }

    fn available_platforms(&self) -> String {
        let platforms: Vec<String> = self
            .manifests
            .iter()
            .map(|m| match &m.platform {
                Some(p) => match &p.variant {
                    Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
                    None => format!("{}/{}", p.os, p.architecture),
                },
                None => "unknown".to_string(),
            })
            .collect();
        if platforms.is_empty() {
            "none".to_string()
        } else {
            platforms.join(", ")
        }
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer from its media type; `None` for media types that are not layers
/// we can unpack (e.g. foreign/non-distributable layers or unknown artifacts).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(Compression::None)
        }
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        // Docker's pre-OCI uncompressed layers.
        "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str, digest: &Digest, platform: Option<(&str, &str)>) -> String {
        let platform = platform
            .map(|(os, arch)| format!(r#","platform":{{"os":"{os}","architecture":"{arch}"}}"#))
            .unwrap_or_default();
        format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":3{platform}}}"#)
    }

    #[test]
    fn picks_linux_amd64_from_an_index() {
        let arm = Digest::of(b"arm");
        let amd = Digest::of(b"amd");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{},{}]}}"#,
            descriptor(DOCKER_MANIFEST, &arm, Some(("linux", "arm64"))),
            descriptor(DOCKER_MANIFEST, &amd, Some(("linux", "amd64"))),
        );
        let Manifest::Index(index) = parse("r", "", body.as_bytes()).unwrap() else { panic!("expected an index") };
        assert_eq!(index.select_platform("r").unwrap().digest, amd);

        let only_arm = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            descriptor(OCI_MANIFEST, &arm, Some(("linux", "arm64")))
        );
        let Manifest::Index(index) = parse("r", OCI_INDEX, only_arm.as_bytes()).unwrap() else {
            panic!("expected an index")
        };
        let err = index.select_platform("r").unwrap_err().to_string();
        assert!(err.contains("linux/amd64") && err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let config = Digest::of(b"c");
        let layer = Digest::of(b"l");
        let body = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
            descriptor("application/vnd.docker.container.image.v1+json", &config, None),
            descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer, None),
        );
        let Manifest::Image(m) = parse("r", DOCKER_MANIFEST, body.as_bytes()).unwrap() else {
            panic!("expected a manifest")
        };
        assert_eq!(m.config.digest, config);
        assert_eq!(m.layers[0].digest, layer);
        assert_eq!(layer_compression(&m.layers[0].media_type), Some(Compression::Gzip));
    }

    #[test]
    fn refuses_schema1() {
        let body = br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}"#;
        let err = parse("reg/x:1", DOCKER_SCHEMA1_SIGNED, body).unwrap_err();
        assert!(matches!(err, ImageError::Schema1 { .. }));
        assert!(err.to_string().contains("schema 1"), "{err}");
    }
}
