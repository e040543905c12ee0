//! Registry credentials from a Docker `config.json` (`{"auths": {"<host>": {"auth":
//! "<base64 user:pass>"}}}`, or `username`/`password` fields), the format of
//! `~/.docker/config.json` and of Kubernetes `kubernetes.io/dockerconfigjson` secrets.
//!
//! Keys match images as kubelet's credential keyring matches them: `host[:port][/path]`,
//! where each dot-separated part of the host may be a glob (`*.example.com`), the port must be
//! equal, and the path is a prefix of the repository; all matching entries are returned,
//! the most specific key first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::reference::DOCKER_HUB;
use super::ImageError;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

// Never print the password (errors and logs may show the struct).
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic ...` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The `auths` of a Docker config file, keyed by `host[:port][/path]`.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

impl DockerConfig {
    pub fn load(path: &Path) -> Result<DockerConfig, ImageError> {
        let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
        DockerConfig::parse(&bytes)
            .map_err(|reason| ImageError::DockerConfig { path: path.display().to_string(), reason })
    }

    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, String> {
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| format!("not a docker config.json: {e}"))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in file.auths {
            let credentials = match (&entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => decode_auth(auth).map_err(|e| format!("auths.{key}: {e}"))?,
                (_, Some(username), Some(password)) => Credentials { username, password },
                // An entry without credentials (e.g. only "identitytoken") is nothing we can use.
                _ => continue,
            };
            auths.insert(normalize_key(&key), credentials);
        }
        Ok(DockerConfig { auths })
    }

    /// Credentials for exactly this key (`127.0.0.1:5000`, `docker.io`), if any.
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_key(registry))
    }

    /// Every entry whose key matches `registry/repository`, the most specific first (reverse
    /// lexical order of the keys, as kubelet's keyring sorts them: `host/a/b` before `host/a`
    /// before `host`).
    pub fn matching(&self, registry: &str, repository: &str) -> Vec<&Credentials> {
        let registry = normalize_key(registry);
        self.auths.iter().rev().filter(|(key, _)| key_matches(key, &registry, repository)).map(|(_, c)| c).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }
}

/// Does key `host[:port][/path]` match the image `registry/repository`?
fn key_matches(key: &str, registry: &str, repository: &str) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (glob_host, glob_port) = split_port(key_host);
    let (host, port) = split_port(registry);
    if glob_port != port {
        return false;
    }
    let glob_parts: Vec<&str> = glob_host.split('.').collect();
    let parts: Vec<&str> = host.split('.').collect();
    if glob_parts.len() != parts.len() || !glob_parts.iter().zip(&parts).all(|(glob, part)| glob_match(glob, part)) {
        return false;
    }
    // A path prefix, as kubelet compares them (`host/ns` also matches `host/ns-other`).
    repository.starts_with(key_path.trim_end_matches('/'))
}

/// "host:port" -> ("host", Some("port")); IPv6 literals keep their brackets.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') && port.chars().all(|c| c.is_ascii_digit()) => (name, Some(port)),
        _ => (host, None),
    }
}

/// Shell-style `*` and `?` within one host part.
fn glob_match(glob: &str, text: &str) -> bool {
    fn go(glob: &[u8], text: &[u8]) -> bool {
        match (glob.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&glob[1..], text) || (!text.is_empty() && go(glob, &text[1..])),
            (Some(b'?'), Some(_)) => go(&glob[1..], &text[1..]),
            (Some(g), Some(t)) if g == t => go(&glob[1..], &text[1..]),
            _ => false,
        }
    }
    go(glob.as_bytes(), text.as_bytes())
}

fn decode_auth(auth: &str) -> Result<Credentials, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("auth is not base64: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
    let (username, password) = text.split_once(':').ok_or_else(|| "auth is not user:password".to_string())?;
    Ok(Credentials { username: username.to_string(), password: password.to_string() })
}

/// Docker writes keys as `https://index.docker.io/v1/`, `registry.example:5000` or
/// `https://registry.example/ns`: drop the scheme and a trailing slash, lowercase the host,
/// and fold Docker Hub's aliases (whose `/v1/` is an API path, not a repository) together.
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    let host = host.to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | DOCKER_HUB => DOCKER_HUB.to_string(),
        _ if path.is_empty() => host,
        _ => format!("{host}/{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries() {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "ghcr.io": {"identitytoken": "x"}
            }}"#,
        )
        .unwrap();
        let alice = config.credentials_for("127.0.0.1:5000").unwrap();
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.password, "s3cr3t:with:colons");
        assert_eq!(alice.basic_header(), "Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z");
        assert_eq!(config.credentials_for("docker.io").unwrap().username, "bob");
        assert!(config.credentials_for("ghcr.io").is_none());
        assert!(!format!("{alice:?}").contains("s3cr3t"), "Debug must not show the password");
    }

    #[test]
    fn matches_keys_as_kubelets_keyring_does() {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "registry.example:5000": {"username": "host", "password": "1"},
                "https://registry.example:5000/team/": {"username": "team", "password": "2"},
                "*.corp.example": {"username": "glob", "password": "3"},
                "registry.example": {"username": "no-port", "password": "4"}
            }}"#,
        )
        .unwrap();
        let users = |registry: &str, repository: &str| -> Vec<String> {
            config.matching(registry, repository).into_iter().map(|c| c.username.clone()).collect()
        };
        assert_eq!(users("registry.example:5000", "team/app"), ["team", "host"], "most specific first");
        assert_eq!(users("registry.example:5000", "other/app"), ["host"]);
        assert_eq!(users("registry.example", "team/app"), ["no-port"], "ports must be equal");
        assert_eq!(users("eu.corp.example", "x"), ["glob"]);
        assert!(users("a.eu.corp.example", "x").is_empty(), "a glob matches one host part");
        assert!(users("elsewhere.example", "x").is_empty());
        let hub = DockerConfig::parse(br#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}}"#).unwrap();
        assert_eq!(hub.matching("docker.io", "library/busybox").len(), 1);
    }

    #[test]
    fn rejects_bad_auth() {
        assert!(DockerConfig::parse(br#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap_err().contains("auths.h"));
        assert!(DockerConfig::parse(br#"{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}"#).is_err());
        assert!(DockerConfig::parse(b"42").is_err());
        assert!(DockerConfig::parse(b"{}").unwrap().credentials_for("h").is_none());
    }
}
