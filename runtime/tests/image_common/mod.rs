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
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        require_root();
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = free_port();
        run(Command::new(script("registry.sh")).arg("start").arg(dir.path()).arg(port.to_string()));
        TestRegistry { addr: format!("127.0.0.1:{port}"), dir }
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
        format!("http://{}{}", self.addr, path)
    }

    /// Upload a blob (monolithic upload); returns its digest.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let http = reqwest::Client::new();
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
        let response = reqwest::Client::new()
            .put(self.url(&format!("/v2/{repository}/manifests/{tag}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(response.status().as_u16(), 201, "put manifest: {:?}", response.text().await);
        Digest::of(body)
    }

    /// Push a single-layer image whose layer is `tar` (uncompressed); returns its reference.
    pub async fn push_single_layer_image(&self, repository: &str, tar: &[u8]) -> String {
        let diff_id = Digest::of(tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, tar).unwrap();
        let layer = gz.finish().unwrap();
        let layer_digest = self.push_blob(repository, &layer).await;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config_digest = self.push_blob(repository, config.as_bytes()).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        self.push_manifest(repository, "1", "application/vnd.oci.image.manifest.v1+json", manifest.as_bytes()).await;
        format!("{}/{repository}:1", self.addr)
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

    pub fn finish(&mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().expect("finish tar")
    }
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
