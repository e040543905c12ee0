//! Time namespaces and `linux.timeOffsets`. A time namespace made by unshare holds only the
//! caller's future children, and its offsets can be written until the first process enters
//! it. The init does what runc 1.2's nsexec does before it forks the container process:
//! unshare it and write the offsets; then, instead of forking, it enters the namespace itself
//! through /proc/self/ns/time_for_children (a single-threaded process may).

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxTimeOffset, Spec};

use super::namespaces;

const OFFSETS_FILE: &str = "/proc/self/timens_offsets";
const CHILDREN_NS: &str = "/proc/self/ns/time_for_children";

#[derive(Debug, thiserror::Error)]
pub enum TimensError {
    #[error("linux.timeOffsets is set but linux.namespaces has no time namespace")]
    OffsetsWithoutNamespace,
    #[error("linux.timeOffsets cannot change the existing time namespace {path}")]
    OffsetsOnJoined { path: PathBuf },
    #[error("linux.timeOffsets has unknown clock {0:?} (monotonic and boottime only)")]
    UnknownClock(String),
    #[error("cannot create a new time namespace")]
    Unshare(#[source] nix::Error),
    #[error("cannot write {OFFSETS_FILE}")]
    WriteOffsets(#[source] std::io::Error),
    #[error("cannot change whether the init is dumpable")]
    Dumpable(#[source] nix::Error),
    #[error("cannot enter the new time namespace through {CHILDREN_NS}")]
    Enter(#[source] nix::Error),
    #[error("cannot open {CHILDREN_NS}")]
    Open(#[source] std::io::Error),
}

fn time_flag() -> CloneFlags {
    CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)
}

fn offsets(spec: &Spec) -> Option<&std::collections::HashMap<String, LinuxTimeOffset>> {
    spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref())
}

/// runc's rules: offsets need a new time namespace, and only name the clocks a time
/// namespace offsets.
pub(super) fn validate(spec: &Spec) -> Result<(), TimensError> {
    let Some(offsets) = offsets(spec) else {
        return Ok(());
    };
    if let Some(path) = namespaces::path_of(spec, LinuxNamespaceType::Time) {
        return Err(TimensError::OffsetsOnJoined { path });
    }
    if !namespaces::creates(spec, LinuxNamespaceType::Time) {
        return Err(TimensError::OffsetsWithoutNamespace);
    }
    if let Some(clock) = offsets.keys().find(|c| !matches!(c.as_str(), "monotonic" | "boottime")) {
        return Err(TimensError::UnknownClock(clock.clone()));
    }
    Ok(())
}

/// The kernel's format: "<clock> <secs> <nanosecs>" per line.
fn offsets_text(offsets: &std::collections::HashMap<String, LinuxTimeOffset>) -> String {
    let mut clocks: Vec<_> = offsets.iter().collect();
    clocks.sort_by_key(|(name, _)| name.as_str());
    clocks
        .into_iter()
        .map(|(name, o)| format!("{name} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)))
        .collect()
}

/// After the change of uid in a user namespace we are not dumpable, so our /proc files belong
/// to the host's root: dumpable for the write only (runc does the same for its id maps).
fn write_offsets(text: &str) -> Result<(), TimensError> {
    let dumpable = nix::sys::prctl::get_dumpable().map_err(TimensError::Dumpable)?;
    if !dumpable {
        nix::sys::prctl::set_dumpable(true).map_err(TimensError::Dumpable)?;
    }
    let written = std::fs::write(OFFSETS_FILE, text).map_err(TimensError::WriteOffsets);
    if !dumpable {
        nix::sys::prctl::set_dumpable(false).map_err(TimensError::Dumpable)?;
    }
    written
}

/// A new time namespace with the spec's offsets, entered by this process, when asked for.
pub(super) fn enter_new(spec: &Spec) -> Result<(), TimensError> {
    if !namespaces::creates(spec, LinuxNamespaceType::Time) {
        return Ok(());
    }
    unshare(time_flag()).map_err(TimensError::Unshare)?;
    if let Some(offsets) = offsets(spec).filter(|o| !o.is_empty()) {
        write_offsets(&offsets_text(offsets))?;
    }
    let ns = File::open(CHILDREN_NS).map_err(TimensError::Open)?;
    setns(&ns, time_flag()).map_err(TimensError::Enter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxTimeOffsetBuilder};

    fn spec_with(time: Option<Option<&str>>, clocks: &[(&str, i64)]) -> Spec {
        let mut namespaces = Vec::new();
        if let Some(path) = time {
            let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Time);
            if let Some(path) = path {
                ns = ns.path(path);
            }
            namespaces.push(ns.build().unwrap());
        }
        let offsets: std::collections::HashMap<String, LinuxTimeOffset> = clocks
            .iter()
            .map(|(c, s)| (c.to_string(), LinuxTimeOffsetBuilder::default().secs(*s).nanosecs(5u32).build().unwrap()))
            .collect();
        let mut spec = Spec::default();
        spec.set_linux(Some(LinuxBuilder::default().namespaces(namespaces).time_offsets(offsets).build().unwrap()));
        spec
    }

    #[test]
    fn offsets_need_a_new_time_namespace() {
        let err = validate(&spec_with(None, &[("boottime", 10)])).unwrap_err();
        assert_eq!(err.to_string(), "linux.timeOffsets is set but linux.namespaces has no time namespace");
        let err = validate(&spec_with(Some(Some("/proc/1/ns/time")), &[("boottime", 10)])).unwrap_err();
        assert!(matches!(err, TimensError::OffsetsOnJoined { .. }), "{err}");
        let err = validate(&spec_with(Some(None), &[("realtime", 10)])).unwrap_err();
        assert!(err.to_string().contains("\"realtime\""), "{err}");
        assert!(validate(&spec_with(Some(None), &[("boottime", 10), ("monotonic", -3)])).is_ok());
    }

    #[test]
    fn offsets_in_the_kernels_format() {
        let spec = spec_with(Some(None), &[("monotonic", -3), ("boottime", 86400)]);
        assert_eq!(offsets_text(offsets(&spec).unwrap()), "boottime 86400 5\nmonotonic -3 5\n");
    }
}
