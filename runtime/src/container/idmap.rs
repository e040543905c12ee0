//! Idmapped bind mounts (`mounts[].uidMappings`/`gidMappings`, or the `idmap`/`ridmap`
//! options with the container's own mappings), as runc 1.2 makes them: the runtime side,
//! still root on the host, clones the source into a detached mount and sets
//! MOUNT_ATTR_IDMAP on it with a user namespace holding the mount's maps (the kernel wants
//! rights over the filesystem's own namespace, which the container's init lacks); the init
//! attaches it at the destination.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::mounts::MountOptions;
use super::userns;
use crate::sys::{self, mount_api, CloneResult};

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("cannot read the mounts' id mappings from {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid mounts' id mappings in {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("mounts[{index}] ({destination}): id-mapped mounts are only supported for bind mounts")]
    NotBind { index: usize, destination: PathBuf },
    #[error("mounts[{index}] ({destination}): id-mapped mounts need both uidMappings and gidMappings")]
    MissingMappings { index: usize, destination: PathBuf },
    #[error("cannot create a user namespace for the id-mapped mount of {source_path}")]
    Userns {
        source_path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write the id maps of the user namespace for {source_path}")]
    Maps {
        source_path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot clone the mount at {source_path}")]
    OpenTree {
        source_path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot id-map the mount of {source_path} (does its filesystem support idmapped mounts?)")]
    SetAttr {
        source_path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A detached, idmapped copy of `mounts[index]`'s source.
pub(super) struct IdmappedMount {
    pub index: usize,
    pub tree: OwnedFd,
}

impl IdmappedMount {
    pub fn raw_fd(&self) -> RawFd {
        self.tree.as_raw_fd()
    }
}

/// `mounts[].uidMappings` and `gidMappings` of config.json, by index: read from the file
/// itself, since oci-spec's `Mount` does not carry them.
#[derive(Debug, Default)]
pub(super) struct MountMaps(Vec<RawMount>);

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    #[serde(default)]
    uid_mappings: Option<Vec<LinuxIdMapping>>,
    #[serde(default)]
    gid_mappings: Option<Vec<LinuxIdMapping>>,
}

#[derive(serde::Deserialize)]
struct RawSpec {
    #[serde(default)]
    mounts: Option<Vec<RawMount>>,
}

impl MountMaps {
    pub fn read(bundle: &Path) -> Result<MountMaps, IdmapError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| IdmapError::Read { path: path.clone(), source })?;
        Self::parse(&text).map_err(|source| IdmapError::Parse { path, source })
    }

    fn parse(text: &[u8]) -> Result<MountMaps, serde_json::Error> {
        // Most specs have no mapping anywhere: skip the second parse.
        if !text.windows(b"idMappings".len()).any(|w| w == b"idMappings") {
            return Ok(MountMaps::default());
        }
        let raw: RawSpec = serde_json::from_slice(text)?;
        Ok(MountMaps(raw.mounts.unwrap_or_default()))
    }

    fn of(&self, index: usize) -> (Option<&[LinuxIdMapping]>, Option<&[LinuxIdMapping]>) {
        self.0.get(index).map(|m| (m.uid_mappings.as_deref(), m.gid_mappings.as_deref())).unwrap_or((None, None))
    }
}

/// What an id-mapped mount asks for: uid maps, gid maps, recursive.
struct Wanted<'a> {
    uids: &'a [LinuxIdMapping],
    gids: &'a [LinuxIdMapping],
    recursive: bool,
}

fn wanted<'a>(
    spec: &'a Spec,
    m: &'a Mount,
    own: (Option<&'a [LinuxIdMapping]>, Option<&'a [LinuxIdMapping]>),
) -> Option<Wanted<'a>> {
    let options = m.options().as_deref().unwrap_or(&[]);
    let idmap = options.iter().any(|o| o == "idmap");
    let ridmap = options.iter().any(|o| o == "ridmap");
    if !idmap && !ridmap && own.0.is_none_or(|v| v.is_empty()) && own.1.is_none_or(|v| v.is_empty()) {
        return None;
    }
    let linux = spec.linux().as_ref();
    // No maps of its own: the container's (runtime-spec 1.2's "idmap" option).
    let uids = own.0.or_else(|| linux.and_then(|l| l.uid_mappings().as_deref())).unwrap_or(&[]);
    let gids = own.1.or_else(|| linux.and_then(|l| l.gid_mappings().as_deref())).unwrap_or(&[]);
    Some(Wanted { uids, gids, recursive: ridmap })
}

/// The spec's rules, checked before anything is made.
pub(super) fn validate(spec: &Spec, maps: &MountMaps) -> Result<(), IdmapError> {
    for (index, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        let Some(wanted) = wanted(spec, m, maps.of(index)) else {
            continue;
        };
        let destination = m.destination().clone();
        let options = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
        if !options.flags.contains(nix::mount::MsFlags::MS_BIND) {
            return Err(IdmapError::NotBind { index, destination });
        }
        if wanted.uids.is_empty() || wanted.gids.is_empty() {
            return Err(IdmapError::MissingMappings { index, destination });
        }
    }
    Ok(())
}

/// Every id-mapped mount of the spec, detached and ready to attach. Only in a
/// single-threaded caller (it clones).
pub(super) fn prepare(spec: &Spec, maps: &MountMaps) -> Result<Vec<IdmappedMount>, IdmapError> {
    let mut prepared = Vec::new();
    for (index, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        let Some(wanted) = wanted(spec, m, maps.of(index)) else {
            continue;
        };
        let source = m.source().clone().unwrap_or_default();
        let options = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
        let rbind = options.flags.contains(nix::mount::MsFlags::MS_REC);
        let userns = userns_with(&source, wanted.uids, wanted.gids)?;
        let tree = mount_api::open_tree_clone(&source, rbind)
            .map_err(|e| IdmapError::OpenTree { source_path: source.clone(), source: e })?;
        mount_api::set_idmap(tree.as_fd(), userns.as_fd(), wanted.recursive)
            .map_err(|e| IdmapError::SetAttr { source_path: source.clone(), source: e })?;
        prepared.push(IdmappedMount { index, tree });
    }
    Ok(prepared)
}

/// A user namespace with these maps: a child cloned into a new one, kept alive (blocked on
/// a pipe) while we write its maps and open its namespace file.
fn userns_with(source: &Path, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd, IdmapError> {
    let ns_err = |e| IdmapError::Userns { source_path: source.to_path_buf(), source: e };
    let (hold_read, hold_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ns_err)?;
    match sys::clone_process(CloneFlags::CLONE_NEWUSER).map_err(ns_err)? {
        CloneResult::Child => {
            drop(hold_write);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&hold_read, &mut byte); // EOF once the parent is done
            sys::exit_immediately(0)
        }
        CloneResult::Parent { child } => {
            drop(hold_read);
            let proc = PathBuf::from(format!("/proc/{child}"));
            let result = (|| {
                std::fs::write(proc.join("uid_map"), userns::map_text(uids))?;
                std::fs::write(proc.join("gid_map"), userns::map_text(gids))?;
                File::open(proc.join("ns/user"))
            })();
            drop(hold_write);
            let _ = waitpid(child, None);
            result.map(OwnedFd::from).map_err(|e| IdmapError::Maps { source_path: source.to_path_buf(), source: e })
        }
    }
}

/// Attach a prepared tree at `target`.
pub(super) fn attach(tree: &IdmappedMount, target: &Path) -> Result<(), nix::Error> {
    mount_api::move_mount_to(tree.tree.as_fd(), target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    const CONFIG: &str = r#"{"ociVersion": "1.2.0", "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"],
         "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
         "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
        {"destination": "/half", "type": "bind", "source": "/srv", "options": ["bind"],
         "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1}]}
    ]}"#;

    fn spec_with(mounts: Vec<Mount>) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(mounts));
        spec
    }

    fn bind(destination: &str, options: &[&str]) -> Mount {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        MountBuilder::default().destination(destination).typ("bind").source("/srv").options(options).build().unwrap()
    }

    #[test]
    fn mount_maps_come_from_config_json() {
        let maps = MountMaps::parse(CONFIG.as_bytes()).unwrap();
        assert_eq!(maps.of(0), (None, None));
        assert_eq!(maps.of(1).0.map(|m| m[0].host_id()), Some(100000));
        assert_eq!(maps.of(7), (None, None));
        let proc = MountBuilder::default().destination("/proc").typ("proc").source("proc").build().unwrap();
        let spec = spec_with(vec![proc, bind("/data", &["rbind"]), bind("/half", &["bind"])]);
        let err = validate(&spec, &maps).unwrap_err().to_string();
        assert_eq!(err, "mounts[2] (/half): id-mapped mounts need both uidMappings and gidMappings");
    }

    #[test]
    fn idmap_option_needs_a_bind_and_takes_the_containers_maps() {
        let tmpfs = MountBuilder::default()
            .destination("/t")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["idmap".to_string()])
            .build()
            .unwrap();
        let err = validate(&spec_with(vec![tmpfs]), &MountMaps::default()).unwrap_err();
        assert!(matches!(err, IdmapError::NotBind { index: 0, .. }), "{err}");
        let spec = spec_with(vec![bind("/data", &["rbind", "ridmap"])]);
        let err = validate(&spec, &MountMaps::default()).unwrap_err();
        assert!(matches!(err, IdmapError::MissingMappings { .. }), "no container maps either: {err}");
        let m = bind("/data", &["rbind", "ridmap"]);
        assert!(wanted(&spec, &m, (None, None)).unwrap().recursive);
        assert!(wanted(&spec, &bind("/x", &["bind"]), (None, None)).is_none());
    }
}
