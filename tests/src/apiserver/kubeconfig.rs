//! Kubeconfig files for the server's users, with the CA (and client credentials) embedded.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

/// How a kubeconfig's user authenticates.
pub enum Credentials<'a> {
    BearerToken(&'a str),
    ClientCertificate { certificate_pem: &'a str, key_pem: &'a str },
}

/// Write a kubeconfig for `user` at `path` (mode 0600).
pub fn write(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
) -> anyhow::Result<()> {
    let user_entry = match credentials {
        Credentials::BearerToken(token) => json!({"token": token}),
        Credentials::ClientCertificate { certificate_pem, key_pem } => json!({
            "client-certificate-data": STANDARD.encode(certificate_pem),
            "client-key-data": STANDARD.encode(key_pem),
        }),
    };
    let context_name = format!("{user}@nodelet-test");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nodelet-test", "cluster": {
            "server": server_url,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context_name, "context": {"cluster": "nodelet-test", "user": user, "namespace": "default"}}],
        "current-context": context_name,
        "preferences": {},
    });
    let text = serde_yaml::to_string(&config).context("serializing a kubeconfig")?;
    write_private(path, text.as_bytes())
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content).with_context(|| format!("writing {}", path.display()))
}
