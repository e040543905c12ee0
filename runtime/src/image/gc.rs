//! Garbage collection of the store: blobs and unpacked layers no indexed image references.
//!
//! Two kinds of content are kept although unreferenced: what a pull in this or another process
//! is still writing or has not indexed yet ([`Inflight::busy`], and the pins other processes
//! publish, see [`super::work_dir`]), and unpacked layers that a mounted
//! overlay uses as a lower dir (a running container's rootfs; removing the directory would
//! pull files from under it). Mounts are read from /proc/self/mountinfo, so they are seen in
//! this process's mount namespace, which is the node's for the agent and the CLI.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::inflight::Inflight;
use super::store::{remove_dir_all_quiet, sync_dir, Index, Layout};
use super::store_lock::StoreLockGuard;
use super::{Digest, ImageError};

/// What a collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub blobs: usize,
    pub layers: usize,
    /// Bytes of removed blobs (compressed sizes; unpacked layers are not counted).
    pub bytes: u64,
}

/// Remove every blob and layer that no record of `index` references, except busy (in this
/// process or, by their published pins, in others) and mounted ones. `held` is the store
/// lock, under which `index` was read: no pull indexes an image or pins content meanwhile.
/// It is released once the unreferenced layers are out of the store, before their files are
/// deleted, so that pulls (here and in other processes) do not wait for the deletion.
pub fn collect(
    layout: &Layout,
    held: StoreLockGuard,
    index: &Index,
    inflight: &Inflight,
) -> Result<Collected, ImageError> {
    let mut keep: HashSet<Digest> = inflight.busy();
    keep.extend(layout.busy_elsewhere(&held)?);
    keep.extend(layers_in_use(layout)?);
    for record in index.images.values() {
        keep.insert(record.digest.clone());
        keep.insert(record.config_digest.clone());
        for layer in &record.layers {
            keep.insert(layer.digest.clone());
            keep.insert(layer.diff_id.clone());
        }
    }
    let mut collected = Collected::default();
    for (digest, path) in entries(&layout.blobs_dir())? {
        if keep.contains(&digest) {
            continue;
        }
        let size = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).map_err(ImageError::io("remove", path.as_path()))?;
        tracing::debug!(%digest, "removed unreferenced blob");
        collected.blobs += 1;
        collected.bytes += size;
    }
    let mut doomed_layers = Vec::new();
    for (diff_id, path) in entries(&layout.layers_dir())? {
        if keep.contains(&diff_id) {
            continue;
        }
        // Out of the layers directory first (one atomic rename), then removed: a crash
        // mid-way must not leave a half-removed layer under its final name, where a pull
        // would take it for complete. A dead store's work directory is removed by the next
        // opener.
        let doomed = layout.temp_path("remove");
        std::fs::rename(&path, &doomed).map_err(ImageError::io("move out of the store", path.as_path()))?;
        doomed_layers.push(doomed);
        tracing::debug!(%diff_id, "removed unreferenced layer");
        collected.layers += 1;
    }
    if collected.layers > 0 {
        sync_dir(&layout.layers_dir())?;
    }
    if collected.blobs > 0 {
        sync_dir(&layout.blobs_dir())?;
    }
    drop(held);
    for doomed in &doomed_layers {
        remove_dir_all_quiet(doomed);
    }
    Ok(collected)
}

/// `(digest, path)` of the entries of `blobs/sha256` or `layers/sha256`; names that are not
/// digests are not ours and are left alone.
fn entries(dir: &Path) -> Result<Vec<(Digest, PathBuf)>, ImageError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(ImageError::io("list", dir))? {
        let entry = entry.map_err(ImageError::io("list", dir))?;
        let name = entry.file_name();
        if let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
            found.push((digest, entry.path()));
        }
    }
    Ok(found)
}

/// Diff ids of this store's layers that a mounted overlay uses as a lower dir.
pub fn layers_in_use(layout: &Layout) -> Result<HashSet<Digest>, ImageError> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(ImageError::io("read", path))?;
    Ok(lower_dirs_in(&mountinfo, &layout.layers_dir()))
}

/// Parse mountinfo for overlay lower dirs under `layers_dir`; returns their diff ids.
fn lower_dirs_in(mountinfo: &str, layers_dir: &Path) -> HashSet<Digest> {
    let mut used = HashSet::new();
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mount point> <opts> [tags] - <fstype> <source> <super opts>"
        let Some((_, after)) = line.split_once(" - ") else { continue };
        let mut fields = after.split(' ');
        if fields.next() != Some("overlay") {
            continue;
        }
        let Some(options) = fields.nth(1) else { continue };
        // The kernel octal-escapes ',' inside values, so a raw ',' separates options.
        for option in options.split(',') {
            let value = option.strip_prefix("lowerdir=").or_else(|| option.strip_prefix("lowerdir+="));
            let Some(value) = value else { continue };
            for dir in split_lower_dirs(&crate::mountinfo::unescape(value)) {
                let Ok(relative) = Path::new(&dir).strip_prefix(layers_dir) else { continue };
                let hex = relative.to_string_lossy();
                if let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) {
                    used.insert(digest);
                }
            }
        }
    }
    used
}

/// overlayfs lower dirs: separated by ':', with '\' escaping ':', ',' and '\'.
fn split_lower_dirs(value: &str) -> Vec<String> {
    let mut dirs = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => dirs.last_mut().into_iter().for_each(|d| d.extend(chars.next())),
            ':' => dirs.push(String::new()),
            c => dirs.last_mut().into_iter().for_each(|d| d.push(c)),
        }
    }
    dirs.retain(|d| !d.is_empty());
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lower_dirs_of_overlays_under_the_store() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let other = Digest::of(b"other");
        let layers = Path::new("/var/lib/nodelet/images/layers/sha256");
        let mountinfo = format!(
            "46 27 0:39 / /run/c1/rootfs rw,relatime - overlay overlay rw,lowerdir={l}/{a}:{l}/{b},upperdir=/run/c1/upper,workdir=/run/c1/work,uuid=on\n\
             47 27 0:40 / /x rw - overlay overlay rw,lowerdir=/elsewhere/{o}\n\
             48 27 0:41 / /y rw shared:1 - ext4 /dev/sda1 rw,lowerdir={l}/{o}\n\
             49 27 0:42 / /z rw - overlay overlay rw,lowerdir=/odd\\134\\054dir:{l}/{b}\n",
            l = layers.display(),
            a = a.hex(),
            b = b.hex(),
            o = other.hex(),
        );
        assert_eq!(lower_dirs_in(&mountinfo, layers), HashSet::from([a, b]));
    }

    #[test]
    fn unescapes_mountinfo_and_overlay_separators() {
        assert_eq!(crate::mountinfo::unescape("/a\\040b\\134\\054c"), "/a b\\,c");
        assert_eq!(split_lower_dirs("/a:/b\\:c:/d\\,e"), vec!["/a", "/b:c", "/d,e"]);
    }
}
