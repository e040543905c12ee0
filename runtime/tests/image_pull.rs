//! Pulling the test images from a real local registry, layer sharing, re-pulls, lookups,
//! overlay mounts, gzip, zstd and uncompressed layers in one image (device nodes left out),
//! the errors for missing images and unreachable registries, and the wait for the store lock
//! off the async threads. Needs root.

mod image_common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use image_common::{
    free_port, is_mounted, mount_count, require_root, work_leftovers, Compression, MountGuard, TarBuilder, TestRegistry,
};
use nodelet_runtime::image::{ImageError, ImageStore, NoProgress, PullProgress};

/// Records every progress call.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64, u64)>>);

impl PullProgress for Recorder {
    fn layer(&self, digest: &str, downloaded: u64, total: u64) {
        self.0.lock().unwrap().push((digest.to_string(), downloaded, total));
    }
}

impl Recorder {
    /// Layers that received bytes (a call with 0 < downloaded < total or a first call at 0).
    fn downloaded_layers(&self) -> Vec<String> {
        let calls = self.0.lock().unwrap();
        let mut layers: Vec<String> =
            calls.iter().filter(|(_, downloaded, total)| *downloaded < *total).map(|(d, _, _)| d.clone()).collect();
        layers.dedup();
        layers
    }
}

fn layer_dirs(root: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(root.join("layers/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().ino())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_share_repull_mount_unmount() {
    require_root();
    let registry = TestRegistry::start();
    let pushed = registry.push_test_images();
    let busybox_ref = format!("{}/nodelet/busybox:1", registry.addr);
    let web_ref = format!("{}/nodelet/web:1", registry.addr);
    assert!(pushed.contains_key(&busybox_ref) && pushed.contains_key(&web_ref), "{pushed:?}");

    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(work.path().join("images")).unwrap();

    // busybox: one layer, Docker schema 2 manifest.
    let progress = Recorder::default();
    let busybox = store.pull(&busybox_ref, &progress).await.unwrap();
    assert_eq!(busybox.reference, busybox_ref);
    assert_eq!(busybox.digest, pushed[&busybox_ref]);
    assert_eq!(busybox.repo_digest, format!("{}/nodelet/busybox@{}", registry.addr, busybox.digest));
    assert!(busybox.size > 100_000, "busybox size {}", busybox.size);
    let cmd = busybox.config.config().as_ref().unwrap().cmd().clone().unwrap();
    assert_eq!(cmd, vec!["sh".to_string()]);
    assert_eq!(progress.downloaded_layers().len(), 1);
    let after_busybox = layer_dirs(store.root());
    assert_eq!(after_busybox.len(), 1);

    // web: busybox's layer + one more, OCI manifest; the base layer is reused, not fetched.
    let progress = Recorder::default();
    let web = store.pull(&web_ref, &progress).await.unwrap();
    assert_eq!(web.digest, pushed[&web_ref]);
    assert_eq!(progress.downloaded_layers().len(), 1, "only web's own layer is downloaded");
    let after_web = layer_dirs(store.root());
    assert_eq!(after_web.len(), 2, "the busybox layer is shared");
    for (layer, inode) in &after_busybox {
        assert_eq!(after_web.get(layer), Some(inode), "shared layer untouched");
    }
    let config = web.config.config().as_ref().unwrap();
    assert_eq!(config.cmd().clone().unwrap(), ["httpd", "-f", "-p", "8080", "-h", "/www"].map(String::from).to_vec());
    assert!(config.exposed_ports().clone().unwrap().contains(&"8080/tcp".to_string()));

    // Re-pull: nothing downloaded, nothing unpacked again, no leftovers.
    let progress = Recorder::default();
    let again = store.pull(&web_ref, &progress).await.unwrap();
    assert_eq!(again.digest, web.digest);
    assert!(progress.downloaded_layers().is_empty());
    assert_eq!(layer_dirs(store.root()), after_web);
    assert_eq!(work_leftovers(store.root()), Vec::<String>::new());

    // Lookups.
    for key in [web_ref.clone(), web.digest.clone(), web.repo_digest.clone()] {
        assert_eq!(store.get(&key).unwrap().map(|i| i.digest), Some(web.digest.clone()), "get {key}");
    }
    assert!(store.get(&format!("{}/nodelet/web:2", registry.addr)).unwrap().is_none());
    assert!(store.get("busybox").unwrap().is_none());
    let mut listed: Vec<String> = store.list().unwrap().into_iter().map(|i| i.reference).collect();
    listed.sort();
    assert_eq!(listed, vec![busybox_ref.clone(), web_ref.clone()]);
    // The index alone says the same of each image.
    let mut summaries: Vec<(String, String, String, u64)> =
        store.summaries().unwrap().into_iter().map(|s| (s.reference, s.digest, s.repo_digest, s.size)).collect();
    let mut full: Vec<(String, String, String, u64)> =
        store.list().unwrap().into_iter().map(|i| (i.reference, i.digest, i.repo_digest, i.size)).collect();
    summaries.sort();
    full.sort();
    assert_eq!(summaries, full);
    // A new store on the same root sees the same images.
    let reopened = ImageStore::open(store.root()).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 2);

    // Mount web's rootfs.
    let container = work.path().join("container");
    std::fs::create_dir(&container).unwrap();
    let _guard = MountGuard(container.clone());
    let rootfs = store.mount_rootfs(&web, &container).unwrap();
    assert_eq!(rootfs, container.join("rootfs"));
    assert!(is_mounted(&rootfs));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(std::fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(std::fs::read_to_string(rootfs.join("www/index.html")).unwrap(), "hello from nodelet\n");
    assert!(rootfs.join("etc/passwd").is_file());
    assert!(!rootfs.join("etc/motd").exists(), "web's whiteout hides /etc/motd");
    let motd_whiteout = store
        .root()
        .join("layers/sha256")
        .join(after_web.keys().find(|k| !after_busybox.contains_key(*k)).unwrap())
        .join("etc/motd");
    let meta = std::fs::symlink_metadata(&motd_whiteout).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0, "overlay whiteout in the layer dir");

    // Idempotent mount.
    assert_eq!(store.mount_rootfs(&web, &container).unwrap(), rootfs);
    assert_eq!(mount_count(&rootfs), 1);

    // The image really runs: busybox from the mounted rootfs.
    let out = std::process::Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "cat /www/index.html; ls /etc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("hello from nodelet") && out.contains("passwd") && !out.contains("motd"), "{out}");

    // Writes go to the upper dir, never to the shared layers.
    std::fs::write(rootfs.join("www/new.txt"), "x").unwrap();
    assert!(container.join("upper/www/new.txt").is_file());
    assert_eq!(layer_dirs(store.root()), after_web);

    store.unmount_rootfs(&container).unwrap();
    assert!(!is_mounted(&container.join("rootfs")));
    for dir in ["rootfs", "upper", "work"] {
        assert!(!container.join(dir).exists(), "{dir} removed");
    }
    store.unmount_rootfs(&container).unwrap();
}

#[tokio::test]
async fn missing_image_and_unreachable_registry() {
    require_root();
    let registry = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(work.path()).unwrap();

    let missing = format!("{}/nope:1", registry.addr);
    let err = store.pull(&missing, &NoProgress).await.unwrap_err();
    assert!(matches!(err, ImageError::ManifestUnknown { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("manifest unknown: {missing} (404)"));

    let port = free_port();
    let err = store.pull(&format!("127.0.0.1:{port}/nodelet/busybox:1"), &NoProgress).await.unwrap_err();
    assert!(matches!(err, ImageError::RegistryUnreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("unreachable") && text.contains(&format!("127.0.0.1:{port}")), "{text}");

    let err = store.pull("Not A Reference", &NoProgress).await.unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err:?}");
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn index_resolves_to_linux_amd64_and_digests_pin() {
    require_root();
    let registry = TestRegistry::start();
    let pushed = registry.push_test_images();
    let web_ref = format!("{}/nodelet/web:1", registry.addr);
    let busybox_ref = format!("{}/nodelet/busybox:1", registry.addr);
    let web_digest = &pushed[&web_ref];
    let busybox_digest = &pushed[&busybox_ref];

    // An index in web's repository whose arm64 entry is busybox's manifest (copied into this
    // repository with its config, so the registry accepts the index) and amd64 entry is web's.
    let http = reqwest::Client::new();
    let get = |path: String, accept: &'static str| {
        let request = http.get(registry.url(&path)).header("accept", accept);
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    };
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let web_manifest = get(format!("/v2/nodelet/web/manifests/{web_digest}"), OCI_MANIFEST).await;
    let busybox_manifest = get(format!("/v2/nodelet/busybox/manifests/{busybox_digest}"), DOCKER_MANIFEST).await;
    let busybox_config_digest = serde_json::from_slice::<serde_json::Value>(&busybox_manifest).unwrap()["config"]
        ["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let busybox_config = get(format!("/v2/nodelet/busybox/blobs/{busybox_config_digest}"), "*/*").await;
    registry.push_blob("nodelet/web", &busybox_config).await;
    registry.push_manifest("nodelet/web", "decoy", DOCKER_MANIFEST, &busybox_manifest).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{busybox_digest}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{web_digest}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        busybox_manifest.len(),
        web_manifest.len()
    );
    registry.push_manifest("nodelet/web", "multi", "application/vnd.oci.image.index.v1+json", index.as_bytes()).await;

    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(work.path()).unwrap();
    let image = store.pull(&format!("{}/nodelet/web:multi", registry.addr), &NoProgress).await.unwrap();
    assert_eq!(&image.digest, web_digest, "the index resolved to the amd64 manifest");

    // By digest: pinned, reference normalized with the digest.
    let pinned = format!("{}/nodelet/busybox@{busybox_digest}", registry.addr);
    let image = store.pull(&pinned, &NoProgress).await.unwrap();
    assert_eq!(&image.digest, busybox_digest);
    assert_eq!(image.reference, pinned);
    assert_eq!(store.get(&pinned).unwrap().unwrap().digest, *busybox_digest);

    // A digest that does not exist.
    let absent = format!("{}/nodelet/busybox@sha256:{}", registry.addr, "0".repeat(64));
    let err = store.pull(&absent, &NoProgress).await.unwrap_err();
    assert!(matches!(err, ImageError::ManifestUnknown { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_zstd_and_uncompressed_layers() {
    require_root();
    let registry = TestRegistry::start();
    let gzip = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/motd", b"hidden by the zstd layer\n")
        .file_with("bin-tool", b"#!/bin/sh\n", 0o4755, 0, 0)
        .dir("data", 0o755)
        .finish();
    let zstd = TarBuilder::new()
        .dir("data", 0o750)
        .file("data/zstd.txt", b"compressed with zstd\n")
        .hard_link("data/zstd-link.txt", "data/zstd.txt")
        .symlink("latest", "data/zstd.txt")
        .file("etc/.wh.motd", b"")
        .finish();
    // Device nodes, which containerd accepts: the pull succeeds and leaves them out.
    let plain = TarBuilder::new()
        .file("plain.txt", b"not compressed\n")
        .dir("dev", 0o755)
        .device("dev/sda", tar::EntryType::Block, 8, 0)
        .device("dev/mem", tar::EntryType::Char, 1, 1)
        .finish();
    let reference = registry
        .push_layers_image(
            "nodelet/mixed",
            "1",
            &[(&gzip, Compression::Gzip), (&zstd, Compression::Zstd), (&plain, Compression::None)],
        )
        .await;
    // The registry serves the zstd layer as such.
    let (zstd_blob, media_type) = Compression::Zstd.apply(&zstd);
    assert!(zstd_blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) && media_type.ends_with("+zstd"));

    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(work.path().join("images")).unwrap();
    let image = store.pull(&reference, &NoProgress).await.unwrap();
    assert_eq!(layer_dirs(store.root()).len(), 3);

    // The zstd layer's own directory, keyed by the diff id of its uncompressed tar.
    let zstd_dir = store.root().join("layers/sha256").join(nodelet_runtime::image::Digest::of(&zstd).hex());
    assert_eq!(std::fs::read_to_string(zstd_dir.join("data/zstd.txt")).unwrap(), "compressed with zstd\n");
    let (file, link) = (
        std::fs::metadata(zstd_dir.join("data/zstd.txt")).unwrap(),
        std::fs::metadata(zstd_dir.join("data/zstd-link.txt")).unwrap(),
    );
    assert_eq!(file.ino(), link.ino(), "hard link kept");
    assert_eq!(std::fs::read_link(zstd_dir.join("latest")).unwrap(), Path::new("data/zstd.txt"));
    assert_eq!(std::fs::metadata(zstd_dir.join("data")).unwrap().mode() & 0o7777, 0o750);

    // The three layers merged.
    let container = work.path().join("container");
    std::fs::create_dir(&container).unwrap();
    let _guard = MountGuard(container.clone());
    let rootfs = store.mount_rootfs(&image, &container).unwrap();
    assert_eq!(std::fs::read_to_string(rootfs.join("latest")).unwrap(), "compressed with zstd\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("plain.txt")).unwrap(), "not compressed\n");
    assert!(!rootfs.join("etc/motd").exists(), "the zstd layer's whiteout applies");
    assert_eq!(std::fs::metadata(rootfs.join("bin-tool")).unwrap().mode() & 0o7777, 0o4755, "setuid kept");
    assert!(rootfs.join("dev").is_dir());
    assert!(std::fs::symlink_metadata(rootfs.join("dev/sda")).is_err(), "no block device from the image");
    assert!(std::fs::symlink_metadata(rootfs.join("dev/mem")).is_err(), "no character device from the image");
    store.unmount_rootfs(&container).unwrap();
}

/// Whether a process waits for an flock on the file with inode `ino` (/proc/locks lists
/// waiters with `->`).
fn flock_waiter(ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    let field = format!(":{ino} ");
    locks.lines().any(|line| line.contains("->") && line.contains("FLOCK") && line.contains(&field))
}

/// The store lock is taken off the async threads: with another process holding it, a pull
/// on a one-thread runtime waits for it while the runtime keeps running other tasks.
#[tokio::test(flavor = "current_thread")]
async fn a_pull_waits_for_the_store_lock_without_blocking_the_runtime() {
    require_root();
    let registry = TestRegistry::start();
    registry.push_test_images();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("images");
    let store = std::sync::Arc::new(ImageStore::open(&root).unwrap());
    let lock_file = root.join("lock");
    let ino = std::fs::metadata(&lock_file).unwrap().ino();

    // Another holder of the lock (a flock on its own open file, as another process's), on a
    // thread of its own; it lets go when told, or after 10 s.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let file = std::fs::File::open(&lock_file).unwrap();
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
        held_tx.send(()).unwrap();
        let _ = released.recv_timeout(std::time::Duration::from_secs(10));
        drop(flock);
    });
    held_rx.recv().unwrap();

    let reference = format!("{}/nodelet/busybox:1", registry.addr);
    let pulling = tokio::spawn({
        let store = store.clone();
        async move { store.pull(&reference, &NoProgress).await }
    });
    // Tick until the pull waits for the lock, then some more: no tick may be held up.
    let started = std::time::Instant::now();
    let mut ticks_while_waiting = 0;
    while ticks_while_waiting < 10 {
        let tick = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let took = tick.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "the runtime's only thread was blocked for {took:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the pull never waited for the lock");
        assert!(!pulling.is_finished(), "the pull cannot finish while the lock is held elsewhere");
        if flock_waiter(ino) {
            ticks_while_waiting += 1;
        }
    }
    release.send(()).unwrap();
    holder.join().unwrap();
    let image = pulling.await.unwrap().expect("the pull completes once the lock is free");
    assert_eq!(store.get(&image.reference).unwrap().map(|i| i.digest), Some(image.digest));
    assert!(work_leftovers(store.root()).is_empty(), "no pins left once indexed");
}
