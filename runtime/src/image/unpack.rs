//! Unpacking one layer tarball into a directory usable as an overlayfs lower layer.
//!
//! - OCI whiteouts become overlayfs ones: `.wh.<name>` -> a 0:0 character device `<name>`,
//!   `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the directory.
//! - Hostile entries cannot write outside the destination: absolute and `..` paths are refused,
//!   and every parent is resolved by the kernel confined to the destination (see
//!   [`super::beneath`]), so a symlink planted by an earlier entry cannot be written through
//!   to the outside, and hard links can only point at files inside. The failing entry is named.
//! - Device nodes are skipped with a warning naming the layer and the entry, as containerd
//!   skips them in a user namespace (a container's /dev comes from the runtime, and a node in
//!   the store could reach a host device), except 0:0 character devices, overlayfs' own
//!   whiteouts. Metadata entries (long names, PAX headers) are bounded (see
//!   [`super::header_guard`]).
//! - Modes (setuid included), ownership, symlinks, hard links, FIFOs, mtimes and extended
//!   attributes are kept.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use super::beneath::{self, ResolveError};
use super::digest::HashingReader;
use super::header_guard::{HeaderGuard, OversizedHeader};
use super::{Digest, ImageError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Extended attributes a layer may not set: overlayfs' own (they would forge whiteouts,
/// redirects or metacopy inside the stack).
const FORBIDDEN_XATTR_PREFIX: &str = "trusted.overlay.";

/// Unpack the layer blob at `blob` (gzip, zstd or plain tar, told apart by magic bytes) into
/// the existing empty directory `dest`; returns the digest of the uncompressed tar (diff id).
pub fn unpack_blob(blob: &Path, dest: &Path, layer: &str) -> Result<Digest, ImageError> {
    let file = File::open(blob).map_err(ImageError::io("open", blob))?;
    let mut reader = BufReader::new(file);
    let magic = {
        use std::io::BufRead;
        reader.fill_buf().map_err(ImageError::io("read", blob))?.to_vec()
    };
    let tar_error = |source| ImageError::Tar { layer: layer.to_string(), source };
    let decompressed: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(tar_error)?)
    } else {
        Box::new(reader)
    };
    let mut hashing = HashingReader::new(decompressed);
    unpack_tar(&mut hashing, dest, layer)?;
    // The diff id covers the whole stream, including tar's trailing padding.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(tar_error)?;
    Ok(hashing.finish())
}

/// Unpack an uncompressed tar stream into the existing directory `dest`. `layer` names the
/// layer in errors.
pub fn unpack_tar(reader: impl Read, dest: &Path, layer: &str) -> Result<(), ImageError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open", dest)(e.into()))?;
    let mut unpacker = Unpacker { root, layer: layer.to_string(), directory_times: Vec::new() };
    let mut archive = tar::Archive::new(HeaderGuard::new(reader));
    let tar_error = |source: std::io::Error| match OversizedHeader::find(&source) {
        Some(oversized) => ImageError::UnsafeEntry {
            layer: layer.to_string(),
            entry: oversized.name.clone(),
            reason: oversized.to_string(),
        },
        None => ImageError::Tar { layer: layer.to_string(), source },
    };
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_directories()
}

struct Unpacker {
    root: OwnedFd,
    layer: String,
    /// Directory mtimes are set last: adding children changes them.
    directory_times: Vec<(Vec<OsString>, TimeSpec)>,
}

/// What an entry asks for, once its header is read.
struct Meta {
    mode: Mode,
    uid: Uid,
    gid: Gid,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Unpacker {
    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry { layer: self.layer.clone(), entry: entry.to_string(), reason: reason.into() }
    }

    fn unsupported(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::UnsupportedEntry { layer: self.layer.clone(), entry: entry.to_string(), reason: reason.into() }
    }

    fn failed(&self, entry: &str, action: &'static str) -> impl FnOnce(Errno) -> ImageError {
        let layer = self.layer.clone();
        let entry = entry.to_string();
        move |errno| ImageError::Entry { layer, entry, action, source: errno.into() }
    }

    fn resolve_error(&self, entry: &str, error: ResolveError) -> ImageError {
        match error {
            ResolveError::Escapes => {
                self.unsafe_entry(entry, "its path resolves outside the layer (through a symlink)")
            }
            ResolveError::NotADirectory => self.unsafe_entry(entry, "a parent path component is not a directory"),
            ResolveError::Io(source) => ImageError::Entry {
                layer: self.layer.clone(),
                entry: entry.to_string(),
                action: "resolve parent of",
                source,
            },
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let path: PathBuf =
            entry.path().map_err(|source| ImageError::Tar { layer: self.layer.clone(), source })?.into_owned();
        let shown = beneath::display(&path);
        let entry_type = entry.header().entry_type();
        // tar hands over a metadata-typed entry only when its header has no ustar or GNU magic
        // (v7), or for a global PAX header: meaningless here, skipped as tar's own unpack does.
        if matches!(
            entry_type,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let parts = beneath::components(&path).map_err(|reason| self.unsafe_entry(&shown, reason))?;
        let Some((name, parent_parts)) = parts.split_last() else {
            // The layer root itself ("./"): nothing to create.
            return Ok(());
        };
        let name_text = name.to_string_lossy();

        if let Some(hidden) = name_text.strip_prefix(WHITEOUT_PREFIX) {
            let parent = beneath::ensure_dir(&self.root, parent_parts).map_err(|e| self.resolve_error(&shown, e))?;
            return if name_text == OPAQUE_MARKER {
                self.mark_opaque(parent, &shown)
            } else if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.*` names are aufs metadata: meaningless here.
                Ok(())
            } else if hidden.is_empty() || hidden == "." || hidden == ".." {
                Err(self.unsafe_entry(&shown, "whiteout of an invalid name"))
            } else {
                self.whiteout(&parent, OsStr::new(hidden), &shown)
            };
        }

        let meta = self.meta(entry, &shown)?;
        let parent = beneath::ensure_dir(&self.root, parent_parts).map_err(|e| self.resolve_error(&shown, e))?;
        match entry_type {
            EntryType::Directory => {
                self.directory(&parent, name, &meta, &shown)?;
                self.directory_times.push((parts.clone(), meta.mtime));
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous => self.regular(&parent, name, &meta, entry, &shown),
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| self.unsupported(&shown, "symlink without a target"))?
                    .into_owned();
                self.symlink(&parent, name, &target, &meta, &shown)
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| self.unsupported(&shown, "hard link without a target"))?
                    .into_owned();
                self.hard_link(&parent, name, &target, &shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match entry_type {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let whiteout = kind == SFlag::S_IFCHR && (major, minor) == (0, 0);
                if kind != SFlag::S_IFIFO && !whiteout {
                    return self.skip_device(&parent, name, kind, (major, minor), &shown);
                }
                let device = nix::sys::stat::makedev(major.into(), minor.into());
                self.device(&parent, name, kind, device, &meta, &shown)
            }
            EntryType::GNUSparse => Err(self.unsupported(&shown, "sparse files are not supported")),
            other => {
                tracing::warn!(layer = %self.layer, entry = %shown, kind = ?other, "skipping tar entry of unknown type");
                Ok(())
            }
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, ImageError> {
        let header = entry.header();
        let bad_header = |what: &str| self.unsupported(shown, format!("unreadable {what} in tar header"));
        let mode = header.mode().map_err(|_| bad_header("mode"))?;
        let uid = header.uid().map_err(|_| bad_header("uid"))?;
        let gid = header.gid().map_err(|_| bad_header("gid"))?;
        let mtime = header.mtime().map_err(|_| bad_header("mtime"))?;
        let to_id = |id: u64, what| u32::try_from(id).map_err(|_| bad_header(what));
        let mut meta = Meta {
            mode: Mode::from_bits_truncate(mode & 0o7777),
            uid: Uid::from_raw(to_id(uid, "uid")?),
            gid: Gid::from_raw(to_id(gid, "gid")?),
            mtime: TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
            xattrs: Vec::new(),
        };
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    meta.xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(meta)
    }

    /// Remove whatever `name` is in `parent` (a later entry replaces an earlier one); a
    /// directory is kept when `keep_directory` (tar may list a directory twice).
    fn clear(&self, parent: &OwnedFd, name: &OsStr, keep_directory: bool, shown: &str) -> Result<bool, ImageError> {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(self.failed(shown, "inspect existing")(e)),
        };
        let is_directory = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_directory && keep_directory {
            return Ok(true);
        }
        if is_directory {
            // A real directory reached through the parent fd: remove_dir_all does not follow
            // symlinks found inside it.
            let fd_path =
                PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(parent))).join(name);
            std::fs::remove_dir_all(&fd_path).map_err(|source| ImageError::Entry {
                layer: self.layer.clone(),
                entry: shown.to_string(),
                action: "replace existing directory for",
                source,
            })?;
        } else {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(self.failed(shown, "replace existing"))?;
        }
        Ok(false)
    }

    fn whiteout(&self, parent: &OwnedFd, hidden: &OsStr, shown: &str) -> Result<(), ImageError> {
        self.clear(parent, hidden, false, shown)?;
        mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), nix::sys::stat::makedev(0, 0))
            .map_err(self.failed(shown, "create whiteout for"))?;
        fchownat(parent, hidden, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(self.failed(shown, "chown whiteout for"))
    }

    fn mark_opaque(&self, parent: OwnedFd, shown: &str) -> Result<(), ImageError> {
        use xattr::FileExt;
        File::from(parent).set_xattr(OPAQUE_XATTR, b"y").map_err(|source| ImageError::Entry {
            layer: self.layer.clone(),
            entry: shown.to_string(),
            action: "mark opaque",
            source,
        })
    }

    fn directory(&self, parent: &OwnedFd, name: &OsStr, meta: &Meta, shown: &str) -> Result<(), ImageError> {
        if !self.clear(parent, name, true, shown)? {
            nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700))
                .map_err(self.failed(shown, "create directory"))?;
        }
        let dir = beneath::open_nofollow(parent, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(self.failed(shown, "open directory"))?;
        self.apply_owner_mode_xattrs(dir, meta, shown)
    }

    fn regular<R: Read>(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), ImageError> {
        self.clear(parent, name, false, shown)?;
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(self.failed(shown, "create file"))?;
        let mut file = File::from(fd);
        std::io::copy(entry, &mut file).map_err(|source| ImageError::Entry {
            layer: self.layer.clone(),
            entry: shown.to_string(),
            action: "write",
            source,
        })?;
        let fd = OwnedFd::from(file);
        futimens(&fd, &meta.mtime, &meta.mtime).map_err(self.failed(shown, "set mtime of"))?;
        self.apply_owner_mode_xattrs(fd, meta, shown)
    }

    /// Owner first, then mode (chown clears setuid/setgid), then xattrs (security.capability
    /// must come after chown, which clears it too).
    fn apply_owner_mode_xattrs(&self, fd: OwnedFd, meta: &Meta, shown: &str) -> Result<(), ImageError> {
        fchown(&fd, Some(meta.uid), Some(meta.gid)).map_err(self.failed(shown, "chown"))?;
        fchmod(&fd, meta.mode).map_err(self.failed(shown, "chmod"))?;
        let file = File::from(fd);
        for (name, value) in &meta.xattrs {
            if name.starts_with(FORBIDDEN_XATTR_PREFIX) {
                tracing::warn!(layer = %self.layer, entry = %shown, xattr = %name, "ignoring overlay xattr from layer");
                continue;
            }
            if let Err(source) = xattr::FileExt::set_xattr(&file, name, value) {
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    tracing::warn!(layer = %self.layer, entry = %shown, xattr = %name, "filesystem does not support this xattr");
                    continue;
                }
                return Err(ImageError::Entry {
                    layer: self.layer.clone(),
                    entry: shown.to_string(),
                    action: "set xattr on",
                    source,
                });
            }
        }
        Ok(())
    }

    fn symlink(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        target: &Path,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), ImageError> {
        // Any target may be stored: it is only ever resolved later inside the container's
        // root, or refused by the confined resolution of later entries.
        self.clear(parent, name, false, shown)?;
        symlinkat(target, parent, name).map_err(self.failed(shown, "create symlink"))?;
        fchownat(parent, name, Some(meta.uid), Some(meta.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(self.failed(shown, "chown symlink"))?;
        utimensat(parent, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(self.failed(shown, "set mtime of symlink"))
    }

    fn hard_link(&self, parent: &OwnedFd, name: &OsStr, target: &Path, shown: &str) -> Result<(), ImageError> {
        let target_parts = beneath::components(target).map_err(|reason| {
            self.unsafe_entry(shown, format!("hard link target {:?}: {reason}", beneath::display(target)))
        })?;
        let Some((target_name, target_parent_parts)) = target_parts.split_last() else {
            return Err(self.unsafe_entry(shown, "hard link to the layer root"));
        };
        let target_parent = beneath::open_dir(&self.root, target_parent_parts).map_err(|e| match e {
            ResolveError::Escapes => self.unsafe_entry(
                shown,
                format!("hard link target {:?} resolves outside the layer", beneath::display(target)),
            ),
            other => self.resolve_error(shown, other),
        })?;
        match fstatat(&target_parent, target_name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                return Err(self.unsafe_entry(shown, "hard link to a directory"));
            }
            Ok(_) => {}
            Err(e) => return Err(self.failed(shown, "find hard link target of")(e)),
        }
        self.clear(parent, name, false, shown)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(&target_parent, target_name.as_os_str(), parent, name, AtFlags::empty())
            .map_err(self.failed(shown, "create hard link"))
    }

    /// A device node is left out, as containerd does in a user namespace: the store is no
    /// place for one, and a container's /dev comes from its spec. What the layer had at that
    /// path before is removed all the same, as the entry replaces it.
    fn skip_device(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        kind: SFlag,
        (major, minor): (u32, u32),
        shown: &str,
    ) -> Result<(), ImageError> {
        self.clear(parent, name, false, shown)?;
        let kind = if kind == SFlag::S_IFCHR { "character" } else { "block" };
        tracing::warn!(layer = %self.layer, entry = %shown, kind, major, minor, "skipping device node in image layer");
        Ok(())
    }

    fn device(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        kind: SFlag,
        device: libc::dev_t,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), ImageError> {
        self.clear(parent, name, false, shown)?;
        mknodat(parent, name, kind, Mode::empty(), device).map_err(self.failed(shown, "create device node"))?;
        fchownat(parent, name, Some(meta.uid), Some(meta.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(self.failed(shown, "chown"))?;
        nix::sys::stat::fchmodat(parent, name, meta.mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
            .map_err(self.failed(shown, "chmod"))?;
        utimensat(parent, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(self.failed(shown, "set mtime of"))
    }

    fn finish_directories(self) -> Result<(), ImageError> {
        for (parts, mtime) in self.directory_times.iter().rev() {
            let shown = beneath::display(&beneath::join(parts));
            let dir = match beneath::open_dir(&self.root, parts) {
                Ok(dir) => dir,
                // Removed again by a later entry of the same layer.
                Err(ResolveError::Io(e)) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(self.resolve_error(&shown, e)),
            };
            futimens(&dir, mtime, mtime).map_err(self.failed(&shown, "set mtime of"))?;
        }
        Ok(())
    }
}
