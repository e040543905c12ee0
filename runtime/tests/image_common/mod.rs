//! Shared by the image integration tests: a registry started with tests/scripts/registry.sh
//! (stopped by Drop), the test images built by tests/scripts/build-test-images.sh, raw
//! pushes through the distribution API, tarball builders, and mount guards.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodelet_runtime::image::Digest;

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "image integration tests need root (overlay mounts, device nodes, chown); run them as root"
    );
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts").join(name)
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run script");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a free port").port()
}

/// A docker-registry on a random loopback port, in a temp dir; stopped on drop.
pub struct TestRegistry {
    pub addr: String,
    dir: tempfile::TempDir,
    scheme: &'static str,
    /// For the test's own pushes (over HTTPS: any certificate, the client's when required).
    http: reqwest::Client,
}

/// PEM files for an HTTPS registry (see tests/scripts/registry.sh): `server.crt`,
/// `server.key`, `ca.crt`, and for client-certificate auth `client-ca.crt`, `client.cert`,
/// `client.key`.
pub type TlsFiles<'a> = &'a [(&'a str, String)];

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(&[])
    }

    /// Serve HTTPS with these files (empty: plain HTTP).
    pub fn start_with(tls: TlsFiles) -> TestRegistry {
        require_root();
        let dir = tempfile::tempdir().expect("registry temp dir");
        let mut http = reqwest::Client::builder();
        if !tls.is_empty() {
            std::fs::create_dir(dir.path().join("tls")).unwrap();
            for (name, pem) in tls {
                std::fs::write(dir.path().join("tls").join(name), pem).unwrap();
            }
            http = http.danger_accept_invalid_certs(true);
            let pem = |name: &str| tls.iter().find(|(n, _)| *n == name).map(|(_, pem)| pem.clone());
            if let (Some(cert), Some(key)) = (pem("client.cert"), pem("client.key")) {
                http = http.identity(reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).unwrap());
            }
        }
        let port = free_port();
        run(Command::new(script("registry.sh")).arg("start").arg(dir.path()).arg(port.to_string()));
        let scheme = if tls.is_empty() { "http" } else { "https" };
        TestRegistry { addr: format!("127.0.0.1:{port}"), dir, scheme, http: http.build().unwrap() }
    }

    /// Build and push the test images; returns reference -> manifest digest as printed.
    pub fn push_test_images(&self) -> BTreeMap<String, String> {
        let out = run(Command::new(script("build-test-images.sh")).arg(&self.addr));
        out.lines()
            .filter_map(|line| line.strip_prefix("pushed "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(reference, digest)| (reference.to_string(), digest.trim().to_string()))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Upload a blob (monolithic upload); returns its digest.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let http = self.http.clone();
        let response =
            http.post(self.url(&format!("/v2/{repository}/blobs/uploads/"))).send().await.expect("start upload");
        assert_eq!(response.status().as_u16(), 202, "start upload");
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") { location } else { self.url(&location) };
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = http
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(response.status().as_u16(), 201, "finish upload: {:?}", response.text().await);
        digest
    }

    pub async fn push_manifest(&self, repository: &str, tag: &str, media_type: &str, body: &[u8]) -> Digest {
        let response = self
            .http
            .put(self.url(&format!("/v2/{repository}/manifests/{tag}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(response.status().as_u16(), 201, "put manifest: {:?}", response.text().await);
        Digest::of(body)
    }

    /// Push a single-layer image whose layer is `tar`, gzipped; returns its reference.
    pub async fn push_single_layer_image(&self, repository: &str, tar: &[u8]) -> String {
        self.push_layers_image(repository, "1", &[(tar, Compression::Gzip)]).await
    }

    /// Push an OCI image of these layers (bottom first), each compressed as asked with the
    /// matching media type; returns its reference.
    pub async fn push_layers_image(&self, repository: &str, tag: &str, layers: &[(&[u8], Compression)]) -> String {
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        for (tar, compression) in layers {
            diff_ids.push(format!("\"{}\"", Digest::of(tar)));
            let (blob, media_type) = compression.apply(tar);
            let digest = self.push_blob(repository, &blob).await;
            descriptors.push(format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{}}}"#, blob.len()));
        }
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let config_digest = self.push_blob(repository, config.as_bytes()).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            descriptors.join(",")
        );
        self.push_manifest(repository, tag, "application/vnd.oci.image.manifest.v1+json", manifest.as_bytes()).await;
        format!("{}/{repository}:{tag}", self.addr)
    }
}

/// How a test layer is stored in the registry.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The blob and its OCI media type.
    pub fn apply(self, tar: &[u8]) -> (Vec<u8>, &'static str) {
        match self {
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut gz, tar).unwrap();
                (gz.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => (zstd::encode_all(tar, 3).unwrap(), "application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let status = Command::new(script("registry.sh")).arg("stop").arg(self.dir.path()).output();
        if !matches!(&status, Ok(out) if out.status.success()) {
            eprintln!("stopping the test registry failed: {status:?}");
        }
    }
}

/// Builds tarballs entry by entry with raw names, so hostile paths can be written too.
#[derive(Default)]
pub struct TarBuilder {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder { builder: Some(tar::Builder::new(Vec::new())) }
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names must fit the old header");
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header
    }

    fn append(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.builder.as_mut().unwrap().append(&header, data).expect("append tar entry");
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let header = Self::header(name, tar::EntryType::Directory, 0, mode);
        self.append(header, &[])
    }

    pub fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.file_with(name, content, 0o644, 0, 0)
    }

    pub fn file_with(&mut self, name: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut header = Self::header(name, tar::EntryType::Regular, content.len() as u64, mode);
        header.set_uid(uid);
        header.set_gid(gid);
        self.append(header, content)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut header = Self::header(name, tar::EntryType::Symlink, 0, 0o777);
        header.set_link_name_literal(target).unwrap();
        self.append(header, &[])
    }

    pub fn hard_link(&mut self, name: &str, target: &str) -> &mut Self {
        let mut header = Self::header(name, tar::EntryType::Link, 0, 0o644);
        header.set_link_name_literal(target).unwrap();
        self.append(header, &[])
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        let header = Self::header(name, tar::EntryType::Fifo, 0, 0o600);
        self.append(header, &[])
    }

    /// PAX records for the next entry (e.g. `SCHILY.xattr.<name>`).
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder.as_mut().unwrap().append_pax_extensions(records.iter().copied()).expect("append pax header");
        self
    }

    pub fn device(&mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(name, kind, 0, 0o666);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.append(header, &[])
    }

    /// A header of any type claiming `size` bytes of data, followed by only `data`: for
    /// metadata entries bigger than the stream.
    pub fn claimed(&mut self, name: &str, kind: u8, size: u64, data: &[u8]) -> &mut Self {
        let mut header = Self::header(name, tar::EntryType::new(kind), size, 0o644);
        header.set_cksum();
        let builder = self.builder.as_mut().unwrap();
        builder.get_mut().extend_from_slice(header.as_bytes());
        builder.get_mut().extend_from_slice(data);
        self
    }

    /// An entry with a v7 header (no ustar or GNU magic) of type `kind`, sized by `data`.
    pub fn v7_claimed(&mut self, name: &str, kind: u8, data: &[u8]) -> &mut Self {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        self.builder.as_mut().unwrap().append(&header, data).expect("append tar entry");
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().expect("finish tar")
    }
}

/// What the store's work directories (`<root>/tmp/<pid>-<random>/`) hold: partial downloads
/// and unpacks, and pins; empty once no pull is running.
pub fn work_leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(root.join("tmp")).unwrap() {
        let dir = dir.unwrap().path();
        assert!(dir.is_dir(), "only work directories under tmp/: {}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            found.push(entry.unwrap().path().display().to_string());
        }
    }
    found
}

/// Whether something is mounted at `path` (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_string_lossy().to_string();
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| *m == wanted).count() > 0
}

pub fn mount_count(path: &Path) -> usize {
    let path = std::fs::canonicalize(path).unwrap();
    let wanted = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == wanted)
        .count()
}

/// Lazily unmounts `<dir>/rootfs` on drop, so a failing test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let rootfs = self.0.join("rootfs");
        while is_mounted(&rootfs) {
            if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}
