//! User namespaces: the spec's rules on `linux.uidMappings`/`gidMappings`, the id maps the
//! runtime side writes for a new namespace, and the init becoming root inside it.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::namespaces;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("linux.{field} is set but linux.namespaces has no user namespace")]
    MappingsWithoutNamespace { field: &'static str },
    #[error("linux.namespaces asks for a new user namespace but linux.uidMappings and linux.gidMappings are empty")]
    NoMappings,
    #[error("linux.{field}[{index}] has size 0")]
    EmptyMapping { field: &'static str, index: usize },
    #[error("cannot write {path}")]
    WriteMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.{field} does not match the mappings of the joined user namespace ({actual})")]
    MappingMismatch { field: &'static str, actual: String },
    #[error("cannot read {path}")]
    ReadMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot become root in the user namespace (is container id 0 mapped?)")]
    BecomeRoot(#[source] nix::Error),
}

fn uid_mappings(spec: &Spec) -> &[LinuxIdMapping] {
    spec.linux().as_ref().and_then(|l| l.uid_mappings().as_deref()).unwrap_or(&[])
}

fn gid_mappings(spec: &Spec) -> &[LinuxIdMapping] {
    spec.linux().as_ref().and_then(|l| l.gid_mappings().as_deref()).unwrap_or(&[])
}

/// Whether the spec names a user namespace at all (new or joined).
pub(super) fn has_user_namespace(spec: &Spec) -> bool {
    namespaces::creates(spec, LinuxNamespaceType::User) || namespaces::joins(spec, LinuxNamespaceType::User)
}

/// runc's rules: mappings need a user namespace, a new user namespace needs mappings (the
/// kernel would leave every id unmapped), and no mapping may be empty.
pub(super) fn validate(spec: &Spec) -> Result<(), UsernsError> {
    let fields = [("uidMappings", uid_mappings(spec)), ("gidMappings", gid_mappings(spec))];
    if !has_user_namespace(spec) {
        if let Some((field, _)) = fields.iter().find(|(_, m)| !m.is_empty()) {
            return Err(UsernsError::MappingsWithoutNamespace { field });
        }
        return Ok(());
    }
    if namespaces::creates(spec, LinuxNamespaceType::User) && fields.iter().all(|(_, m)| m.is_empty()) {
        return Err(UsernsError::NoMappings);
    }
    for (field, mappings) in fields {
        if let Some(index) = mappings.iter().position(|m| m.size() == 0) {
            return Err(UsernsError::EmptyMapping { field, index });
        }
    }
    Ok(())
}

/// The kernel's map format: "<inside> <outside> <count>" per line.
pub(super) fn map_text(mappings: &[LinuxIdMapping]) -> String {
    mappings.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

/// Write the new namespace's gid and uid maps for `pid`. As runc does when it runs as root,
/// setgroups stays allowed (the writer has CAP_SETGID over the parent namespace); an
/// unprivileged writer must deny it first, or the kernel refuses the gid map.
pub(super) fn write_id_maps(pid: Pid, spec: &Spec) -> Result<(), UsernsError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: &str| {
        let path = proc.join(name);
        std::fs::write(&path, text).map_err(|source| UsernsError::WriteMap { path, source })
    };
    if !Uid::effective().is_root() && !gid_mappings(spec).is_empty() {
        write("setgroups", "deny")?;
    }
    if !gid_mappings(spec).is_empty() {
        write("gid_map", &map_text(gid_mappings(spec)))?;
    }
    if !uid_mappings(spec).is_empty() {
        write("uid_map", &map_text(uid_mappings(spec)))?;
    }
    Ok(())
}

/// Joining a user namespace by path with mappings given: they must be the namespace's own
/// (runc's rule). Called from inside the joined namespace.
pub(super) fn check_joined_mappings(spec: &Spec) -> Result<(), UsernsError> {
    for (field, mappings, file) in
        [("uidMappings", uid_mappings(spec), "uid_map"), ("gidMappings", gid_mappings(spec), "gid_map")]
    {
        if mappings.is_empty() {
            continue;
        }
        let path = PathBuf::from("/proc/self").join(file);
        let actual = std::fs::read_to_string(&path).map_err(|source| UsernsError::ReadMap { path, source })?;
        if parse_map(&actual) != parse_map(&map_text(mappings)) {
            return Err(UsernsError::MappingMismatch {
                field,
                actual: actual.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
    }
    Ok(())
}

fn parse_map(text: &str) -> Vec<Vec<u64>> {
    let mut lines: Vec<Vec<u64>> =
        text.lines().map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()).collect()).collect();
    lines.retain(|l| !l.is_empty());
    lines.sort();
    lines
}

/// After the maps are written: become uid and gid 0 of the namespace, with no supplementary
/// group, so that what the init creates belongs to the container's root. Capabilities in
/// the namespace stay (the kernel gives the effective set back on the change to euid 0).
pub(super) fn become_root() -> Result<(), UsernsError> {
    let root_gid = Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(UsernsError::BecomeRoot)?;
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(UsernsError::BecomeRoot)?;
    // EPERM when setgroups is denied (an unprivileged writer): the groups are then fixed.
    match nix::unistd::setgroups(&[]) {
        Ok(()) | Err(nix::Error::EPERM) => Ok(()),
        Err(e) => Err(UsernsError::BecomeRoot(e)),
    }
}

/// Whether this process runs in a user namespace other than the host's, where mount flags
/// inherited from a more privileged mount namespace are locked. Asked before each remount:
/// the answer is kept for the namespace it was read in (one stat instead of a read of
/// uid_map each time).
pub(super) fn in_user_namespace() -> bool {
    static LAST: Mutex<Option<((u64, u64), bool)>> = Mutex::new(None);
    let namespace = std::fs::metadata("/proc/self/ns/user").map(|m| (m.dev(), m.ino())).ok();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(ns), Some((seen, answer))) = (namespace, *last) {
        if ns == seen {
            return answer;
        }
    }
    let answer = std::fs::read_to_string("/proc/self/uid_map")
        .map(|text| parse_map(&text) != vec![vec![0, 0, u64::from(u32::MAX)]])
        .unwrap_or(false);
    *last = namespace.map(|ns| (ns, answer));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder};

    fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default().container_id(container).host_id(host).size(size).build().unwrap()
    }

    fn spec_with(user: Option<Option<&str>>, uids: Vec<LinuxIdMapping>, gids: Vec<LinuxIdMapping>) -> Spec {
        let mut namespaces = vec![LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build().unwrap()];
        if let Some(path) = user {
            let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
            if let Some(path) = path {
                ns = ns.path(path);
            }
            namespaces.push(ns.build().unwrap());
        }
        let mut spec = Spec::default();
        let linux =
            LinuxBuilder::default().namespaces(namespaces).uid_mappings(uids).gid_mappings(gids).build().unwrap();
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn mappings_need_a_user_namespace() {
        let spec = spec_with(None, vec![mapping(0, 100000, 65536)], vec![]);
        let err = validate(&spec).unwrap_err().to_string();
        assert_eq!(err, "linux.uidMappings is set but linux.namespaces has no user namespace");
        let spec = spec_with(None, vec![], vec![mapping(0, 100000, 65536)]);
        assert!(validate(&spec).unwrap_err().to_string().contains("linux.gidMappings"));
        assert!(validate(&spec_with(None, vec![], vec![])).is_ok());
    }

    #[test]
    fn a_new_user_namespace_needs_mappings() {
        assert!(matches!(validate(&spec_with(Some(None), vec![], vec![])), Err(UsernsError::NoMappings)));
        let joined = spec_with(Some(Some("/proc/1/ns/user")), vec![], vec![]);
        assert!(validate(&joined).is_ok(), "a joined namespace has its own maps");
        let empty = spec_with(Some(None), vec![mapping(0, 1000, 0)], vec![mapping(0, 1000, 1)]);
        assert_eq!(validate(&empty).unwrap_err().to_string(), "linux.uidMappings[0] has size 0");
        let good = spec_with(Some(None), vec![mapping(0, 100000, 65536)], vec![mapping(0, 100000, 65536)]);
        assert!(validate(&good).is_ok());
    }

    #[test]
    fn maps_are_written_and_compared_in_the_kernels_format() {
        let text = map_text(&[mapping(0, 100000, 1000), mapping(1000, 2000, 1)]);
        assert_eq!(text, "0 100000 1000\n1000 2000 1\n");
        let kernel = "      1000       2000          1\n         0     100000       1000\n";
        assert_eq!(parse_map(kernel), parse_map(&text));
    }
}
