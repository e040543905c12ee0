//! volumeMounts' subPath, confined to its volume as kubelet confines it: the path is resolved
//! (missing directories created), must stay inside the volume after symlinks are followed, is
//! then opened one component at a time without following symlinks (so a swap after the check
//! fails instead of escaping), and that open file is bind-mounted to
//! `<pod>/volume-subpaths/<volume>/<container>/<index>`, the source the container mounts.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};

use super::mount_points::{bind, is_mount_point, MountPointError};

#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("subPath {0:?} must be a relative path without '..'")]
    Invalid(String),
    #[error("subpath {} not within volume path {}", path.display(), volume.display())]
    Escapes { path: PathBuf, volume: PathBuf },
    #[error("{operation} {}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open {} without following symlinks", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{} changed to a symlink while it was being mounted", path.display())]
    Raced { path: PathBuf },
    #[error(transparent)]
    Mount(#[from] MountPointError),
}

/// What a subPath mount needs to know about its place.
pub struct SubPathMount<'a> {
    pub pod_dir: &'a Path,
    pub volume_name: &'a str,
    pub volume_path: &'a Path,
    pub container: &'a str,
    /// The mount's index in the container's volumeMounts.
    pub index: usize,
    pub sub_path: &'a str,
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SubPathError {
    let path = path.to_path_buf();
    move |source| SubPathError::Io { operation, path, source }
}

fn opened(path: &Path) -> impl FnOnce(Errno) -> SubPathError {
    let path = path.to_path_buf();
    move |source| SubPathError::Open { path, source }
}

/// A relative path with no `..` component.
pub fn validate(sub_path: &str) -> Result<(), SubPathError> {
    let path = Path::new(sub_path);
    let fine = !path.is_absolute() && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if fine {
        Ok(())
    } else {
        Err(SubPathError::Invalid(sub_path.to_string()))
    }
}

/// The subPath inside `volume` with every symlink resolved, created as a directory when
/// missing; an error when it leads outside the volume.
pub fn resolve_within(volume: &Path, sub_path: &str) -> Result<PathBuf, SubPathError> {
    validate(sub_path)?;
    let root = std::fs::canonicalize(volume).map_err(io("resolve", volume))?;
    let wanted = volume.join(sub_path);
    if std::fs::symlink_metadata(&wanted).is_err() {
        // Create what is missing below the deepest part that exists, once that part is
        // known to be inside the volume.
        let existing = wanted.ancestors().find(|p| p.exists()).unwrap_or(volume);
        let resolved = std::fs::canonicalize(existing).map_err(io("resolve", existing))?;
        if !resolved.starts_with(&root) {
            return Err(SubPathError::Escapes { path: wanted, volume: volume.to_path_buf() });
        }
        let rest = wanted.strip_prefix(existing).unwrap_or(Path::new(""));
        make_dirs_below(&root, &resolved, rest)?;
    }
    let resolved = std::fs::canonicalize(&wanted).map_err(io("resolve", &wanted))?;
    if !resolved.starts_with(&root) {
        return Err(SubPathError::Escapes { path: wanted, volume: volume.to_path_buf() });
    }
    Ok(resolved)
}

/// kubelet's doSafeMakeDir: create the directories `rest` below `base` (inside `root`), each
/// with mkdirat in its parent opened without following symlinks, so a symlink planted by a
/// container after `base` was checked fails the creation instead of leading it outside.
/// New directories get the volume root's mode.
fn make_dirs_below(root: &Path, base: &Path, rest: &Path) -> Result<(), SubPathError> {
    let mode = std::fs::metadata(root).map_err(io("stat", root))?.permissions().mode() & 0o7777;
    let mode = Mode::from_bits_truncate(mode);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut parent = open_no_follow(root, base)?;
    let mut current = base.to_path_buf();
    for component in rest.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        current.push(name);
        let created = match mkdirat(parent.as_fd(), name, mode) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(source) => return Err(SubPathError::Open { path: current, source }),
        };
        let dir = openat(parent.as_fd(), name, flags, Mode::empty()).map_err(|source| match source {
            Errno::ELOOP | Errno::ENOTDIR => SubPathError::Raced { path: current.clone() },
            source => SubPathError::Open { path: current.clone(), source },
        })?;
        if created {
            // mkdirat's mode went through the umask.
            fchmod(dir.as_fd(), mode).map_err(opened(&current))?;
        }
        parent = dir;
    }
    Ok(())
}

/// Bind the subPath to its place under volume-subpaths and return that place. An existing
/// bind (an agent restart, a container restart) is reused.
pub fn prepare(mount: &SubPathMount<'_>) -> Result<PathBuf, SubPathError> {
    let target = mount
        .pod_dir
        .join("volume-subpaths")
        .join(mount.volume_name)
        .join(mount.container)
        .join(mount.index.to_string());
    let resolved = resolve_within(mount.volume_path, mount.sub_path)?;
    if is_mount_point(&target)? {
        return Ok(target);
    }
    let root = std::fs::canonicalize(mount.volume_path).map_err(|source| SubPathError::Io {
        operation: "resolve",
        path: mount.volume_path.to_path_buf(),
        source,
    })?;
    let fd = open_no_follow(&root, &resolved)?;
    let is_dir = fstat(fd.as_fd())
        .map(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
        .map_err(|source| SubPathError::Open { path: resolved.clone(), source })?;
    if is_dir {
        std::fs::create_dir_all(&target).map_err(io("create", &target))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&target)
            .map_err(io("create", &target))?;
    }
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
    bind(&proc_path, &target)?;
    Ok(target)
}

/// Open `path` (below `root`) one component at a time, refusing any symlink on the way.
fn open_no_follow(root: &Path, path: &Path) -> Result<OwnedFd, SubPathError> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = open(root, flags | OFlag::O_DIRECTORY, Mode::empty()).map_err(opened(root))?;
    let mut current = root.to_path_buf();
    for component in path.strip_prefix(root).unwrap_or(Path::new("")).components() {
        current.push(component);
        fd = openat(fd.as_fd(), component.as_os_str(), flags, Mode::empty()).map_err(opened(&current))?;
        let stat = fstat(fd.as_fd()).map_err(opened(&current))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(SubPathError::Raced { path: current });
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn confined_to_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        std::fs::create_dir_all(volume.join("inside")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("../outside", volume.join("escape")).unwrap();
        symlink("inside", volume.join("alias")).unwrap();
        symlink("/etc", volume.join("absolute")).unwrap();
        let root = std::fs::canonicalize(&volume).unwrap();

        assert_eq!(resolve_within(&volume, "inside").unwrap(), root.join("inside"));
        assert_eq!(resolve_within(&volume, "alias").unwrap(), root.join("inside"));
        assert!(matches!(resolve_within(&volume, "escape"), Err(SubPathError::Escapes { .. })));
        assert!(matches!(resolve_within(&volume, "absolute"), Err(SubPathError::Escapes { .. })));
        // Missing directories under an escaping symlink are not created outside.
        assert!(matches!(resolve_within(&volume, "escape/new"), Err(SubPathError::Escapes { .. })));
        assert!(!dir.path().join("outside/new").exists());
        assert!(matches!(resolve_within(&volume, "../x"), Err(SubPathError::Invalid(_))));
        assert!(matches!(resolve_within(&volume, "/etc"), Err(SubPathError::Invalid(_))));
        // Missing directories are created.
        assert_eq!(resolve_within(&volume, "a/b").unwrap(), root.join("a/b"));
        assert!(volume.join("a/b").is_dir());
    }

    #[test]
    fn directories_not_created_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("vol");
        let outside = root.with_file_name("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
        // "a" was checked to be inside, then swapped for a symlink before the creation.
        symlink(&outside, root.join("a")).unwrap();
        let error = make_dirs_below(&root, &root, Path::new("a/b/c")).unwrap_err();
        assert!(matches!(&error, SubPathError::Raced { path } if path == &root.join("a")), "{error:?}");
        assert!(!outside.join("b").exists(), "created outside the volume");
        // Without the symlink, each level is created with the volume's mode.
        std::fs::remove_file(root.join("a")).unwrap();
        make_dirs_below(&root, &root, Path::new("a/b/c")).unwrap();
        let mode = std::fs::metadata(root.join("a/b/c")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        // Repeating finds them.
        make_dirs_below(&root, &root, Path::new("a/b/c")).unwrap();
    }

    #[test]
    fn open_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        symlink("real", root.join("link")).unwrap();
        assert!(open_no_follow(&root, &root.join("real")).is_ok());
        assert!(matches!(open_no_follow(&root, &root.join("link")), Err(SubPathError::Raced { .. })));
    }
}
