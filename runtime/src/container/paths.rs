//! Resolving container paths inside the rootfs without escaping it through symlinks.

use std::path::{Component, Path, PathBuf};

/// Symlink hops followed before giving up (like the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// Join `unsafe_path` to `root` as if `root` were "/": ".." and absolute symlinks found on
/// the way stay inside `root`. Components that do not exist yet are taken as they are.
pub(super) fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut hops = 0;
    while let Some(path) = pending.pop() {
        let mut components = path.components();
        while let Some(component) = components.next() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    match std::fs::read_link(root.join(&candidate)) {
                        Ok(target) if hops < MAX_SYMLINKS => {
                            hops += 1;
                            if target.is_absolute() {
                                resolved = PathBuf::new();
                            }
                            // Resolve the link target first, then the rest of this path.
                            pending.push(components.as_path().to_path_buf());
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    root.join(resolved)
}

#[cfg(test)]
mod tests {
    use super::secure_join;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_dotdot_stay_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/real", r.join("abs")).unwrap();
        symlink("../../../etc", r.join("real/escape")).unwrap();
        assert_eq!(secure_join(r, "/abs/dir".as_ref()), r.join("real/dir"));
        assert_eq!(secure_join(r, "/real/escape/x".as_ref()), r.join("etc/x"));
        assert_eq!(secure_join(r, "/../../x".as_ref()), r.join("x"));
        assert_eq!(secure_join(r, "new/file".as_ref()), r.join("new/file"));
    }
}
