//! The one error type of the image store: every variant names what failed (reference,
//! registry URL, digest, layer entry or path).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    #[error("registry {registry} unreachable at {url}")]
    RegistryUnreachable {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("manifest unknown: {reference} ({status})")]
    ManifestUnknown { reference: String, status: u16 },

    #[error("blob unknown: {digest} at {url} ({status})")]
    BlobUnknown { digest: String, url: String, status: u16 },

    #[error("registry answered {status} for {url}: {message}")]
    RegistryStatus { url: String, status: u16, message: String },

    #[error("access denied to {reference} at {url} ({status}){hint}")]
    Unauthorized { reference: String, url: String, status: u16, hint: &'static str },

    #[error("docker config {path}: {reason}")]
    DockerConfig { path: String, reason: String },

    #[error("registry hosts config {path}: {field}: {reason}")]
    HostsConfig { path: PathBuf, field: String, reason: String },

    #[error("registry host {url} (configured in {origin}): cannot read {path}")]
    HostsFile {
        url: String,
        origin: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("registry host {url} (configured in {origin}): bad TLS settings")]
    HostsTls {
        url: String,
        origin: PathBuf,
        #[source]
        source: reqwest::Error,
    },

    #[error("no configured host of registry {registry} may {capability} (see its hosts.toml capabilities)")]
    NoRegistryHost { registry: String, capability: &'static str },

    #[error("unsupported authentication challenge from {url}: {challenge:?}")]
    UnsupportedChallenge { url: String, challenge: String },

    #[error("token request to {url} failed: {reason}")]
    Token { url: String, reason: String },

    #[error(
        "image {reference} uses docker manifest schema 1, which is not supported; \
         re-push it with a current docker, buildah or skopeo"
    )]
    Schema1 { reference: String },

    #[error("unsupported media type {media_type:?} for {what} of {reference}")]
    UnsupportedMediaType { reference: String, what: &'static str, media_type: String },

    #[error("image {reference} has no {platform} manifest (available: {available})")]
    NoMatchingPlatform { reference: String, platform: &'static str, available: String },

    #[error("cannot parse {what} of {reference}")]
    Parse {
        reference: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("{what} from {url} is larger than {limit} bytes")]
    TooLarge { what: &'static str, url: String, limit: u64 },

    #[error("digest mismatch for {what} from {url}: expected {expected}, got {actual}")]
    DigestMismatch { what: &'static str, url: String, expected: String, actual: String },

    #[error("size mismatch for blob {digest} from {url}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: String, url: String, expected: u64, actual: u64 },

    #[error("layer {layer}: uncompressed content has digest {actual}, config says {expected}")]
    DiffIdMismatch { layer: String, expected: String, actual: String },

    #[error("image {reference}: config lists {diff_ids} diff ids for {layers} layers")]
    LayerCountMismatch { reference: String, diff_ids: usize, layers: usize },

    #[error("layer {layer}: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry { layer: String, entry: String, reason: String },

    #[error("layer {layer}: unsupported entry {entry:?}: {reason}")]
    UnsupportedEntry { layer: String, entry: String, reason: String },

    #[error("layer {layer}: cannot {action} entry {entry:?}")]
    Entry {
        layer: String,
        entry: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("layer {layer}: cannot read tar stream")]
    Tar {
        layer: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("corrupt image index {path}")]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("corrupt list of pinned digests {path}")]
    CorruptPins {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("image {reference} references layer {layer}, which is missing from the store")]
    MissingLayer { reference: String, layer: String },

    #[error("overlay mount options for {target} are {len} bytes, over the kernel's page limit")]
    MountOptionsTooLong { target: PathBuf, len: usize },

    #[error("cannot mount overlay at {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("background task for {what} failed")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `path`, for use with `map_err`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { action, path, source }
    }
}
