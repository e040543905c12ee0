//! Resolving paths strictly inside a directory, for unpacking untrusted layers.
//!
//! Every lookup goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` on the layer
//! directory: the kernel refuses (EXDEV) any resolution that would leave it, whether by `..`,
//! an absolute symlink or a relative symlink climbing out, and does so atomically (no
//! check-then-use race). Symlinks that stay inside are followed, as Docker does. The final
//! component is then created or replaced with `*at` calls on the parent's fd, which never
//! follow a symlink in that last component.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a path could not be resolved inside the root.
#[derive(Debug)]
pub enum ResolveError {
    /// The path (or a symlink on it) leads outside the root.
    Escapes,
    /// A component on the way is not a directory.
    NotADirectory,
    Io(std::io::Error),
}

impl From<Errno> for ResolveError {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::EXDEV | Errno::ELOOP => ResolveError::Escapes,
            Errno::ENOTDIR => ResolveError::NotADirectory,
            other => ResolveError::Io(other.into()),
        }
    }
}

/// Split an archive path into plain components. `Err` names the problem: absolute paths and
/// `..` are refused outright (no legitimate layer has them).
pub fn components(path: &Path) -> Result<Vec<OsString>, &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("path contains '..'"),
        }
    }
    Ok(parts)
}

pub fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Open the directory at `parts` below `root` (the root itself when `parts` is empty).
pub fn open_dir(root: &OwnedFd, parts: &[OsString]) -> Result<OwnedFd, ResolveError> {
    let path = if parts.is_empty() { PathBuf::from(".") } else { join(parts) };
    Ok(openat2(root, &path, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))?)
}

/// Open the directory at `parts` below `root`, creating missing directories (mode 0755) on the
/// way, like `mkdir -p` confined to the root.
pub fn ensure_dir(root: &OwnedFd, parts: &[OsString]) -> Result<OwnedFd, ResolveError> {
    match open_dir(root, parts) {
        Err(ResolveError::Io(e)) if e.raw_os_error() == Some(libc::ENOENT) && !parts.is_empty() => {
            let (last, parent_parts) = parts.split_last().ok_or(ResolveError::Escapes)?;
            let parent = ensure_dir(root, parent_parts)?;
            match nix::sys::stat::mkdirat(&parent, last.as_os_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            // A second ENOENT means a dangling symlink sits there: report it as such.
            open_dir(root, parts)
        }
        other => other,
    }
}

/// Open `name` inside `dir` without following a symlink in that last component.
pub fn open_nofollow(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(dir, name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// A display form of archive bytes for error messages.
pub fn display(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_absolute_and_parent_paths() {
        assert_eq!(components(Path::new("./a/./b/")).unwrap(), vec![OsString::from("a"), OsString::from("b")]);
        assert!(components(Path::new("/etc/passwd")).is_err());
        assert!(components(Path::new("a/../../b")).is_err());
        assert!(components(Path::new(".")).unwrap().is_empty());
    }

    #[test]
    fn resolution_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", dir.path().join("up")).unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("inside")).unwrap();
        let root = nix::fcntl::open(dir.path(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let p = |s: &str| components(Path::new(s)).unwrap();
        assert!(matches!(ensure_dir(&root, &p("abs/x")), Err(ResolveError::Escapes)));
        assert!(matches!(ensure_dir(&root, &p("up/x")), Err(ResolveError::Escapes)));
        assert!(ensure_dir(&root, &p("inside/x/y")).is_ok());
        assert!(dir.path().join("real/x/y").is_dir());
        assert!(ensure_dir(&root, &p("new/a/b")).is_ok());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
