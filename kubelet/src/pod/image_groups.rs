//! The groups a container's user belongs to in its image's /etc/group, which containerd adds to
//! the process's supplementary groups (with its primary group) before the pod's own.

use std::path::Path;

/// Groups of `/etc/group` that list the user as a member (not its own group by name).
/// The user is `name` when the image named it, else the /etc/passwd entry of `uid`.
pub fn member_groups(rootfs: &Path, uid: u32, name: Option<&str>) -> Vec<u32> {
    let passwd = read_image_file(&rootfs.join("etc/passwd"));
    let uid_text = uid.to_string();
    let user = match name {
        Some(name) => Some(name.to_string()),
        None => passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 3 && fields[2] == uid_text).then(|| fields[0].to_string())
        }),
    };
    let Some(user) = user else { return Vec::new() };
    read_image_file(&rootfs.join("etc/group"))
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] == user || !fields[3].split(',').any(|m| m.trim() == user) {
                return None;
            }
            fields[2].parse().ok()
        })
        .collect()
}

/// A file of the image, refusing symlinks: they would resolve against the host.
fn read_image_file(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_listing_the_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
            .expect("passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:app\nwheel:x:10:root,app\naudio:x:29:bob\nbad:x:zz:app\n",
        )
        .expect("group");
        assert_eq!(member_groups(dir.path(), 1000, None), vec![10]);
        assert_eq!(member_groups(dir.path(), 0, None), vec![10]);
        assert_eq!(member_groups(dir.path(), 5, Some("bob")), vec![29]);
        assert!(member_groups(dir.path(), 4242, None).is_empty());
    }
}
