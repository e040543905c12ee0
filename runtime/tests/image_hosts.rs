//! Registry hosts configured as containerd's `certs.d/<host>/hosts.toml`: a mirror served
//! first, fallback to the server when the mirror is down or lacks the image, a plain-HTTP
//! server under another name, HTTPS with a CA from hosts.toml or skip_verify, Docker's
//! legacy `ca.crt`/`client.cert`/`client.key` with a registry that requires client
//! certificates, and a malformed hosts.toml. Real docker-registry processes on loopback.
//! Needs root.

mod image_common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use image_common::{free_port, require_root, TarBuilder, TestRegistry};
use nodelet_runtime::image::{Digest, ImageError, ImageStore, NoProgress};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A name that resolves nowhere: only hosts.toml can make it pullable.
const NAMED: &str = "registry.invalid:5000";

/// A one-file layer saying `text`; returns the tar and its diff id.
fn layer_saying(text: &str) -> (Vec<u8>, Digest) {
    let tar = TarBuilder::new().file("origin.txt", text.as_bytes()).finish();
    let diff_id = Digest::of(&tar);
    (tar, diff_id)
}

/// Writes `<certs.d>/<host>/hosts.toml` (replacing any earlier one).
fn write_hosts(certs_d: &Path, host: &str, toml: &str) {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), toml).unwrap();
}

/// Pull `reference` into a fresh store configured with `certs_d`; the unpacked origin.txt.
async fn pull_origin(work: &Path, certs_d: &Path, reference: &str) -> Result<String, ImageError> {
    let root = tempfile::tempdir_in(work).unwrap();
    let store = ImageStore::open(root.path()).unwrap().with_registry_hosts_dir(certs_d);
    let image = store.pull(reference, &NoProgress).await?;
    let diff_id = image.config.rootfs().diff_ids()[0].clone();
    let hex = diff_id.strip_prefix("sha256:").unwrap();
    Ok(std::fs::read_to_string(root.path().join("layers/sha256").join(hex).join("origin.txt")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_first_then_the_server() {
    require_root();
    let upstream = TestRegistry::start();
    let mirror = TestRegistry::start();
    let (from_upstream, _) = layer_saying("upstream");
    let (from_mirror, _) = layer_saying("mirror");
    upstream.push_single_layer_image("team/app", &from_upstream).await;
    mirror.push_single_layer_image("team/app", &from_mirror).await;
    upstream.push_single_layer_image("team/only-upstream", &from_upstream).await;
    let work = tempfile::tempdir().unwrap();
    let certs_d = work.path().join("certs.d");
    let dead = free_port();

    // A plain-HTTP server under another name: no DNS, no HTTPS.
    write_hosts(&certs_d, NAMED, &format!("server = \"http://{}\"\n", upstream.addr));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap(), "upstream");

    // The mirror answers first.
    let with_mirror = |mirror: &str, capabilities: &str| {
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = {capabilities}\n",
            upstream.addr
        )
    };
    write_hosts(&certs_d, NAMED, &with_mirror(&mirror.addr, r#"["pull", "resolve"]"#));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap(), "mirror");

    // A mirror that is down, then one without the image: the server answers.
    write_hosts(&certs_d, NAMED, &with_mirror(&format!("127.0.0.1:{dead}"), r#"["pull", "resolve"]"#));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap(), "upstream");
    write_hosts(&certs_d, NAMED, &with_mirror(&mirror.addr, r#"["pull", "resolve"]"#));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/only-upstream:1")).await.unwrap(), "upstream");

    // A pull-only mirror is not asked for tags: the server resolves the tag to its manifest,
    // whose content the mirror does not have, so the server serves it all.
    write_hosts(&certs_d, NAMED, &with_mirror(&mirror.addr, r#"["pull"]"#));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap(), "upstream");

    // The _default directory applies to registries without their own.
    std::fs::remove_dir_all(certs_d.join(NAMED)).unwrap();
    write_hosts(&certs_d, "_default", &with_mirror(&mirror.addr, r#"["pull", "resolve"]"#));
    assert_eq!(pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap(), "mirror");

    // A malformed file fails the pull, naming the file and the field.
    write_hosts(&certs_d, NAMED, &format!("server = \"http://{}\"\nskip_verify = \"yes\"\n", upstream.addr));
    let error = pull_origin(work.path(), &certs_d, &format!("{NAMED}/team/app:1")).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ImageError::HostsConfig { .. }), "{error:?}");
    let file = certs_d.join(NAMED).join("hosts.toml");
    assert!(text.contains(&file.display().to_string()) && text.contains("skip_verify"), "{text}");
}

/// A CA and certificates it signs, PEM-encoded.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// (certificate, key) for 127.0.0.1 as a server, or as a client.
    fn issue(&self, server: bool) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, if server { "127.0.0.1" } else { "nodelet" });
        if server {
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

fn chain(error: &ImageError) -> String {
    nodelet_runtime::error_chain(error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_from_hosts_toml_or_skip_verify() {
    require_root();
    let pki = Pki::new("nodelet test registry CA");
    let (cert, key) = pki.issue(true);
    let registry = TestRegistry::start_with(&[("server.crt", cert), ("server.key", key), ("ca.crt", pki.ca_pem())]);
    let (tar, _) = layer_saying("over tls");
    registry.push_single_layer_image("secure/app", &tar).await;
    let work = tempfile::tempdir().unwrap();
    let certs_d = work.path().join("certs.d");
    let reference = format!("{}/secure/app:1", registry.addr);

    // A relative ca is read from the host's directory.
    std::fs::create_dir_all(certs_d.join(&registry.addr)).unwrap();
    std::fs::write(certs_d.join(&registry.addr).join("test-ca.pem"), pki.ca_pem()).unwrap();
    let https = format!("server = \"https://{}\"\n", registry.addr);
    write_hosts(&certs_d, &registry.addr, &format!("{https}ca = \"test-ca.pem\"\n"));
    assert_eq!(pull_origin(work.path(), &certs_d, &reference).await.unwrap(), "over tls");

    // Without the CA the certificate is refused.
    write_hosts(&certs_d, &registry.addr, &https);
    let error = pull_origin(work.path(), &certs_d, &reference).await.unwrap_err();
    assert!(chain(&error).to_lowercase().contains("certificate"), "{}", chain(&error));

    // skip_verify accepts it.
    write_hosts(&certs_d, &registry.addr, &format!("{https}skip_verify = true\n"));
    assert_eq!(pull_origin(work.path(), &certs_d, &reference).await.unwrap(), "over tls");

    // A ca file that does not exist is named.
    write_hosts(&certs_d, &registry.addr, &format!("{https}ca = \"/nonexistent/ca.pem\"\n"));
    let error = pull_origin(work.path(), &certs_d, &reference).await.unwrap_err();
    assert!(chain(&error).contains("/nonexistent/ca.pem"), "{}", chain(&error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_certificate_files_with_client_certificates() {
    require_root();
    let server_pki = Pki::new("nodelet test server CA");
    let client_pki = Pki::new("nodelet test client CA");
    let (cert, key) = server_pki.issue(true);
    let (client_cert, client_key) = client_pki.issue(false);
    let registry = TestRegistry::start_with(&[
        ("server.crt", cert),
        ("server.key", key),
        ("ca.crt", server_pki.ca_pem()),
        ("client-ca.crt", client_pki.ca_pem()),
        ("client.cert", client_cert.clone()),
        ("client.key", client_key.clone()),
    ]);
    let (tar, _) = layer_saying("mutual tls");
    registry.push_single_layer_image("secure/app", &tar).await;
    let work = tempfile::tempdir().unwrap();
    let certs_d = work.path().join("certs.d");
    let reference = format!("{}/secure/app:1", registry.addr);

    // Docker's files, no hosts.toml: https://<host> with ca.crt, but no client certificate.
    let host_dir = certs_d.join(&registry.addr);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("ca.crt"), server_pki.ca_pem()).unwrap();
    let error = pull_origin(work.path(), &certs_d, &reference).await.unwrap_err();
    assert!(matches!(error, ImageError::RegistryUnreachable { .. } | ImageError::Http { .. }), "{error:?}");

    // With client.cert and client.key the registry lets us in.
    std::fs::write(host_dir.join("client.cert"), &client_cert).unwrap();
    std::fs::write(host_dir.join("client.key"), &client_key).unwrap();
    assert_eq!(pull_origin(work.path(), &certs_d, &reference).await.unwrap(), "mutual tls");

    // The same from hosts.toml, which then takes precedence over the legacy files.
    std::fs::write(host_dir.join("pair.pem"), format!("{client_cert}{client_key}")).unwrap();
    write_hosts(
        &certs_d,
        &registry.addr,
        &format!("server = \"https://{}\"\nca = \"ca.crt\"\nclient = \"pair.pem\"\n", registry.addr),
    );
    assert_eq!(pull_origin(work.path(), &certs_d, &reference).await.unwrap(), "mutual tls");
}

/// Durations past what Go (or a Duration) holds fail the pull with the file and the field
/// named, never a panic; nothing is asked of the network.
#[tokio::test]
async fn out_of_range_dial_timeouts_are_config_errors() {
    let work = tempfile::tempdir().unwrap();
    let certs_d = work.path().join("certs.d");
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let cases = [
        ("dial_timeout = \"99999999999999999999h\"", "dial_timeout"),
        ("[host.\"http://127.0.0.1:1\"]\ndial_timeout = \"2562048h\"", "host.\"http://127.0.0.1:1\".dial_timeout"),
        ("dial_timeout = \"2562047h2562047h\"", "dial_timeout"),
    ];
    for (toml, field) in cases {
        write_hosts(&certs_d, &host, toml);
        let error = pull_origin(work.path(), &certs_d, &format!("{host}/nodelet/app:1")).await.unwrap_err();
        let hosts_toml = certs_d.join(&host).join("hosts.toml");
        assert!(
            matches!(&error, ImageError::HostsConfig { path, field: named, .. } if *path == hosts_toml && named == field),
            "{toml:?}: {error:?}"
        );
        assert!(error.to_string().contains("out of range"), "{error}");
    }
}
