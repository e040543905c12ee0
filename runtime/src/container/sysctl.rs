//! `linux.sysctl`: kernel parameters written under /proc/sys from inside the container's
//! namespaces. Only parameters that belong to a namespace the container has of its own can be
//! set, checked as runc checks them, so that no container changes its host.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Namespaced by the IPC namespace, besides every `fs.mqueue.*`.
const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("invalid sysctl key {key:?}")]
    InvalidKey { key: String },
    #[error("sysctl {key:?} is not in a separate kernel namespace")]
    NotNamespaced { key: String },
    #[error("sysctl {key:?} is not allowed in the host's {namespace} namespace")]
    HostNamespace { key: String, namespace: &'static str },
    #[error("sysctl {key:?} is not allowed as it conflicts with the spec's hostname field")]
    Hostname { key: String },
    #[error("cannot tell whether network namespace {path} is the host's")]
    NetnsCheck {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write sysctl {key}={value:?} to {path}")]
    Write {
        key: String,
        value: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write sysctl {key}: {path} is not on procfs")]
    NotProcfs { key: String, path: PathBuf },
}

fn sysctls(spec: &Spec) -> Vec<(&String, &String)> {
    let map: Option<&HashMap<String, String>> = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref());
    let mut pairs: Vec<(&String, &String)> = map.into_iter().flatten().collect();
    pairs.sort(); // the same order, and the same first error, every time
    pairs
}

/// Check every key before anything is written. `is_host_netns` tells whether a network
/// namespace file is the runtime's own (the "host" for a container that joins it).
pub(super) fn validate(spec: &Spec, is_host_netns: impl Fn(&Path) -> std::io::Result<bool>) -> Result<(), SysctlError> {
    for (key, _) in sysctls(spec) {
        relative_path(key)?;
        check_namespaced(spec, key, &is_host_netns)?;
    }
    Ok(())
}

fn check_namespaced(
    spec: &Spec,
    key: &str,
    is_host_netns: &impl Fn(&Path) -> std::io::Result<bool>,
) -> Result<(), SysctlError> {
    let dotted = key.replace('/', ".");
    let host = |namespace| Err(SysctlError::HostNamespace { key: key.to_string(), namespace });
    if IPC_KEYS.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        return if has(spec, LinuxNamespaceType::Ipc) { Ok(()) } else { host("ipc") };
    }
    if dotted.starts_with("net.") {
        let Some(ns) = namespace(spec, LinuxNamespaceType::Network) else {
            return host("network");
        };
        return match ns.path() {
            None => Ok(()),
            Some(path) => match is_host_netns(path) {
                Ok(false) => Ok(()),
                Ok(true) => host("network"),
                Err(source) => Err(SysctlError::NetnsCheck { path: path.clone(), source }),
            },
        };
    }
    match dotted.as_str() {
        "kernel.domainname" if has(spec, LinuxNamespaceType::Uts) => Ok(()),
        "kernel.hostname" if has(spec, LinuxNamespaceType::Uts) => Err(SysctlError::Hostname { key: key.to_string() }),
        _ => Err(SysctlError::NotNamespaced { key: key.to_string() }),
    }
}

fn namespace(spec: &Spec, kind: LinuxNamespaceType) -> Option<&oci_spec::runtime::LinuxNamespace> {
    spec.linux().as_ref()?.namespaces().as_ref()?.iter().find(|ns| ns.typ() == kind)
}

/// A new namespace or one joined by path, as runc counts it.
fn has(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespace(spec, kind).is_some()
}

/// Whether `path` is the network namespace this process is in.
pub(super) fn is_host_netns(path: &Path) -> std::io::Result<bool> {
    let ours = std::fs::metadata("/proc/self/ns/net")?;
    let theirs = std::fs::metadata(path)?;
    Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
}

/// The file under /proc/sys: dots separate the levels, unless the key uses slashes (then dots
/// stay, as in `net/ipv4/conf/eth0.100/forwarding`), as sysctl(8) reads keys.
fn relative_path(key: &str) -> Result<PathBuf, SysctlError> {
    let separator = if key.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = key.split(separator).collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0')) {
        return Err(SysctlError::InvalidKey { key: key.to_string() });
    }
    Ok(parts.iter().collect())
}

/// Write every sysctl under `proc_root`/sys (the container's /proc, after pivot_root and
/// before /proc/sys is made read-only). Run [`validate`] first.
pub(super) fn apply(spec: &Spec, proc_root: &Path) -> Result<(), SysctlError> {
    for (key, value) in sysctls(spec) {
        let path = proc_root.join("sys").join(relative_path(key)?);
        let write_err =
            |source| SysctlError::Write { key: key.clone(), value: value.clone(), path: path.clone(), source };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(write_err)?;
        // A /proc that is not procfs (no proc mount in the spec) would take the write silently.
        let fs = fstatfs(&file).map_err(|e| write_err(e.into()))?;
        if fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(SysctlError::NotProcfs { key: key.clone(), path });
        }
        file.write_all(value.as_bytes()).map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceBuilder, Spec};

    /// The default spec (new pid, network, ipc, uts, mount namespaces) with `sysctl`, and the
    /// namespaces of `kinds` replaced: `Some(path)` joins, `None` drops the namespace.
    fn spec(sysctl: &[(&str, &str)], replace: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        for (kind, path) in replace {
            namespaces.retain(|ns| ns.typ() != *kind);
            if let Some(path) = path {
                namespaces.push(LinuxNamespaceBuilder::default().typ(*kind).path(*path).build().unwrap());
            }
        }
        linux.set_namespaces(Some(namespaces));
        linux.set_sysctl(Some(sysctl.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        spec.set_linux(Some(linux));
        spec
    }

    fn check(spec: &Spec) -> Result<(), String> {
        validate(spec, |path| Ok(path == Path::new("/proc/1/ns/net"))).map_err(|e| e.to_string())
    }

    #[test]
    fn namespaced_keys_pass_in_their_own_namespaces() {
        let keys = [
            ("net.ipv4.ip_forward", "1"),
            ("net/ipv4/conf/eth0.100/forwarding", "1"),
            ("kernel.shmmax", "1000"),
            ("kernel.sem", "250 32000 32 128"),
            ("fs.mqueue.msg_max", "20"),
            ("kernel.domainname", "example.org"),
        ];
        assert_eq!(check(&spec(&keys, &[])), Ok(()));
        let joined = spec(
            &keys,
            &[(LinuxNamespaceType::Network, Some("/run/netns/pod")), (LinuxNamespaceType::Ipc, Some("/x"))],
        );
        assert_eq!(check(&joined), Ok(()));
    }

    #[test]
    fn host_namespaces_are_refused_naming_the_key() {
        let no_netns = spec(&[("net.ipv4.ip_forward", "1")], &[(LinuxNamespaceType::Network, None)]);
        let err = check(&no_netns).unwrap_err();
        assert!(err.contains("\"net.ipv4.ip_forward\"") && err.contains("host's network namespace"), "{err}");
        let host_netns =
            spec(&[("net.core.somaxconn", "10")], &[(LinuxNamespaceType::Network, Some("/proc/1/ns/net"))]);
        assert!(check(&host_netns).unwrap_err().contains("net.core.somaxconn"));
        let no_ipc = spec(&[("kernel.msgmax", "10")], &[(LinuxNamespaceType::Ipc, None)]);
        assert!(check(&no_ipc).unwrap_err().contains("host's ipc namespace"));
    }

    #[test]
    fn keys_of_no_namespace_are_refused() {
        for key in ["vm.swappiness", "kernel.panic", "kernel.shm_next_id_typo", "fs.file-max"] {
            let err = check(&spec(&[(key, "1")], &[])).unwrap_err();
            assert_eq!(err, format!("sysctl \"{key}\" is not in a separate kernel namespace"));
        }
        let err = check(&spec(&[("kernel.hostname", "x")], &[])).unwrap_err();
        assert!(err.contains("conflicts with the spec's hostname"), "{err}");
    }

    #[test]
    fn keys_cannot_leave_proc_sys() {
        for key in ["net/../../../etc/passwd", "net..ipv4", "net.ipv4.", "/net/ipv4/ip_forward", ""] {
            let err = check(&spec(&[(key, "1")], &[])).unwrap_err();
            assert!(err.starts_with("invalid sysctl key"), "{key}: {err}");
        }
        assert_eq!(relative_path("net.ipv4.ip_forward").unwrap(), Path::new("net/ipv4/ip_forward"));
        assert_eq!(
            relative_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            Path::new("net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn writes_refuse_a_proc_that_is_not_procfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/net/ipv4")).unwrap();
        std::fs::write(dir.path().join("sys/net/ipv4/ip_forward"), "0").unwrap();
        let err = apply(&spec(&[("net.ipv4.ip_forward", "1")], &[]), dir.path()).unwrap_err();
        assert!(matches!(err, SysctlError::NotProcfs { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("sys/net/ipv4/ip_forward")).unwrap(), "0");
    }
}
