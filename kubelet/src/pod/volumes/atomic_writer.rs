//! kubelet's AtomicWriter: the files of a configMap, secret, downwardAPI or projected volume
//! are written into a fresh timestamped directory (`..2026_11_23_15_04_05.<n>`), then the
//! `..data` symlink is pointed at it with one rename, so a reader sees the old set or the new
//! one, never a mix. Each top-level name the user sees is a symlink through `..data`. An
//! unchanged payload writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume: its bytes and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path in the volume -> file.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("invalid path {path:?} in the volume payload: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("{operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let path = path.to_path_buf();
    move |source| AtomicWriteError::Io { operation, path, source }
}

/// Make `target` hold exactly `payload`. With `group` (the pod's fsGroup) the new files and
/// directories belong to that group before they become visible, as kubelet's
/// SetVolumeOwnership leaves them (the modes already carry the group bits). Returns whether
/// anything was written.
pub fn write_payload(
    target: &Path,
    payload: &Payload,
    now: DateTime<Utc>,
    group: Option<u32>,
) -> Result<bool, AtomicWriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    std::fs::create_dir_all(target).map_err(io_error("create volume directory", target))?;
    let data_link = target.join(DATA_DIR);
    let old_dir = std::fs::read_link(&data_link).ok().map(|name| target.join(name));
    let old_payload = match &old_dir {
        Some(dir) => read_dir_payload(dir)?,
        None => Payload::new(),
    };
    let changed = old_dir.is_none() || old_payload != *payload;
    if changed {
        let new_dir = new_timestamped_dir(target, now)?;
        let tmp_link = target.join(DATA_DIR_TMP);
        if let Err(error) = swap_in(&new_dir, &tmp_link, &data_link, payload, group) {
            // As kubelet does: a failed write leaves no directory behind, so failing resyncs
            // do not fill the volume (a secret's tmpfs) with copies.
            let _ = remove_if_present(&tmp_link);
            let _ = remove_if_present(&new_dir);
            return Err(error);
        }
    }
    create_user_visible(target, payload)?;
    remove_user_visible(target, &old_payload, payload)?;
    if changed {
        if let Some(dir) = old_dir {
            std::fs::remove_dir_all(&dir).map_err(io_error("remove old data directory", &dir))?;
        }
    }
    Ok(changed)
}

/// Fill `new_dir` and point `..data` at it through `..data_tmp`.
fn swap_in(
    new_dir: &Path,
    tmp_link: &Path,
    data_link: &Path,
    payload: &Payload,
    group: Option<u32>,
) -> Result<(), AtomicWriteError> {
    write_files(new_dir, payload)?;
    if let Some(gid) = group {
        set_group_below(new_dir, gid)?;
    }
    remove_if_present(tmp_link)?;
    let name = new_dir.file_name().map(PathBuf::from).unwrap_or_default();
    symlink(&name, tmp_link).map_err(io_error("link", tmp_link))?;
    std::fs::rename(tmp_link, data_link).map_err(io_error("rename onto", data_link))
}

/// Relative, no `..` component, no leading `..` (reserved for the writer's own names).
pub fn validate_path(path: &str) -> Result<(), AtomicWriteError> {
    let invalid = |why| Err(AtomicWriteError::InvalidPath { path: path.to_string(), why });
    if path.is_empty() {
        return invalid("must not be empty");
    }
    if path.len() > 4096 {
        return invalid("must be at most 4096 characters");
    }
    if Path::new(path).is_absolute() {
        return invalid("must be relative");
    }
    if path.starts_with("..") {
        return invalid("must not start with '..'");
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) if name.len() > 255 => return invalid("a path segment is longer than 255"),
            Component::Normal(_) | Component::CurDir => {}
            _ => return invalid("must not contain '..'"),
        }
    }
    Ok(())
}

fn new_timestamped_dir(target: &Path, now: DateTime<Utc>) -> Result<PathBuf, AtomicWriteError> {
    let stamp = now.format("..%Y_%m_%d_%H_%M_%S");
    let base = now.timestamp_subsec_nanos();
    for n in 0..1000u32 {
        let dir = target.join(format!("{stamp}.{}", base.wrapping_add(n)));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_error("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("create data directory", &dir)(e)),
        }
    }
    Err(io_error("create data directory", target)(io::Error::from(io::ErrorKind::AlreadyExists)))
}

fn write_files(dir: &Path, payload: &Payload) -> Result<(), AtomicWriteError> {
    for (relative, file) in payload {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        }
        std::fs::write(&path, &file.data).map_err(io_error("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(io_error("chmod", &path))?;
    }
    Ok(())
}

/// `dir` and everything below it to group `gid`; directories get setgid and group access
/// (kubelet's read-only volume mask).
fn set_group_below(dir: &Path, gid: u32) -> Result<(), AtomicWriteError> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let errno = |source: nix::errno::Errno| io_error("chown", &current)(io::Error::from(source));
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            current.as_path(),
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        let metadata = std::fs::symlink_metadata(&current).map_err(io_error("stat", &current))?;
        if !metadata.is_dir() {
            continue;
        }
        let mode = metadata.permissions().mode() | 0o2550;
        std::fs::set_permissions(&current, std::fs::Permissions::from_mode(mode))
            .map_err(io_error("chmod", &current))?;
        for entry in std::fs::read_dir(&current).map_err(io_error("read directory", &current))? {
            pending.push(entry.map_err(io_error("read directory", &current))?.path());
        }
    }
    Ok(())
}

/// The files under `dir`, as a payload.
fn read_dir_payload(dir: &Path) -> Result<Payload, AtomicWriteError> {
    let mut payload = Payload::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            // A dangling ..data: treat as empty, the next write replaces it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read directory", &current)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &current))?;
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path).map_err(io_error("stat", &path))?;
            if metadata.is_dir() {
                pending.push(path);
                continue;
            }
            let data = std::fs::read(&path).map_err(io_error("read", &path))?;
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
            payload.insert(relative, FileProjection { data, mode: metadata.permissions().mode() & 0o7777 });
        }
    }
    Ok(payload)
}

fn top_level_names(payload: &Payload) -> BTreeSet<String> {
    payload
        .keys()
        .filter_map(|p| Path::new(p).components().find(|c| matches!(c, Component::Normal(_))))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

fn create_user_visible(target: &Path, payload: &Payload) -> Result<(), AtomicWriteError> {
    for name in top_level_names(payload) {
        let link = target.join(&name);
        let wanted = Path::new(DATA_DIR).join(&name);
        match std::fs::read_link(&link) {
            Ok(current) if current == wanted => continue,
            Ok(_) => remove_if_present(&link)?,
            Err(_) if std::fs::symlink_metadata(&link).is_ok() => remove_if_present(&link)?,
            Err(_) => {}
        }
        symlink(&wanted, &link).map_err(io_error("link", &link))?;
    }
    Ok(())
}

fn remove_user_visible(target: &Path, old: &Payload, new: &Payload) -> Result<(), AtomicWriteError> {
    let keep = top_level_names(new);
    for name in top_level_names(old).difference(&keep) {
        remove_if_present(&target.join(name))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), AtomicWriteError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.map_err(io_error("remove", path))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection { data: data.as_bytes().to_vec(), mode }
    }

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 15, 4, second).unwrap()
    }

    fn data_dirs(target: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(target)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..2026"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn kubelet_layout_and_atomic_updates() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vol");
        let first: Payload =
            [("a".to_string(), file("one", 0o644)), ("sub/b".to_string(), file("two", 0o400))].into_iter().collect();
        assert!(write_payload(&target, &first, at(5), None).unwrap());

        let link = std::fs::read_link(target.join("..data")).unwrap();
        assert!(link.to_string_lossy().starts_with("..2026_11_23_15_04_05."), "{link:?}");
        assert_eq!(std::fs::read_link(target.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(std::fs::read_link(target.join("sub")).unwrap(), Path::new("..data/sub"));
        assert_eq!(std::fs::read_to_string(target.join("sub/b")).unwrap(), "two");
        let mode = std::fs::metadata(target.join("sub/b")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o400);

        // Same payload: nothing written, same data dir.
        assert!(!write_payload(&target, &first, at(6), None).unwrap());
        assert_eq!(std::fs::read_link(target.join("..data")).unwrap(), link);

        // New payload: new data dir, old one gone, removed names gone.
        let second: Payload = [("a".to_string(), file("uno", 0o644))].into_iter().collect();
        assert!(write_payload(&target, &second, at(7), None).unwrap());
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "uno");
        assert!(std::fs::symlink_metadata(target.join("sub")).is_err());
        assert_eq!(data_dirs(&target).len(), 1);
        assert!(data_dirs(&target)[0].starts_with("..2026_11_23_15_04_07."));
        assert!(std::fs::symlink_metadata(target.join("..data_tmp")).is_err());

        // A mode change alone is a change.
        let third: Payload = [("a".to_string(), file("uno", 0o600))].into_iter().collect();
        assert!(write_payload(&target, &third, at(8), None).unwrap());
    }

    #[test]
    fn empty_payload_still_has_data_link() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &Payload::new(), at(1), None).unwrap());
        assert!(std::fs::read_link(dir.path().join("..data")).is_ok());
        assert!(!write_payload(dir.path(), &Payload::new(), at(2), None).unwrap());
    }

    #[test]
    fn fs_group_owns_new_files_before_the_swap() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let payload: Payload = [("d/f".to_string(), file("x", 0o640))].into_iter().collect();
        write_payload(dir.path(), &payload, at(1), Some(4321)).unwrap();
        let file_meta = std::fs::metadata(dir.path().join("d/f")).unwrap();
        assert_eq!(file_meta.gid(), 4321);
        assert_eq!(file_meta.mode() & 0o7777, 0o640);
        let dir_meta = std::fs::metadata(dir.path().join("d")).unwrap();
        assert_eq!(dir_meta.gid(), 4321);
        assert_eq!(dir_meta.mode() & 0o2000, 0o2000, "setgid directory");
        // Unchanged: nothing rewritten.
        assert!(!write_payload(dir.path(), &payload, at(2), Some(4321)).unwrap());
    }

    #[test]
    fn failed_write_leaves_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first: Payload = [("a".to_string(), file("one", 0o644))].into_iter().collect();
        write_payload(dir.path(), &first, at(1), None).unwrap();
        let kept = data_dirs(dir.path());
        // "a" as a file and as a directory: writing the second fails half way.
        let clash: Payload =
            [("a".to_string(), file("x", 0o644)), ("a/b".to_string(), file("y", 0o644))].into_iter().collect();
        for second in 2..5 {
            assert!(write_payload(dir.path(), &clash, at(second), None).is_err());
        }
        assert_eq!(data_dirs(dir.path()), kept, "a failed write left its directory");
        assert!(std::fs::symlink_metadata(dir.path().join("..data_tmp")).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "one");
    }

    #[test]
    fn rejects_paths_that_escape() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data", "..x"] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a/b", "a..b", "./a"] {
            assert!(validate_path(good).is_ok(), "{good:?} rejected");
        }
    }
}
