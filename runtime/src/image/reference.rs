//! Image references, parsed and normalized with Docker's rules: `busybox` is
//! `docker.io/library/busybox:latest`, the first path component is a registry only when it
//! looks like a host (has a `.` or a `:`, or is `localhost`), and `name@sha256:...` pins a
//! manifest digest.

use std::fmt;
use std::net::IpAddr;

use super::{Digest, ImageError};

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// Path inside the registry, e.g. `library/busybox`, `nodelet/web`.
    pub repository: String,
    /// `None` only when the reference pins a digest without a tag.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ImageError> {
        let invalid =
            |reason: &str| ImageError::InvalidReference { reference: text.to_string(), reason: reason.to_string() };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.len() > 4096 {
            return Err(invalid("too long"));
        }

        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (text, None),
        };
        // A tag follows the last ':' unless that ':' belongs to a registry port (then a '/'
        // comes after it).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if looks_like_registry(first) => {
                validate_registry(first).map_err(|r| invalid(&r))?;
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| invalid(&r))?;

        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `name@digest`: the Kubernetes image ID for a pulled manifest.
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// Base URL of the registry API. Plain HTTP only for loopback registries, as Docker allows
    /// by default; everything else is HTTPS.
    pub fn api_base(&self) -> String {
        let host = if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry };
        let scheme = if is_loopback_host(host) { "http" } else { "https" };
        format!("{scheme}://{host}")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

/// Split `host[:port]` (IPv6 hosts in brackets) into host and port text.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, after)) => (ip, after.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

/// 127.0.0.0/8, ::1 and `localhost`: registries that may be spoken to over plain HTTP.
pub fn is_loopback_host(host_and_port: &str) -> bool {
    let (host, _) = split_host_port(host_and_port);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = split_host_port(registry);
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("bad registry port in {registry:?}"));
        }
    }
    if registry.starts_with('[') {
        let closed = registry.contains(']');
        return match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) if closed => Ok(()),
            _ => Err(format!("bad IPv6 registry address {registry:?}")),
        };
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("bad registry host {registry:?}"))
    }
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err("empty path component".into());
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository name must be lowercase".into());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!("bad path component {component:?}"));
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let separator = &component[start..i];
            let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
            if !ok {
                return Err(format!("bad separator {separator:?} in {component:?}"));
            }
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("bad tag {tag:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn docker_normalization() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("127.0.0.1:5000/web:1"), "127.0.0.1:5000/web:1");
        assert_eq!(norm("localhost/a/b"), "localhost/a/b:latest");
        assert_eq!(norm("quay.io/a/b-c__d.e:v1.2-rc"), "quay.io/a/b-c__d.e:v1.2-rc");
        assert_eq!(norm("[::1]:5000/x:y"), "[::1]:5000/x:y");
        let hex = "a".repeat(64);
        assert_eq!(norm(&format!("busybox@sha256:{hex}")), format!("docker.io/library/busybox@sha256:{hex}"));
        assert_eq!(norm(&format!("127.0.0.1:5000/web:1@sha256:{hex}")), format!("127.0.0.1:5000/web:1@sha256:{hex}"));
    }

    #[test]
    fn manifest_ref_and_ids() {
        let r = Reference::parse("127.0.0.1:5000/nodelet/web:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "nodelet/web");
        assert_eq!(r.manifest_ref(), "1");
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        let d = Digest::of(b"x");
        assert_eq!(r.with_digest(&d), format!("127.0.0.1:5000/nodelet/web@{d}"));
        let pinned = Reference::parse(&format!("127.0.0.1:5000/nodelet/web@{d}")).unwrap();
        assert_eq!(pinned.manifest_ref(), d.to_string());
        assert_eq!(pinned.tag, None);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert_eq!(Reference::parse("busybox").unwrap().api_base(), "https://registry-1.docker.io");
        assert_eq!(Reference::parse("10.0.0.1:5000/a").unwrap().api_base(), "https://10.0.0.1:5000");
        assert_eq!(Reference::parse("127.9.0.1:5000/a").unwrap().api_base(), "http://127.9.0.1:5000");
        assert_eq!(Reference::parse("[::1]:5000/a").unwrap().api_base(), "http://[::1]:5000");
        assert_eq!(Reference::parse("localhost:5000/a").unwrap().api_base(), "http://localhost:5000");
        assert_eq!(Reference::parse("127.0.0.1.evil.com/a").unwrap().api_base(), "https://127.0.0.1.evil.com");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in
            ["", "Busybox", "a//b", "a/-b", "busybox:", "busybox:-x", "busybox@sha256:12", "host:99999/a", "a/b:c/d"]
        {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
