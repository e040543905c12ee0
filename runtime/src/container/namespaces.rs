//! Which namespaces a container gets: new ones at clone time, existing ones (given by path,
//! e.g. the pod's network namespace file) joined with setns by the child.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::ContainerError;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot open {kind} namespace {path}")]
    Open {
        kind: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join {kind} namespace {path}")]
    Join {
        kind: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create a new cgroup namespace")]
    UnshareCgroup(#[source] nix::Error),
}

fn namespaces(spec: &Spec) -> &[LinuxNamespace] {
    spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or(&[])
}

fn flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Flags for the clone: every requested namespace without a path, except cgroup (created by
/// the child after it joined its cgroups, so its cgroup becomes the namespace root) and time
/// (clone cannot take CLONE_NEWTIME; the init unshares it, see `timens`).
pub(super) fn clone_flags(spec: &Spec) -> Result<CloneFlags, ContainerError> {
    let mut flags = CloneFlags::empty();
    let mut seen = Vec::new();
    for ns in namespaces(spec) {
        if seen.contains(&ns.typ()) {
            return Err(ContainerError::Unsupported(format!("linux.namespaces lists {} twice", ns.typ())));
        }
        seen.push(ns.typ());
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time, _) | (_, Some(_)) => {}
            (kind, None) => flags |= flag(kind),
        }
    }
    if !flags.contains(CloneFlags::CLONE_NEWNS) && !joins(spec, LinuxNamespaceType::Mount) {
        return Err(ContainerError::Unsupported("a container needs a mount namespace".to_string()));
    }
    Ok(flags)
}

/// Whether the spec joins an existing namespace of `kind` by path.
pub(super) fn joins(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    path_of(spec, kind).is_some()
}

/// The path of the existing namespace of `kind` the spec joins.
pub(super) fn path_of(spec: &Spec, kind: LinuxNamespaceType) -> Option<PathBuf> {
    namespaces(spec).iter().find(|ns| ns.typ() == kind).and_then(|ns| ns.path().clone())
}

/// Whether the init must be cloned by an intermediate process that joined the spec's
/// namespaces first (runc's nsexec stages): the namespaces the clone creates must be owned
/// by a joined user namespace, a new user namespace must not keep the init from joining
/// namespaces of the host's (setns needs rights over their owner), and a joined pid
/// namespace only takes the joiner's children.
pub(super) fn needs_staging(spec: &Spec) -> bool {
    let joins_any = namespaces(spec).iter().any(|ns| ns.path().is_some());
    joins(spec, LinuxNamespaceType::User)
        || joins(spec, LinuxNamespaceType::Pid)
        || (creates(spec, LinuxNamespaceType::User) && joins_any)
}

/// Whether the spec asks for a new namespace of `kind`.
pub(super) fn creates(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespaces(spec).iter().any(|ns| ns.typ() == kind && ns.path().is_none())
}

/// Join every namespace given by path: the user namespace first (it gives the rights over
/// the namespaces it owns), the mount namespace last, since its files (the other namespace
/// paths) may not be visible from inside it.
pub(super) fn join_by_path(spec: &Spec) -> Result<(), NamespaceError> {
    let mut to_join: Vec<&LinuxNamespace> = namespaces(spec).iter().filter(|ns| ns.path().is_some()).collect();
    to_join.sort_by_key(|ns| match ns.typ() {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    });
    let opened = to_join
        .iter()
        .map(|ns| {
            let path = ns.path().clone().unwrap_or_default();
            File::open(&path).map(|file| (ns.typ(), path.clone(), file)).map_err(|source| NamespaceError::Open {
                kind: ns.typ().to_string(),
                path,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (kind, path, file) in opened {
        setns(&file, flag(kind)).map_err(|source| NamespaceError::Join { kind: kind.to_string(), path, source })?;
    }
    Ok(())
}

/// A new cgroup namespace, when asked for, rooted at the cgroup the child has just joined.
pub(super) fn unshare_cgroup(spec: &Spec) -> Result<(), NamespaceError> {
    if creates(spec, LinuxNamespaceType::Cgroup) {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(NamespaceError::UnshareCgroup)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder};

    fn spec_with(namespaces: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
        let namespaces: Vec<LinuxNamespace> = namespaces
            .iter()
            .map(|(kind, path)| {
                let mut ns = LinuxNamespaceBuilder::default().typ(*kind);
                if let Some(path) = path {
                    ns = ns.path(*path);
                }
                ns.build().unwrap()
            })
            .collect();
        let mut spec = Spec::default();
        spec.set_linux(Some(LinuxBuilder::default().namespaces(namespaces).build().unwrap()));
        spec
    }

    #[test]
    fn new_namespaces_are_clone_flags_but_cgroup_and_time() {
        use LinuxNamespaceType::*;
        let spec =
            spec_with(&[(Mount, None), (User, None), (Pid, None), (Time, None), (Cgroup, None), (Network, Some("/x"))]);
        let flags = clone_flags(&spec).unwrap();
        assert_eq!(flags, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID);
        let twice = spec_with(&[(Mount, None), (Uts, None), (Uts, None)]);
        assert!(clone_flags(&twice).unwrap_err().to_string().contains("lists uts twice"));
        assert!(clone_flags(&spec_with(&[(Pid, None)])).is_err(), "no mount namespace");
    }

    #[test]
    fn staging_when_a_clone_must_happen_inside_joined_namespaces() {
        use LinuxNamespaceType::*;
        assert!(!needs_staging(&spec_with(&[(Mount, None), (Network, Some("/run/netns/a"))])));
        assert!(!needs_staging(&spec_with(&[(Mount, None), (User, None)])));
        assert!(needs_staging(&spec_with(&[(Mount, None), (User, None), (Network, Some("/run/netns/a"))])));
        assert!(needs_staging(&spec_with(&[(Mount, None), (User, Some("/proc/1/ns/user"))])));
        assert!(needs_staging(&spec_with(&[(Mount, None), (Pid, Some("/proc/1/ns/pid"))])));
    }
}
