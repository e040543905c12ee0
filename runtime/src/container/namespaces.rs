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
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Flags for the clone: every requested namespace without a path, except cgroup (created by
/// the child after it joined its cgroups, so its cgroup becomes the namespace root).
pub(super) fn clone_flags(spec: &Spec) -> Result<CloneFlags, ContainerError> {
    let mut flags = CloneFlags::empty();
    for ns in namespaces(spec) {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::User | LinuxNamespaceType::Time, _) => {
                return Err(ContainerError::Unsupported(format!("{} namespaces are not supported", ns.typ())))
            }
            // Joining a pid namespace with setns only affects children, not the container's
            // init itself.
            (LinuxNamespaceType::Pid, Some(path)) => {
                return Err(ContainerError::Unsupported(format!(
                    "joining pid namespace {} is not supported",
                    path.display()
                )))
            }
            (LinuxNamespaceType::Cgroup, _) | (_, Some(_)) => {}
            (kind, None) => flags |= flag(kind),
        }
    }
    if !flags.contains(CloneFlags::CLONE_NEWNS) && !joins(spec, LinuxNamespaceType::Mount) {
        return Err(ContainerError::Unsupported("a container needs a mount namespace".to_string()));
    }
    Ok(flags)
}

fn joins(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespaces(spec).iter().any(|ns| ns.typ() == kind && ns.path().is_some())
}

/// Whether the spec asks for a new namespace of `kind`.
pub(super) fn creates(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespaces(spec).iter().any(|ns| ns.typ() == kind && ns.path().is_none())
}

/// Join every namespace given by path; the mount namespace last, since its files (the other
/// namespace paths) may not be visible from inside it.
pub(super) fn join_by_path(spec: &Spec) -> Result<(), NamespaceError> {
    let mut to_join: Vec<&LinuxNamespace> = namespaces(spec).iter().filter(|ns| ns.path().is_some()).collect();
    to_join.sort_by_key(|ns| ns.typ() == LinuxNamespaceType::Mount);
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
