//! A registry client for one repository across the registry's configured hosts (see
//! [`super::hosts`]): each request goes to the hosts able to answer it, mirrors first, and
//! falls back to the next host when one fails; the last host's error is the pull's.

use super::credentials::Credentials;
use super::endpoint::Endpoint;
pub use super::endpoint::FetchedManifest;
use super::hosts::RegistryHost;
use super::manifest::Descriptor;
use super::{Digest, ImageError, PullProgress, Reference};
use tokio::io::AsyncSeekExt;

pub struct RegistryClient {
    registry: String,
    endpoints: Vec<Endpoint>,
}

#[derive(Clone, Copy)]
enum Capability {
    /// A tag to a manifest.
    Resolve,
    /// Content by digest.
    Pull,
}

impl RegistryClient {
    /// Hosts in the order to try them, each with the credentials to show it.
    pub fn with_hosts(
        reference: &Reference,
        hosts: Vec<(RegistryHost, Option<Credentials>)>,
    ) -> Result<RegistryClient, ImageError> {
        let count = hosts.len();
        let endpoints = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (host, credentials))| Endpoint::new(reference, host, credentials, i + 1 == count))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RegistryClient { registry: reference.registry.clone(), endpoints })
    }

    /// The hosts that may answer, in order.
    fn endpoints(&self, capability: Capability) -> Result<Vec<&Endpoint>, ImageError> {
        let able: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| match capability {
                Capability::Resolve => e.host.capabilities.resolve,
                Capability::Pull => e.host.capabilities.pull,
            })
            .collect();
        if able.is_empty() {
            let capability = match capability {
                Capability::Resolve => "resolve",
                Capability::Pull => "pull",
            };
            return Err(ImageError::NoRegistryHost { registry: self.registry.clone(), capability });
        }
        Ok(able)
    }

    fn falling_back(endpoint: &Endpoint, what: &str, error: &ImageError) {
        tracing::warn!(
            host = %endpoint.host.url,
            what,
            error = %crate::error_chain(error),
            "registry host failed; trying the next"
        );
    }

    /// A manifest by tag (hosts that may resolve) or by digest (hosts that may pull).
    pub async fn fetch_manifest(
        &self,
        manifest_ref: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, ImageError> {
        let capability = if expected.is_some() { Capability::Pull } else { Capability::Resolve };
        let endpoints = self.endpoints(capability)?;
        let (last, others) = endpoints.split_last().expect("endpoints() is never empty");
        for endpoint in others {
            match endpoint.fetch_manifest(manifest_ref, expected).await {
                Ok(fetched) => return Ok(fetched),
                Err(error) => Self::falling_back(endpoint, manifest_ref, &error),
            }
        }
        last.fetch_manifest(manifest_ref, expected).await
    }

    /// The image config blob, verified.
    pub async fn fetch_config(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let endpoints = self.endpoints(Capability::Pull)?;
        let (last, others) = endpoints.split_last().expect("endpoints() is never empty");
        for endpoint in others {
            match endpoint.fetch_config(descriptor).await {
                Ok(body) => return Ok(body),
                Err(error) => Self::falling_back(endpoint, descriptor.digest.as_str(), &error),
            }
        }
        last.fetch_config(descriptor).await
    }

    /// Stream a blob into `file`, verified and fsynced (see [`Endpoint::download_blob`]); a
    /// host that fails leaves the file emptied for the next.
    pub async fn download_blob(
        &self,
        descriptor: &Descriptor,
        file: &mut tokio::fs::File,
        path: &std::path::Path,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let endpoints = self.endpoints(Capability::Pull)?;
        let (last, others) = endpoints.split_last().expect("endpoints() is never empty");
        for endpoint in others {
            match endpoint.download_blob(descriptor, file, path, progress).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    Self::falling_back(endpoint, descriptor.digest.as_str(), &error);
                    file.set_len(0).await.map_err(ImageError::io("truncate", path))?;
                    file.seek(std::io::SeekFrom::Start(0)).await.map_err(ImageError::io("seek", path))?;
                }
            }
        }
        last.download_blob(descriptor, file, path, progress).await
    }
}
