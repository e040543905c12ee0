//! A registry client for one repository (OCI distribution spec, pull side only): manifests,
//! blobs streamed with their digests verified, anonymous bearer tokens.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::auth::{fetch_token, parse_challenge};
use super::manifest::{self, Descriptor};
use super::reference::is_loopback_host;
use super::{Digest, ImageError, PullProgress, Reference};

/// Manifests are small JSON documents; anything bigger is not a manifest.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs carry history; generous but bounded.
const CONFIG_LIMIT: u64 = 32 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Per read, not per request: big layers may take long, a stalled connection may not.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RegistryClient {
    http: reqwest::Client,
    reference: Reference,
    base: String,
    token: Mutex<Option<String>>,
}

/// A manifest body with its computed digest.
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub content_type: String,
    pub digest: Digest,
}

impl RegistryClient {
    pub fn new(reference: &Reference) -> Result<RegistryClient, ImageError> {
        let base = reference.api_base();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("nodelet/", env!("CARGO_PKG_VERSION")))
            // Blob requests are often redirected to storage; never follow one to plain HTTP
            // off the machine.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let url = attempt.url().clone();
                let secure = url.scheme() == "https"
                    || url
                        .host_str()
                        .is_some_and(|h| is_loopback_host(h.trim_start_matches('[').trim_end_matches(']')));
                if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else if secure {
                    attempt.follow()
                } else {
                    attempt.error(format!("refusing redirect to plain http: {url}"))
                }
            }))
            .build()
            .map_err(|source| ImageError::Http { url: base.clone(), source })?;
        Ok(RegistryClient { http, reference: reference.clone(), base, token: Mutex::new(None) })
    }

    fn url(&self, kind: &str, target: &str) -> String {
        format!("{}/v2/{}/{}/{}", self.base, self.reference.repository, kind, target)
    }

    fn request_error(&self, url: &str, source: reqwest::Error) -> ImageError {
        if source.is_connect() || source.is_timeout() {
            ImageError::RegistryUnreachable { registry: self.reference.registry.clone(), url: url.to_string(), source }
        } else {
            ImageError::Http { url: url.to_string(), source }
        }
    }

    /// GET with the cached token; on 401 with a Bearer challenge, fetch a token and retry once.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        let mut fetched_token = false;
        loop {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = self.token.lock().await.as_ref() {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            let response = request.send().await.map_err(|e| self.request_error(url, e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let denied = ImageError::Unauthorized {
                reference: self.reference.to_string(),
                url: url.to_string(),
                status: response.status().as_u16(),
            };
            if fetched_token {
                return Err(denied);
            }
            let header =
                response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if header.is_empty() {
                return Err(denied);
            }
            let challenge = parse_challenge(&header)
                .ok_or_else(|| ImageError::UnsupportedChallenge { url: url.to_string(), challenge: header.clone() })?;
            let default_scope = format!("repository:{}:pull", self.reference.repository);
            let token = fetch_token(&self.http, &challenge, &default_scope).await?;
            tracing::debug!(realm = %challenge.realm, "got anonymous registry token");
            *self.token.lock().await = Some(token);
            fetched_token = true;
        }
    }

    /// Read a whole (small) body, refusing more than `limit` bytes.
    async fn read_limited(
        &self,
        url: &str,
        mut response: reqwest::Response,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let too_large = || ImageError::TooLarge { what, url: url.to_string(), limit };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(url, e))? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn status_error(&self, url: &str, response: reqwest::Response) -> ImageError {
        let status = response.status().as_u16();
        let message = response.text().await.unwrap_or_default().chars().take(300).collect::<String>();
        ImageError::RegistryStatus { url: url.to_string(), status, message: message.trim().to_string() }
    }

    /// Fetch a manifest or index by tag or digest. When fetched by digest the body must hash
    /// to it; when by tag, a `Docker-Content-Digest` header must agree with the body.
    pub async fn fetch_manifest(
        &self,
        manifest_ref: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, ImageError> {
        let url = self.url("manifests", manifest_ref);
        let response = self.get(&url, Some(manifest::ACCEPT)).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let shown = if manifest_ref.starts_with("sha256:") {
                format!("{}@{}", self.reference.name(), manifest_ref)
            } else {
                format!("{}:{}", self.reference.name(), manifest_ref)
            };
            return Err(ImageError::ManifestUnknown { reference: shown, status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(self.status_error(&url, response).await);
        }
        let content_type = header_text(&response, CONTENT_TYPE.as_str());
        let advertised = header_text(&response, "docker-content-digest");
        let body = self.read_limited(&url, response, "manifest", MANIFEST_LIMIT).await?;
        let digest = Digest::of(&body);
        let mismatch = |expected: String| ImageError::DigestMismatch {
            what: "manifest",
            url: url.clone(),
            expected,
            actual: digest.to_string(),
        };
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(mismatch(expected.to_string()));
            }
        } else if advertised.starts_with("sha256:") && advertised != digest.as_str() {
            return Err(mismatch(advertised));
        }
        Ok(FetchedManifest { body, content_type, digest })
    }

    async fn blob_response(&self, digest: &Digest) -> Result<(String, reqwest::Response), ImageError> {
        let url = self.url("blobs", digest.as_str());
        let response = self.get(&url, None).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ImageError::BlobUnknown { digest: digest.to_string(), url, status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(self.status_error(&url, response).await);
        }
        Ok((url, response))
    }

    /// Fetch the image config blob into memory, verified.
    pub async fn fetch_config(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let (url, response) = self.blob_response(&descriptor.digest).await?;
        let body = self.read_limited(&url, response, "image config", CONFIG_LIMIT).await?;
        let actual = Digest::of(&body);
        if actual != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                what: "image config",
                url,
                expected: descriptor.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    /// Stream a blob into `file` (at `path`, for error messages), checking its size and
    /// digest, then fsync. The caller renames the file into place only after this succeeds.
    pub async fn download_blob(
        &self,
        descriptor: &Descriptor,
        file: &mut tokio::fs::File,
        path: &std::path::Path,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let digest = &descriptor.digest;
        let (url, mut response) = self.blob_response(digest).await?;
        let total = descriptor.size;
        let size_mismatch =
            |actual| ImageError::SizeMismatch { digest: digest.to_string(), url: url.clone(), expected: total, actual };
        let mut hasher = Sha256::new();
        let mut downloaded: u64 = 0;
        progress.layer(digest.as_str(), 0, total);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(&url, e))? {
            downloaded += chunk.len() as u64;
            if downloaded > total {
                return Err(size_mismatch(downloaded));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(ImageError::io("write", path))?;
            progress.layer(digest.as_str(), downloaded, total);
        }
        if downloaded != total {
            return Err(size_mismatch(downloaded));
        }
        let actual = Digest::from_hasher(hasher);
        if actual != *digest {
            return Err(ImageError::DigestMismatch {
                what: "blob",
                url,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        file.flush().await.map_err(ImageError::io("write", path))?;
        file.sync_all().await.map_err(ImageError::io("fsync", path))?;
        Ok(())
    }
}

fn header_text(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}
