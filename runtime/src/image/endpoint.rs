//! One registry host (the registry itself or a mirror, see [`super::hosts`]) for one
//! repository, pull side of the OCI distribution spec: manifests, blobs streamed with their
//! digests verified and resumed after a dropped connection, bearer tokens and basic auth,
//! retries of transient failures, the host's TLS settings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::auth::{fetch_token, parse_challenge};
use super::credentials::Credentials;
use super::hosts::RegistryHost;
use super::manifest::{self, Descriptor};
use super::reference::is_loopback_host;
use super::retry::{backoff, is_transient, retry_after, MAX_ATTEMPTS};
use super::{Digest, ImageError, PullProgress, Reference};

/// Manifests are small JSON documents; anything bigger is not a manifest.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs carry history; generous but bounded.
const CONFIG_LIMIT: u64 = 32 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Per read, not per request: big layers may take long, a stalled connection may not.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Range requests after dropped connections, per blob.
const MAX_RESUMES: u32 = 5;

pub struct Endpoint {
    http: reqwest::Client,
    reference: Reference,
    /// `https://host/v2` (see [`RegistryHost::api_base`]).
    base: String,
    /// `?ns=<registry>` on a mirror's requests, as containerd sends it.
    query: String,
    pub host: RegistryHost,
    token: Mutex<Option<String>>,
    credentials: Option<Credentials>,
    /// The registry asked for Basic auth: send the credentials with every request.
    basic: AtomicBool,
    /// Attempts per request: a host with another behind it gives up at once and lets the
    /// next one answer.
    attempts: u32,
}

/// A manifest body with its computed digest.
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub content_type: String,
    pub digest: Digest,
}

impl Endpoint {
    /// `credentials` are used for Basic challenges and for token requests; without them the
    /// host is asked anonymously. `last`: no other host to fall back to, so retry here.
    pub fn new(
        reference: &Reference,
        host: RegistryHost,
        credentials: Option<Credentials>,
        last: bool,
    ) -> Result<Endpoint, ImageError> {
        let base = host.api_base();
        let http = http_client(&host)?;
        let query = if host.mirror { format!("?ns={}", reference.registry) } else { String::new() };
        Ok(Endpoint {
            http,
            reference: reference.clone(),
            base,
            query,
            host,
            token: Mutex::new(None),
            credentials,
            basic: AtomicBool::new(false),
            attempts: if last { MAX_ATTEMPTS } else { 1 },
        })
    }

    fn url(&self, kind: &str, target: &str) -> String {
        format!("{}/{}/{}/{}{}", self.base, self.reference.repository, kind, target, self.query)
    }

    fn request_error(&self, url: &str, source: reqwest::Error) -> ImageError {
        if source.is_connect() || source.is_timeout() {
            ImageError::RegistryUnreachable { registry: self.reference.registry.clone(), url: url.to_string(), source }
        } else {
            ImageError::Http { url: url.to_string(), source }
        }
    }

    /// GET with the cached authorization. Transient failures (connect errors, 429, 5xx) are
    /// retried with backoff, honouring Retry-After; a 401 is answered once (a Bearer token,
    /// or Basic credentials) and the request repeated. `range_from` asks for the bytes from
    /// that offset on (a resumed download).
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, ImageError> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(from) = range_from {
                request = request.header(RANGE, format!("bytes={from}-"));
            }
            if let Some(authorization) = self.authorization().await {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if attempt < self.attempts && (e.is_connect() || e.is_timeout()) => {
                    let wait = backoff(attempt);
                    tracing::warn!(url, error = %e, attempt, ?wait, "registry request failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(self.request_error(url, e)),
            };
            let status = response.status();
            if is_transient(status) && attempt < self.attempts {
                let wait = retry_after(response.headers()).unwrap_or_else(|| backoff(attempt));
                tracing::warn!(url, status = status.as_u16(), attempt, ?wait, "registry busy; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let denied = ImageError::Unauthorized {
                reference: self.reference.to_string(),
                url: url.to_string(),
                status: status.as_u16(),
                hint: if self.credentials.is_some() {
                    "; the registry refused the configured credentials"
                } else {
                    "; no credentials are configured for this registry"
                },
            };
            if authenticated {
                return Err(denied);
            }
            let header =
                response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if header.is_empty() {
                return Err(denied);
            }
            self.authenticate(url, &header).await.map_err(|e| match e {
                None => denied,
                Some(e) => e,
            })?;
            authenticated = true;
            // A fresh budget of attempts for the authenticated request.
            attempt = 0;
        }
    }

    async fn authorization(&self) -> Option<String> {
        if let Some(token) = self.token.lock().await.as_ref() {
            return Some(format!("Bearer {token}"));
        }
        if self.basic.load(Ordering::Relaxed) {
            return self.credentials.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// Answer a challenge: fetch a bearer token, or switch to Basic auth. `Err(None)` when
    /// the challenge needs credentials we do not have.
    async fn authenticate(&self, url: &str, header: &str) -> Result<(), Option<ImageError>> {
        let scheme = header.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("basic") {
            if self.credentials.is_none() {
                return Err(None);
            }
            tracing::debug!(url, "registry asks for basic auth");
            self.basic.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let challenge = parse_challenge(header)
            .ok_or_else(|| ImageError::UnsupportedChallenge { url: url.to_string(), challenge: header.to_string() })?;
        let default_scope = format!("repository:{}:pull", self.reference.repository);
        let token = fetch_token(&self.http, &challenge, &default_scope, self.credentials.as_ref()).await?;
        tracing::debug!(realm = %challenge.realm, with_credentials = self.credentials.is_some(), "got registry token");
        *self.token.lock().await = Some(token);
        Ok(())
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
        let response = self.get(&url, Some(manifest::ACCEPT), None).await?;
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

    async fn blob_response(
        &self,
        digest: &Digest,
        range_from: Option<u64>,
    ) -> Result<(String, reqwest::Response), ImageError> {
        let url = self.url("blobs", digest.as_str());
        let response = self.get(&url, None, range_from).await?;
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
        let (url, response) = self.blob_response(&descriptor.digest, None).await?;
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
    /// digest, then fsync. A connection dropped mid-way is resumed with a Range request for
    /// the rest (or restarted when the registry ignores the Range). The caller renames the
    /// file into place only after this succeeds.
    pub async fn download_blob(
        &self,
        descriptor: &Descriptor,
        file: &mut tokio::fs::File,
        path: &std::path::Path,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let digest = &descriptor.digest;
        let total = descriptor.size;
        // The hasher sees every byte of the file in order (resumed parts are appended, a
        // restart resets both), so its digest is the whole file's.
        let mut hasher = Sha256::new();
        let mut downloaded: u64 = 0;
        let mut resumes = 0;
        progress.layer(digest.as_str(), 0, total);
        let url = loop {
            let range_from = (downloaded > 0).then_some(downloaded);
            let (url, mut response) = self.blob_response(digest, range_from).await?;
            if downloaded > 0 && !resumed_at(&response, downloaded) {
                tracing::info!(%url, downloaded, "registry ignored the range request; downloading from the start");
                file.set_len(0).await.map_err(ImageError::io("truncate", path))?;
                file.seek(std::io::SeekFrom::Start(0)).await.map_err(ImageError::io("seek", path))?;
                hasher = Sha256::new();
                downloaded = 0;
            }
            let dropped = loop {
                let chunk = match response.chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                };
                downloaded += chunk.len() as u64;
                if downloaded > total {
                    return Err(ImageError::SizeMismatch {
                        digest: digest.to_string(),
                        url,
                        expected: total,
                        actual: downloaded,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(ImageError::io("write", path))?;
                progress.layer(digest.as_str(), downloaded, total);
            };
            match dropped {
                None => break url,
                Some(e) if resumes < MAX_RESUMES && downloaded < total => {
                    resumes += 1;
                    tracing::warn!(%url, downloaded, total, error = %e, "blob download interrupted; resuming");
                    tokio::time::sleep(backoff(resumes)).await;
                }
                Some(e) => return Err(self.request_error(&url, e)),
            }
        };
        if downloaded != total {
            return Err(ImageError::SizeMismatch {
                digest: digest.to_string(),
                url,
                expected: total,
                actual: downloaded,
            });
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

/// A client with the host's TLS settings and headers. Blob requests are often redirected to
/// storage: a redirect to plain HTTP is followed only on loopback or to the configured
/// plain-HTTP host itself.
fn http_client(host: &RegistryHost) -> Result<reqwest::Client, ImageError> {
    let url = host.url.to_string();
    let plain_host = (host.url.scheme() == "http").then(|| host.url.host_str().unwrap_or_default().to_string());
    let mut builder = reqwest::Client::builder()
        .connect_timeout(host.dial_timeout.unwrap_or(CONNECT_TIMEOUT))
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("nodelet/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let target = attempt.url().clone();
            let host = target.host_str().unwrap_or_default();
            let secure = target.scheme() == "https"
                || is_loopback_host(host.trim_start_matches('[').trim_end_matches(']'))
                || plain_host.as_deref() == Some(host);
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if secure {
                attempt.follow()
            } else {
                attempt.error(format!("refusing redirect to plain http: {target}"))
            }
        }));
    let tls_error = |source| ImageError::HostsTls { url: url.clone(), origin: host.origin.clone(), source };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ImageError::HostsFile {
            url: url.clone(),
            origin: host.origin.clone(),
            path: path.to_path_buf(),
            source,
        })
    };
    for ca in &host.ca {
        for certificate in reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(tls_error)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(client) = &host.client {
        let mut pem = read(&client.cert)?;
        if let Some(key) = &client.key {
            pem.push(b'\n');
            pem.extend(read(key)?);
        }
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(tls_error)?);
    }
    if host.skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &host.headers {
        // Checked when hosts.toml was read.
        if let (Ok(name), Ok(value)) =
            (reqwest::header::HeaderName::from_bytes(name.as_bytes()), reqwest::header::HeaderValue::from_str(value))
        {
            headers.append(name, value);
        }
    }
    builder.default_headers(headers).build().map_err(tls_error)
}

/// A 206 whose Content-Range starts where we stopped.
fn resumed_at(response: &reqwest::Response, offset: u64) -> bool {
    response.status() == StatusCode::PARTIAL_CONTENT
        && header_text(response, CONTENT_RANGE.as_str())
            .strip_prefix("bytes ")
            .and_then(|range| range.split('-').next())
            .and_then(|start| start.parse::<u64>().ok())
            == Some(offset)
}

fn header_text(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}
