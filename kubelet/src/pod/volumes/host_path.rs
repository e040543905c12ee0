//! hostPath volumes: the host's own path, checked against the volume's `type` as kubelet's
//! hostPath type checker does (creating it for DirectoryOrCreate and FileOrCreate, and for no
//! type as containerd does).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("hostPath type check failed: {} is not a {what}", path.display())]
    WrongType { path: PathBuf, what: &'static str },
    #[error("{0} is an invalid volume type")]
    InvalidType(String),
    #[error("create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Check (and for the *OrCreate types create) `path` as hostPath `type_` asks.
pub fn check_type(path: &Path, type_: &str) -> Result<(), HostPathError> {
    let wrong = |what| Err(HostPathError::WrongType { path: path.to_path_buf(), what });
    let create = |source| HostPathError::Create { path: path.to_path_buf(), source };
    // Follows symlinks, as os.Stat.
    let metadata = std::fs::metadata(path).ok();
    let file_type = metadata.as_ref().map(|m| m.file_type());
    match type_ {
        // No check; a missing path becomes a directory, as containerd's CRI makes it for
        // kubelet (the bind mount would fail otherwise).
        "" if metadata.is_none() => std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path).map_err(create),
        "" => Ok(()),
        "DirectoryOrCreate" if metadata.is_none() => {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path).map_err(create)
        }
        "DirectoryOrCreate" | "Directory" if file_type.is_some_and(|t| t.is_dir()) => Ok(()),
        "DirectoryOrCreate" | "Directory" => wrong("directory"),
        "FileOrCreate" if metadata.is_none() => std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(create),
        "FileOrCreate" | "File" if file_type.is_some_and(|t| !t.is_dir()) => Ok(()),
        "FileOrCreate" | "File" => wrong("file"),
        "Socket" if file_type.is_some_and(|t| t.is_socket()) => Ok(()),
        "Socket" => wrong("socket file"),
        "CharDevice" if file_type.is_some_and(|t| t.is_char_device()) => Ok(()),
        "CharDevice" => wrong("character device"),
        "BlockDevice" if file_type.is_some_and(|t| t.is_block_device()) => Ok(()),
        "BlockDevice" => wrong("block device"),
        other => Err(HostPathError::InvalidType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_checked_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let missing = dir.path().join("missing");

        assert!(check_type(&file, "").is_ok());
        check_type(&missing, "").unwrap();
        assert!(missing.is_dir());
        let missing = dir.path().join("still-missing");
        assert!(check_type(dir.path(), "Directory").is_ok());
        assert_eq!(
            check_type(&file, "Directory").unwrap_err().to_string(),
            format!("hostPath type check failed: {} is not a directory", file.display())
        );
        assert!(check_type(&missing, "Directory").is_err());
        assert!(check_type(&file, "File").is_ok());
        assert!(check_type(dir.path(), "File").is_err());
        assert!(check_type(&missing, "File").is_err());
        assert!(check_type(Path::new("/dev/null"), "CharDevice").is_ok());
        assert!(check_type(&file, "CharDevice").is_err());
        assert!(check_type(&file, "BlockDevice").is_err());
        assert!(check_type(&file, "Socket").unwrap_err().to_string().ends_with("is not a socket file"));
        assert_eq!(check_type(&file, "Weird").unwrap_err().to_string(), "Weird is an invalid volume type");

        let made_dir = dir.path().join("a/b");
        check_type(&made_dir, "DirectoryOrCreate").unwrap();
        assert!(made_dir.is_dir());
        let made_file = dir.path().join("new-file");
        check_type(&made_file, "FileOrCreate").unwrap();
        assert!(made_file.is_file());
        assert!(check_type(&dir.path().join("no/parent"), "FileOrCreate").is_err());
    }
}
