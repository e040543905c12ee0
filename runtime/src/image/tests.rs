//! Removal, pruning and garbage collection on a store filled by hand (no registry).

use super::store::LayerRecord;
use super::*;

/// Write an image's blobs and unpacked layers (named by `layers`) and index it.
fn add_image(store: &ImageStore, reference: &str, layers: &[&str]) -> ImageRecord {
    let layout = &store.layout;
    let mut records = Vec::new();
    for name in layers {
        let digest = Digest::of(format!("blob {name}").as_bytes());
        let diff_id = Digest::of(format!("diff {name}").as_bytes());
        layout.write_blob(&digest, format!("blob {name}").as_bytes()).unwrap();
        std::fs::create_dir_all(layout.layer_dir(&diff_id).join("etc")).unwrap();
        std::fs::write(layout.layer_dir(&diff_id).join("etc/name"), name).unwrap();
        records.push(LayerRecord {
            digest,
            diff_id,
            size: 10,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        });
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Env":["R={reference}"]}}}}"#
    );
    let config_digest = Digest::of(config.as_bytes());
    layout.write_blob(&config_digest, config.as_bytes()).unwrap();
    let manifest = format!("manifest of {reference}");
    let digest = Digest::of(manifest.as_bytes());
    layout.write_blob(&digest, manifest.as_bytes()).unwrap();
    let parsed = Reference::parse(reference).unwrap();
    let record = ImageRecord {
        reference: parsed.to_string(),
        repo_digest: parsed.with_digest(&digest),
        digest,
        config_digest,
        size: 10 * layers.len() as u64,
        layers: records,
    };
    let mut index = layout.load_index().unwrap();
    index.images.insert(record.reference.clone(), record.clone());
    layout.save_index(&index).unwrap();
    record
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn remove_keeps_shared_content_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let base = add_image(&store, "127.0.0.1:5000/base:1", &["base"]);
    let web = add_image(&store, "127.0.0.1:5000/web:1", &["base", "web"]);
    // 2 manifests + 2 configs + 2 layer blobs; 2 unpacked layers.
    assert_eq!((count(&store.layout.blobs_dir()), count(&store.layout.layers_dir())), (6, 2));

    let removed = store.remove("127.0.0.1:5000/web:1").unwrap();
    assert_eq!(removed.images, vec![web.reference.clone()]);
    assert_eq!(removed.collected.blobs, 3, "web's manifest, config and own layer blob");
    assert_eq!(removed.collected.layers, 1);
    assert!(store.layout.layer_dir(&base.layers[0].diff_id).join("etc/name").is_file(), "shared layer kept");
    assert!(!store.layout.layer_dir(&web.layers[1].diff_id).exists());
    assert!(store.get("127.0.0.1:5000/base:1").unwrap().is_some());
    assert!(store.get("127.0.0.1:5000/web:1").unwrap().is_none());

    // Unknown: nothing removed, no error.
    assert!(store.remove("127.0.0.1:5000/nope:1").unwrap().images.is_empty());

    // By image ID prefix (as `ls` shows it): everything goes.
    let removed = store.remove(&base.config_digest.hex()[..12]).unwrap();
    assert_eq!(removed.images, vec![base.reference]);
    assert_eq!((count(&store.layout.blobs_dir()), count(&store.layout.layers_dir())), (0, 0));
    assert_eq!(count(store.layout.work_dir()), 0, "removed layers do not linger in tmp/");
}

#[test]
fn remove_by_manifest_digest_removes_every_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let one = add_image(&store, "127.0.0.1:5000/app:1", &["a"]);
    // The same manifest under a second tag.
    let mut index = store.layout.load_index().unwrap();
    let mut latest = one.clone();
    latest.reference = "127.0.0.1:5000/app:latest".into();
    index.images.insert(latest.reference.clone(), latest);
    store.layout.save_index(&index).unwrap();

    let removed = store.remove(one.digest.as_str()).unwrap();
    assert_eq!(removed.images.len(), 2);
    assert!(store.list().unwrap().is_empty());
    assert!(store.remove("sha256:").is_err(), "a malformed reference is an error");
}

#[test]
fn prune_without_mounts_removes_everything_and_gc_spares_busy_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    add_image(&store, "127.0.0.1:5000/a:1", &["a"]);
    add_image(&store, "127.0.0.1:5000/b:1", &["b", "c"]);
    assert!(store.layers_in_use().unwrap().is_empty(), "nothing of a fresh temp store is mounted");
    let removed = store.prune().unwrap();
    assert_eq!(removed.images.len(), 2);
    assert_eq!((count(&store.layout.blobs_dir()), count(&store.layout.layers_dir())), (0, 0));

    // An unindexed blob that a pull still works on survives a collection; once the pull is
    // gone, it is collected.
    let digest = Digest::of(b"in flight");
    store.layout.write_blob(&digest, b"in flight").unwrap();
    let pin = store.inflight.pin(vec![digest.clone()]);
    assert_eq!(store.collect_garbage().unwrap().blobs, 0);
    assert!(store.layout.has_blob(&digest));
    drop(pin);
    assert_eq!(store.collect_garbage().unwrap(), Collected { blobs: 1, layers: 0, bytes: 9 });
}

#[test]
fn pins_of_another_store_on_the_root_are_spared() {
    // Two stores on one root behave as two processes: the lock and the work directories are
    // flocks, which belong to open files, not to processes.
    let dir = tempfile::tempdir().unwrap();
    let pulling = ImageStore::open(dir.path()).unwrap();
    let collecting = ImageStore::open(dir.path()).unwrap();
    let blob = Digest::of(b"being pulled");
    let diff_id = Digest::of(b"being unpacked");
    pulling.layout.write_blob(&blob, b"being pulled").unwrap();
    std::fs::create_dir_all(pulling.layout.layer_dir(&diff_id)).unwrap();

    let pin = pulling.inflight.pin(vec![blob.clone(), diff_id.clone()]);
    pulling.layout.publish_busy(|| pulling.inflight.busy()).unwrap();
    assert_eq!(collecting.collect_garbage().unwrap(), Collected::default(), "pinned by the other store");
    assert!(pulling.layout.has_blob(&blob) && pulling.layout.layer_dir(&diff_id).is_dir());

    drop(pin);
    pulling.layout.publish_busy(|| pulling.inflight.busy()).unwrap();
    assert_eq!(collecting.collect_garbage().unwrap(), Collected { blobs: 1, layers: 1, bytes: 12 });

    // A store that is gone pins nothing, whatever its busy.json says.
    let again = pulling.inflight.pin(vec![blob.clone()]);
    pulling.layout.write_blob(&blob, b"being pulled").unwrap();
    pulling.layout.publish_busy(|| pulling.inflight.busy()).unwrap();
    drop(again);
    drop(pulling);
    assert_eq!(collecting.collect_garbage().unwrap().blobs, 1);
}

#[test]
fn opening_a_store_keeps_live_work_and_sweeps_dead_work() {
    let dir = tempfile::tempdir().unwrap();
    let first = ImageStore::open(dir.path()).unwrap();
    let download = first.layout.temp_path("download");
    std::fs::write(&download, b"half a layer").unwrap();
    std::fs::write(dir.path().join("tmp/loose-file"), b"from an old version").unwrap();

    let second = ImageStore::open(dir.path()).unwrap();
    assert!(download.is_file(), "another open store's download in progress is left alone");
    assert!(!dir.path().join("tmp/loose-file").exists());
    assert_ne!(first.layout.work_dir(), second.layout.work_dir());

    let first_work = first.layout.work_dir().to_path_buf();
    drop(first);
    let _third = ImageStore::open(dir.path()).unwrap();
    assert!(!first_work.exists(), "a closed store's work directory is swept");
    assert!(second.layout.work_dir().is_dir());
}
