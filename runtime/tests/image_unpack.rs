//! Layer unpacking: hostile tarballs (traversal, escaping symlinks and hard links, metadata
//! headers claiming gigabytes) are refused with the entry named and nothing written outside
//! the layer dir (directly and through a pull); device nodes are skipped; whiteouts become overlayfs
//! ones and take effect in a mount; metadata (setuid, owners, xattrs, file capabilities) is
//! preserved. Needs root.

mod image_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use image_common::{require_root, MountGuard, TarBuilder, TestRegistry};
use nodelet_runtime::image::{overlay, unpack, ImageError, ImageStore, NoProgress};

/// A sandbox: `layer/` to unpack into, `outside/` with a canary that must stay untouched.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("layer")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/canary"), "original").unwrap();
        Sandbox { dir }
    }

    fn layer(&self) -> PathBuf {
        self.dir.path().join("layer")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Nothing changed outside the layer dir.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["layer", "outside"]);
        let outside: Vec<String> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(outside, ["canary"]);
        assert_eq!(std::fs::read_to_string(self.outside().join("canary")).unwrap(), "original");
        assert_eq!(std::fs::metadata(self.outside().join("canary")).unwrap().nlink(), 1);
    }
}

fn expect_unsafe(tar: Vec<u8>, sandbox: &Sandbox, entry: &str) {
    let err = unpack::unpack_tar(tar.as_slice(), &sandbox.layer(), "test-layer").unwrap_err();
    match &err {
        ImageError::UnsafeEntry { entry: named, layer, .. } => {
            assert_eq!(named, entry);
            assert_eq!(layer, "test-layer");
        }
        other => panic!("expected an unsafe entry error for {entry}, got {other:?}"),
    }
    assert!(err.to_string().contains(entry), "{err}");
    sandbox.assert_outside_untouched();
}

#[test]
fn hostile_layers_are_refused_and_harmless() {
    require_root();

    let s = Sandbox::new();
    expect_unsafe(TarBuilder::new().file("../escape", b"x").finish(), &s, "../escape");

    let s = Sandbox::new();
    expect_unsafe(TarBuilder::new().file("a/../../escape", b"x").finish(), &s, "a/../../escape");

    let s = Sandbox::new();
    let absolute = format!("{}/pwned", s.outside().display());
    expect_unsafe(TarBuilder::new().file(&absolute, b"x").finish(), &s, &absolute);

    // A symlink to the outside (absolute), then a write through it.
    let s = Sandbox::new();
    let tar = TarBuilder::new().symlink("evil", &s.outside().to_string_lossy()).file("evil/pwned", b"x").finish();
    expect_unsafe(tar, &s, "evil/pwned");

    // The same with a relative symlink climbing out, nested.
    let s = Sandbox::new();
    let tar = TarBuilder::new().dir("a", 0o755).symlink("a/up", "../../outside").file("a/up/pwned", b"x").finish();
    expect_unsafe(tar, &s, "a/up/pwned");

    // Directories created through an escaping symlink.
    let s = Sandbox::new();
    let tar = TarBuilder::new().symlink("evil", "../outside").dir("evil/newdir", 0o755).finish();
    expect_unsafe(tar, &s, "evil/newdir");

    // Hard links to files outside, directly and through a symlink.
    let s = Sandbox::new();
    expect_unsafe(TarBuilder::new().hard_link("hl", "../outside/canary").finish(), &s, "hl");
    let s = Sandbox::new();
    let canary = format!("{}/canary", s.outside().display());
    expect_unsafe(TarBuilder::new().hard_link("hl", &canary).finish(), &s, "hl");
    let s = Sandbox::new();
    let tar = TarBuilder::new().symlink("out", &s.outside().to_string_lossy()).hard_link("hl", "out/canary").finish();
    expect_unsafe(tar, &s, "hl");

    // A whiteout through an escaping symlink.
    let s = Sandbox::new();
    let tar = TarBuilder::new().symlink("out", "../outside").file("out/.wh.canary", b"").finish();
    expect_unsafe(tar, &s, "out/.wh.canary");

    // Device nodes are left out (as containerd does in a user namespace), the rest of the
    // layer unpacked: a disk or a host character device never lands in the store. One
    // replacing an earlier entry of the layer still removes it.
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .device("disk", tar::EntryType::Block, 8, 0)
        .dir("dev", 0o755)
        .file("dev/mem", b"replaced")
        .device("dev/mem", tar::EntryType::Char, 1, 1)
        .fifo("dev/pipe")
        .file("after", b"still unpacked")
        .finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    assert!(std::fs::symlink_metadata(s.layer().join("disk")).is_err(), "no block device");
    assert!(std::fs::symlink_metadata(s.layer().join("dev/mem")).is_err(), "no character device");
    assert!(std::fs::symlink_metadata(s.layer().join("dev/pipe")).unwrap().file_type().is_fifo(), "FIFOs kept");
    assert_eq!(std::fs::read_to_string(s.layer().join("after")).unwrap(), "still unpacked");
    s.assert_outside_untouched();
    // A 0:0 character device is an overlayfs whiteout: kept as one.
    let s = Sandbox::new();
    let tar = TarBuilder::new().device("gone", tar::EntryType::Char, 0, 0).finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    let meta = std::fs::symlink_metadata(s.layer().join("gone")).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0);

    // Metadata entries claiming gigabytes fail at their header, before anything is read
    // into memory, naming the entry.
    for (kind, what) in [(b'L', "GNU long name"), (b'K', "GNU long link name"), (b'x', "PAX extended header")] {
        let s = Sandbox::new();
        let tar = TarBuilder::new().claimed("././@LongLink", kind, 4 << 30, &[b'a'; 4096]).finish();
        let err = unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap_err();
        assert!(matches!(&err, ImageError::UnsafeEntry { entry, .. } if entry == "././@LongLink"), "{err:?}");
        assert!(err.to_string().contains(what) && err.to_string().contains("4294967296"), "{err}");
        s.assert_outside_untouched();
    }

    // tar takes a v7 `x` (no ustar or GNU magic) for an ordinary file: the `size` in its data
    // applies to nothing, and the long name after the next file is a real header that tar
    // would read whole. Refused at that header, never read.
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .v7_claimed("v7pax", b'x', b"13 size=1536\n")
        .file("empty", b"")
        .claimed("././@LongLink", b'L', 4 << 30, &[b'a'; 4096])
        .finish();
    let err = unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap_err();
    assert!(matches!(&err, ImageError::UnsafeEntry { entry, .. } if entry == "././@LongLink"), "{err:?}");
    assert!(err.to_string().contains("GNU long name"), "{err}");
    s.assert_outside_untouched();

    // A file entry replacing a symlink to the outside replaces the symlink itself: allowed,
    // and the target is untouched.
    let s = Sandbox::new();
    let canary = format!("{}/canary", s.outside().display());
    let tar = TarBuilder::new().symlink("link", &canary).file("link", b"inside").finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    assert!(std::fs::symlink_metadata(s.layer().join("link")).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(s.layer().join("link")).unwrap(), "inside");
    s.assert_outside_untouched();

    // Symlinks inside the layer are followed for parents, as Docker does.
    let s = Sandbox::new();
    let tar = TarBuilder::new().dir("real", 0o755).symlink("alias", "real").file("alias/f", b"ok").finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    assert_eq!(std::fs::read_to_string(s.layer().join("real/f")).unwrap(), "ok");
    s.assert_outside_untouched();
}

#[test]
fn metadata_is_preserved() {
    require_root();
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .dir("bin", 0o751)
        .file_with("bin/su", b"#!/bin/sh\n", 0o4755, 1000, 1001)
        .hard_link("bin/su-again", "bin/su")
        .symlink("bin/sh", "busybox")
        .fifo("bin/pipe")
        .dir("tmp", 0o1777)
        .finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    let layer = s.layer();
    let su = std::fs::metadata(layer.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((su.uid(), su.gid()), (1000, 1001));
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(su.nlink(), 2);
    assert_eq!(std::fs::metadata(layer.join("bin/su-again")).unwrap().ino(), su.ino());
    assert_eq!(std::fs::read_link(layer.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert!(std::fs::symlink_metadata(layer.join("bin/pipe")).unwrap().file_type().is_fifo());
    let bin = std::fs::metadata(layer.join("bin")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7777, 0o751);
    assert_eq!(bin.mtime(), 1_600_000_000, "directory mtime set after its children");
    assert_eq!(std::fs::metadata(layer.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
}

#[test]
fn xattrs_and_file_capabilities_are_preserved() {
    require_root();
    let s = Sandbox::new();
    // vfs_cap_data revision 2, effective, permitted = CAP_NET_BIND_SERVICE (10).
    let net_bind: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    let tar = TarBuilder::new()
        .pax(&[("SCHILY.xattr.security.capability", &net_bind), ("SCHILY.xattr.user.origin", b"nodelet test")])
        .file_with("server", b"#!/bin/sh\n", 0o755, 1000, 1000)
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .file("forged", b"x")
        .finish();
    unpack::unpack_tar(tar.as_slice(), &s.layer(), "test-layer").unwrap();
    let server = s.layer().join("server");
    // Set after the chown, which would have cleared the capability.
    assert_eq!(xattr::get(&server, "security.capability").unwrap(), Some(net_bind));
    assert_eq!(xattr::get(&server, "user.origin").unwrap(), Some(b"nodelet test".to_vec()));
    assert_eq!(std::fs::metadata(&server).unwrap().uid(), 1000);
    assert_eq!(xattr::get(s.layer().join("forged"), "trusted.overlay.redirect").unwrap(), None, "overlay's own");
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_take_effect() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let top = work.path().join("top");
    std::fs::create_dir(&base).unwrap();
    std::fs::create_dir(&top).unwrap();

    let base_tar = TarBuilder::new()
        .file("gone", b"old")
        .file("kept", b"kept")
        .dir("opaque", 0o755)
        .file("opaque/old", b"old")
        .dir("merged", 0o755)
        .file("merged/old", b"old")
        .finish();
    unpack::unpack_tar(base_tar.as_slice(), &base, "base").unwrap();
    let top_tar = TarBuilder::new()
        .file(".wh.gone", b"")
        .dir("opaque", 0o755)
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"new")
        .file("merged/new", b"new")
        .finish();
    unpack::unpack_tar(top_tar.as_slice(), &top, "top").unwrap();

    let whiteout = std::fs::symlink_metadata(top.join("gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert_eq!(xattr::get(top.join("opaque"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert!(!top.join("opaque/.wh..wh..opq").exists());

    let container = work.path().join("container");
    std::fs::create_dir(&container).unwrap();
    let _guard = MountGuard(container.clone());
    let rootfs = overlay::mount_overlay(&[top.clone(), base.clone()], &container).unwrap();
    let names = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(rootfs.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("."), ["kept", "merged", "opaque"]);
    assert_eq!(names("opaque"), ["new"]);
    assert_eq!(names("merged"), ["new", "old"]);
    overlay::unmount_overlay(&container).unwrap();
}

#[tokio::test]
async fn hostile_layer_from_a_registry_fails_the_pull() {
    require_root();
    let registry = TestRegistry::start();
    let sandbox = Sandbox::new();
    let outside = sandbox.outside().to_string_lossy().into_owned();
    let tar = TarBuilder::new().file("ok", b"fine").symlink("evil", &outside).file("evil/pwned", b"x").finish();
    let reference = registry.push_single_layer_image("hostile/symlink", &tar).await;
    let store = ImageStore::open(sandbox.layer().join("images")).unwrap();
    let err = store.pull(&reference, &NoProgress).await.unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
    assert!(err.to_string().contains("\"evil/pwned\""), "{err}");
    sandbox.assert_outside_untouched();
    // No half-unpacked layer, no index entry, no temp leftovers.
    let root = store.root();
    assert_eq!(std::fs::read_dir(root.join("layers/sha256")).unwrap().count(), 0);
    assert_eq!(image_common::work_leftovers(root), Vec::<String>::new());
    assert!(store.get(&reference).unwrap().is_none());

    let traversal = TarBuilder::new().file("../../escape", b"x").finish();
    let reference = registry.push_single_layer_image("hostile/traversal", &traversal).await;
    let err = store.pull(&reference, &NoProgress).await.unwrap_err();
    assert!(err.to_string().contains("\"../../escape\""), "{err}");
    sandbox.assert_outside_untouched();
}
