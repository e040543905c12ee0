//! The container user: image `User` ("uid", "uid:gid", "name", "name:group"), names looked up
//! in the container's own /etc/passwd and /etc/group, overridden by the securityContext.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("user {user:?} not found in {passwd}")]
    UnknownUser { user: String, passwd: PathBuf },
    #[error("group {group:?} not found in {group_file}")]
    UnknownGroup { group: String, group_file: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
}

/// Resolve an image `User` string against the files of `rootfs`.
pub fn resolve_image_user(user: &str, rootfs: &Path) -> Result<ResolvedUser, UserError> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(ResolvedUser::default());
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_path = rootfs.join("etc/passwd");
    let passwd = read_untrusted(&passwd_path);
    let entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || !pred(&fields) {
                return None;
            }
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        })
    };
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        // A numeric uid need not exist in /etc/passwd; its primary group then is 0.
        Ok(uid) => (uid, entry(&|f| f[2] == user_part).map_or(0, |(_, gid)| gid)),
        Err(_) => entry(&|f| f[0] == user_part)
            .ok_or_else(|| UserError::UnknownUser { user: user_part.to_string(), passwd: passwd_path.clone() })?,
    };
    let gid = match group_part {
        None => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group_path = rootfs.join("etc/group");
                read_untrusted(&group_path)
                    .lines()
                    .find_map(|line| {
                        let fields: Vec<&str> = line.split(':').collect();
                        (fields.len() >= 3 && fields[0] == group).then(|| fields[2].parse().ok()).flatten()
                    })
                    .ok_or_else(|| UserError::UnknownGroup { group: group.to_string(), group_file: group_path })?
            }
        },
    };
    Ok(ResolvedUser { uid, gid })
}

/// Read a file of the image, refusing symlinks: they resolve against the host, not the image.
fn read_untrusted(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:102:nginx:/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nweb:x:33:\n").expect("group");
        dir
    }

    #[test]
    fn numeric_and_named_users() {
        let r = rootfs();
        let p = r.path();
        assert_eq!(resolve_image_user("", p), Ok(ResolvedUser { uid: 0, gid: 0 }));
        assert_eq!(resolve_image_user("1000", p), Ok(ResolvedUser { uid: 1000, gid: 0 }));
        assert_eq!(resolve_image_user("101", p), Ok(ResolvedUser { uid: 101, gid: 102 }));
        assert_eq!(resolve_image_user("5:6", p), Ok(ResolvedUser { uid: 5, gid: 6 }));
        assert_eq!(resolve_image_user("nginx", p), Ok(ResolvedUser { uid: 101, gid: 102 }));
        assert_eq!(resolve_image_user("nginx:web", p), Ok(ResolvedUser { uid: 101, gid: 33 }));
        assert!(matches!(resolve_image_user("nobody", p), Err(UserError::UnknownUser { .. })));
    }
}
