//! Pinned maps of another layout than this build's. aya reuses a pinned map as it finds it,
//! whatever its layout, so before loading each pinned map is compared with the map of the
//! same name the object declares; one that differs is set aside (unpinned, held open) so
//! that loading creates it anew. When its layout is an older one the current layout
//! appends fields to (`bpf/lb.h` says how layouts change), its entries are then copied into
//! the new map, zero-extended, before any new program uses it; if loading fails, it is
//! pinned back. The programs still attached keep using it until theirs are swapped.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::EbpfError;
use crate::object::{MapSpec, MAPS};
use crate::sys::{self, MapInfo, RawMap};

/// How a pinned map compares with the map of the same name this build declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The same type, flags, key and value sizes: reused as it is.
    Same,
    /// The same type, flags and key, a shorter value: an older layout the current one
    /// appends fields to, so each entry carries over zero-extended.
    Older,
    /// Anything else: recreated empty.
    Other,
}

impl Layout {
    fn of(found: &MapInfo, spec: &MapSpec) -> Layout {
        let same_kind = found.map_type == spec.map_type && found.map_flags == 0 && found.key_size == spec.key_size;
        match (same_kind, found.value_size.cmp(&spec.value_size)) {
            (true, std::cmp::Ordering::Equal) => Layout::Same,
            (true, std::cmp::Ordering::Less) => Layout::Older,
            _ => Layout::Other,
        }
    }
}

/// What differs, for the log and errors.
fn describe(found: &MapInfo, spec: &MapSpec) -> String {
    format!(
        "type {} flags {:#x} key {} B value {} B, this nodelet's: type {} flags 0 key {} B value {} B",
        found.map_type,
        found.map_flags,
        found.key_size,
        found.value_size,
        spec.map_type,
        spec.key_size,
        spec.value_size
    )
}

/// What differs between the map pinned at `path` and `spec`; `None` when nothing is pinned
/// there or it is the same layout.
pub(super) fn layout_mismatch(path: &Path, spec: &MapSpec) -> Result<Option<String>, EbpfError> {
    let found = open_pinned_map(path)?;
    Ok(found.filter(|(_, info)| Layout::of(info, spec) != Layout::Same).map(|(_, info)| describe(&info, spec)))
}

/// The map pinned at `path` with what the kernel says of it, if anything is pinned there.
fn open_pinned_map(path: &Path) -> Result<Option<(OwnedFd, MapInfo)>, EbpfError> {
    let error = |operation, source| EbpfError::Pin { path: path.to_path_buf(), operation, source };
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error("open", e)),
    };
    let info = sys::map_info(fd.as_fd()).map_err(|e| error("read info of", e))?;
    Ok(Some((fd, info)))
}

/// A pinned map of another layout, unpinned and held open while its replacement is loaded.
pub(crate) struct StaleMap {
    spec: MapSpec,
    path: PathBuf,
    old: OwnedFd,
    info: MapInfo,
    layout: Layout,
}

/// Set aside every map pinned in `pin_dir` whose layout is not this build's, logging each,
/// so that loading creates and pins it anew.
pub(crate) fn set_aside_stale_maps(pin_dir: &Path) -> Result<Vec<StaleMap>, EbpfError> {
    let mut stale = Vec::new();
    for spec in MAPS {
        let path = pin_dir.join(spec.name);
        let Some((old, info)) = open_pinned_map(&path)? else {
            continue;
        };
        let layout = Layout::of(&info, &spec);
        if layout == Layout::Same {
            continue;
        }
        if let Err(source) = fs::remove_file(&path) {
            // Put back what was already set aside: nothing is left half-done.
            stale.into_iter().for_each(StaleMap::restore);
            return Err(EbpfError::Pin { path, operation: "unpin", source });
        }
        let plan = match layout {
            Layout::Older => "recreating it and copying its entries over",
            _ => "recreating it empty (the next sync rewrites what it held)",
        };
        tracing::warn!(map = %path.display(), layout = %describe(&info, &spec), "the pinned map was created by a nodelet of another map layout: {plan}");
        stale.push(StaleMap { spec, path, old, info, layout });
    }
    Ok(stale)
}

impl StaleMap {
    /// Copy the entries of an older layout into the map pinned in its place (each value
    /// zero-extended), before any program uses the new map. Best effort, as the sync
    /// rewrites the services anyway: failures are logged.
    pub(crate) fn carry_over(self) {
        if self.layout != Layout::Older {
            return;
        }
        match self.copy_entries() {
            Ok(copied) => tracing::info!(map = %self.path.display(), copied, "entries of the replaced map copied over"),
            Err(error) => {
                tracing::warn!(map = %self.path.display(), %error, "copying the entries of the replaced map")
            }
        }
    }

    fn copy_entries(&self) -> io::Result<usize> {
        let old = RawMap::new(self.old.try_clone()?)?;
        let new = RawMap::new(sys::obj_get(&self.path)?)?;
        let new_info = new.info();
        if Layout::of(&new_info, &self.spec) != Layout::Same {
            return Err(io::Error::other(format!("the new pinned map is not {}'s layout", self.spec.name)));
        }
        let mut key = vec![0u8; self.info.key_size as usize];
        let mut next = key.clone();
        let mut old_value = vec![0u8; self.info.value_size as usize];
        let mut new_value = vec![0u8; new_info.value_size as usize];
        let mut copied = 0;
        let mut first = true;
        // Bounded: programs still attached may delete entries meanwhile, which restarts a
        // hash map's key walk.
        for _ in 0..self.info.max_entries {
            if !old.next_key((!first).then_some(key.as_slice()), &mut next)? {
                break;
            }
            first = false;
            key.copy_from_slice(&next);
            if !old.lookup(&key, &mut old_value)? {
                continue;
            }
            new_value.fill(0);
            new_value[..old_value.len()].copy_from_slice(&old_value);
            new.update(&key, &new_value)?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Loading failed: pin the old map back in place of whatever loading pinned there, so
    /// that the running programs' maps are where a nodelet of their version finds them.
    pub(crate) fn restore(self) {
        if let Err(error) = fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(map = %self.path.display(), %error, "unpin the map that replaced the old one");
            }
        }
        match sys::obj_pin(self.old.as_fd(), &self.path) {
            Ok(()) => tracing::info!(map = %self.path.display(), "loading failed: the old map is pinned back"),
            Err(error) => tracing::warn!(map = %self.path.display(), %error, "pinning the old map back"),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.spec.name
    }

    pub(crate) fn carries_over(&self) -> bool {
        self.layout == Layout::Older
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{BPF_MAP_TYPE_HASH, SERVICES_MAP_SPEC};

    fn info(map_type: u32, key_size: u32, value_size: u32, map_flags: u32) -> MapInfo {
        MapInfo { map_type, id: 1, key_size, value_size, max_entries: 16, map_flags }
    }

    #[test]
    fn only_the_same_layout_is_reused_and_only_a_shorter_value_carries_over() {
        let spec = SERVICES_MAP_SPEC;
        assert_eq!(spec.map_type, BPF_MAP_TYPE_HASH);
        let (key, value) = (spec.key_size, spec.value_size);
        assert_eq!(Layout::of(&info(BPF_MAP_TYPE_HASH, key, value, 0), &spec), Layout::Same);
        // The services map before session affinity: 12-byte values.
        assert_eq!(Layout::of(&info(BPF_MAP_TYPE_HASH, key, 12, 0), &spec), Layout::Older);
        assert_eq!(Layout::of(&info(BPF_MAP_TYPE_HASH, key, value + 4, 0), &spec), Layout::Other);
        assert_eq!(Layout::of(&info(BPF_MAP_TYPE_HASH, key + 4, 12, 0), &spec), Layout::Other);
        assert_eq!(Layout::of(&info(9, key, value, 0), &spec), Layout::Other);
        assert_eq!(Layout::of(&info(BPF_MAP_TYPE_HASH, key, value, 1), &spec), Layout::Other);
        let text = describe(&info(BPF_MAP_TYPE_HASH, key, 12, 0), &spec);
        assert!(text.contains("value 12 B") && text.contains(&format!("value {value} B")), "{text}");
    }
}
