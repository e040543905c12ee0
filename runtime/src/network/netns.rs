//! Network namespaces kept alive by a bind mount of their nsfs file onto `<netns_dir>/<id>`,
//! the way `ip netns add` does it: no process has to stay in the namespace.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs;

use super::error::NetworkError;
use super::netlink::on_dedicated_thread;

/// Make `dir` a mount point with shared propagation (as iproute2 does for /run/netns).
///
/// Shared, so the namespace mounts below it propagate into mount namespaces cloned later
/// (containers) and, above all, so do their unmounts: otherwise a copy of the mount in some
/// other mount namespace would pin the network namespace after teardown.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), NetworkError> {
    fs::create_dir_all(dir).map_err(|e| NetworkError::netns("create directory for", dir, e))?;
    let make_shared =
        || nix::mount::mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match make_shared() {
        Ok(()) => return Ok(()),
        // EINVAL: `dir` is not a mount point yet; bind it onto itself to make it one.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(NetworkError::netns("make shared mount of directory", dir, e)),
    }
    nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| NetworkError::netns("bind mount directory for", dir, e))?;
    make_shared().map_err(|e| NetworkError::netns("make shared mount of directory", dir, e))
}

/// Undo [`prepare_dir`] once no namespace is bound below `dir`: unmount its bind mount and
/// remove it when empty. A directory still holding namespaces is left as it is.
pub(crate) fn release_dir(dir: &Path) -> Result<(), NetworkError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NetworkError::netns("read directory", dir, e)),
    };
    if entries.flatten().any(|entry| is_bound(&entry.path())) {
        return Ok(());
    }
    match nix::mount::umount2(dir, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never prepared, or released already).
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(NetworkError::netns("unmount directory", dir, e)),
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) => Ok(()),
        Err(e) => Err(NetworkError::netns("remove directory", dir, e)),
    }
}

/// Whether `path` is a bound network namespace (an nsfs mount), not just a leftover file.
pub(crate) fn is_bound(path: &Path) -> bool {
    statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == statfs::NSFS_MAGIC)
}

/// Create a new network namespace bound at `path`, which must not exist yet.
pub(crate) async fn create(path: &Path) -> Result<(), NetworkError> {
    // O_EXCL: two creators of the same sandbox cannot both mount here.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| NetworkError::netns("create mount point for", path, e))?;

    let target = path.to_path_buf();
    let bound = on_dedicated_thread("netns creation", move || unshare_and_bind(&target)).await;
    let result = bound.and_then(|inner| inner);
    if result.is_err() {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove netns mount point after failed creation");
        }
    }
    result
}

/// Runs on a thread of its own that ends right after: it leaves the agent's namespace for
/// good, so it must never run anything else.
fn unshare_and_bind(target: &PathBuf) -> Result<(), NetworkError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::netns("unshare new", target, e))?;
    let own_netns = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(Some(own_netns.as_str()), target.as_path(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| NetworkError::netns("bind mount", target, e))
}

/// Unmount (lazily, so open handles don't block it) and delete the namespace file.
/// Ok(false) when there was nothing to remove.
pub(crate) fn remove(path: &Path) -> Result<bool, NetworkError> {
    let mut removed_something = false;
    // Loop: a crashed run may have stacked several mounts on the same file.
    loop {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => removed_something = true,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(e) => return Err(NetworkError::netns("unmount", path, e)),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => removed_something = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(NetworkError::netns("remove mount point of", path, e)),
    }
    Ok(removed_something)
}
