//! Registry credentials from a Docker `config.json` (`{"auths": {"<host>": {"auth":
//! "<base64 user:pass>"}}}`, or `username`/`password` fields), the format of
//! `~/.docker/config.json` and of Kubernetes `kubernetes.io/dockerconfigjson` secrets.

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

/// The `auths` of a Docker config file, keyed by registry host.
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

    /// Credentials for a registry host (`127.0.0.1:5000`, `docker.io`), if any.
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_key(registry))
    }
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
/// `https://registry.example/`: keep only the host, and fold Docker Hub's aliases together.
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => host,
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
    fn rejects_bad_auth() {
        assert!(DockerConfig::parse(br#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap_err().contains("auths.h"));
        assert!(DockerConfig::parse(br#"{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}"#).is_err());
        assert!(DockerConfig::parse(b"42").is_err());
        assert!(DockerConfig::parse(b"{}").unwrap().credentials_for("h").is_none());
    }
}
