//! A container's securityContext, merged with its pod's (the container's fields win), and what
//! it means in OCI terms as kubelet and containerd decide it: the runAsNonRoot check,
//! capabilities, masked and read-only /proc paths, seccomp.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext};
use oci_spec::runtime::{Capability, LinuxSeccomp};

use super::seccomp_default::runtime_default_profile;
use super::translate::DEFAULT_CAPABILITIES;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})"
    )]
    NonNumericUser { user: String, pod: String, container: String },
    #[error("container {container}: unknown capability {name:?}")]
    UnknownCapability { container: String, name: String },
    #[error("container {container}: seccompProfile of type Localhost needs a localhostProfile")]
    LocalhostWithoutPath { container: String },
    #[error("container {container}: seccompProfile localhostProfile {path:?} must be a relative path without \"..\"")]
    LocalhostOutsideRoot { container: String, path: String },
    #[error("container {container}: unknown seccompProfile type {kind:?}")]
    SeccompType { container: String, kind: String },
    #[error("failed to generate seccomp spec opts: cannot load seccomp profile {path:?}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read the agent's capabilities from {path}")]
    CurrentCapabilities {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate seccomp spec opts: decoding seccomp profile {path:?} failed")]
    ParseProfile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl SecurityError {
    /// The container's waiting reason: kubelet refuses what it checks itself
    /// (CreateContainerConfigError); the runtime refuses profiles and capabilities it cannot
    /// apply (CreateContainerError).
    pub fn reason(&self) -> &'static str {
        match self {
            SecurityError::RunAsUserIsRoot { .. }
            | SecurityError::ImageRunsAsRoot { .. }
            | SecurityError::NonNumericUser { .. } => "CreateContainerConfigError",
            _ => "CreateContainerError",
        }
    }
}

/// How seccomp is chosen when a pod says nothing: kubelet's seccompDefault, and where
/// Localhost profiles live (`<root-dir>/seccomp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompSettings {
    pub root: PathBuf,
    /// `seccompDefault: true`: RuntimeDefault instead of Unconfined when nothing is set.
    pub default_runtime: bool,
}

/// The pod's and the container's securityContext, read as one.
#[derive(Clone, Copy)]
pub struct EffectiveSecurity<'a> {
    pod: Option<&'a PodSecurityContext>,
    container: Option<&'a SecurityContext>,
}

impl<'a> EffectiveSecurity<'a> {
    pub fn of(pod: &'a Pod, container: &'a Container) -> EffectiveSecurity<'a> {
        EffectiveSecurity {
            pod: pod.spec.as_ref().and_then(|s| s.security_context.as_ref()),
            container: container.security_context.as_ref(),
        }
    }

    pub fn run_as_user(&self) -> Option<i64> {
        self.container.and_then(|c| c.run_as_user).or_else(|| self.pod.and_then(|p| p.run_as_user))
    }

    pub fn run_as_group(&self) -> Option<i64> {
        self.container.and_then(|c| c.run_as_group).or_else(|| self.pod.and_then(|p| p.run_as_group))
    }

    fn run_as_non_root(&self) -> bool {
        self.container.and_then(|c| c.run_as_non_root).or_else(|| self.pod.and_then(|p| p.run_as_non_root))
            == Some(true)
    }

    pub fn privileged(&self) -> bool {
        self.container.and_then(|c| c.privileged) == Some(true)
    }

    pub fn read_only_root(&self) -> bool {
        self.container.and_then(|c| c.read_only_root_filesystem) == Some(true)
    }

    /// kubelet's AddNoNewPrivileges: only an explicit `allowPrivilegeEscalation: false`.
    pub fn no_new_privileges(&self) -> bool {
        self.container.and_then(|c| c.allow_privilege_escalation) == Some(false)
    }

    /// `procMount: Unmasked` leaves /proc as the host shows it.
    pub fn proc_unmasked(&self) -> bool {
        self.container.and_then(|c| c.proc_mount.as_deref()) == Some("Unmasked")
    }

    /// The pod's supplementalGroups and its fsGroup, as kubelet passes them on.
    pub fn supplemental_groups(&self) -> Vec<u32> {
        let Some(pod) = self.pod else { return Vec::new() };
        pod.supplemental_groups
            .iter()
            .flatten()
            .copied()
            .chain(pod.fs_group)
            .filter_map(|g| u32::try_from(g).ok())
            .collect()
    }

    fn seccomp_profile(&self) -> Option<&'a SeccompProfile> {
        self.container
            .and_then(|c| c.seccomp_profile.as_ref())
            .or_else(|| self.pod.and_then(|p| p.seccomp_profile.as_ref()))
    }
}

/// kubelet's format.Pod: "name_namespace(uid)".
pub fn pod_label(pod: &Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    )
}

/// kubelet's verifyRunAsNonRoot, with the image's `User` as the runtime reports it.
pub fn verify_run_as_non_root(
    security: &EffectiveSecurity<'_>,
    pod: &Pod,
    container: &str,
    image_user: &str,
) -> Result<(), SecurityError> {
    if !security.run_as_non_root() {
        return Ok(());
    }
    let (pod, container) = (pod_label(pod), container.to_string());
    if let Some(uid) = security.run_as_user() {
        return if uid == 0 { Err(SecurityError::RunAsUserIsRoot { pod, container }) } else { Ok(()) };
    }
    // The runtime's image status: the user part of "user[:group]", numeric or a name.
    let user = image_user.trim().split(':').next().unwrap_or_default();
    match user.parse::<i64>() {
        _ if user.is_empty() => Err(SecurityError::ImageRunsAsRoot { pod, container }),
        Ok(0) => Err(SecurityError::ImageRunsAsRoot { pod, container }),
        Ok(_) => Ok(()),
        Err(_) => Err(SecurityError::NonNumericUser { user: user.to_string(), pod, container }),
    }
}

/// Capabilities by their kernel number (CAP_CHOWN is 0).
const BY_NUMBER: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities of a bit mask as /proc/<pid>/status shows them (CapEff).
pub fn capabilities_of_mask(mask: u64) -> HashSet<Capability> {
    BY_NUMBER.iter().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, cap)| *cap).collect()
}

/// What "all capabilities" means here, as containerd's cap.Current: the agent's own
/// effective set, which the runtime it starts inherits.
pub fn current_capabilities() -> Result<HashSet<Capability>, SecurityError> {
    let path = Path::new("/proc/self/status");
    let status = std::fs::read_to_string(path)
        .map_err(|source| SecurityError::CurrentCapabilities { path: path.to_path_buf(), source })?;
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    Ok(capabilities_of_mask(mask))
}

/// containerd's order: all when privileged; otherwise the defaults, then "ALL" in add, "ALL"
/// in drop, the other adds, the other drops.
/// `all` is the set a privileged container or "ALL" gets: [`current_capabilities`].
pub fn capabilities(
    security: &EffectiveSecurity<'_>,
    all: &HashSet<Capability>,
    container: &str,
) -> Result<HashSet<Capability>, SecurityError> {
    if security.privileged() {
        return Ok(all.clone());
    }
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let Some(requested) = security.container.and_then(|c| c.capabilities.as_ref()) else {
        return Ok(set);
    };
    let add = requested.add.as_deref().unwrap_or_default();
    let drop = requested.drop.as_deref().unwrap_or_default();
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    if add.iter().any(is_all) {
        set = all.clone();
    }
    if drop.iter().any(is_all) {
        set.clear();
    }
    for name in add.iter().filter(|n| !is_all(n)) {
        set.insert(parse_capability(name, container)?);
    }
    for name in drop.iter().filter(|n| !is_all(n)) {
        set.remove(&parse_capability(name, container)?);
    }
    Ok(set)
}

/// "NET_ADMIN", also written "net_admin" or "CAP_NET_ADMIN".
fn parse_capability(name: &str, container: &str) -> Result<Capability, SecurityError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse()
        .map_err(|_| SecurityError::UnknownCapability { container: container.to_string(), name: name.to_string() })
}

/// containerd's masked paths.
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's read-only paths.
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Masked and read-only paths: none for privileged containers and `procMount: Unmasked`.
pub fn proc_paths(security: &EffectiveSecurity<'_>) -> (Vec<String>, Vec<String>) {
    if security.privileged() || security.proc_unmasked() {
        return (Vec::new(), Vec::new());
    }
    let owned = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect();
    (owned(&MASKED_PATHS), owned(&READONLY_PATHS))
}

/// The container's seccomp filter: none when privileged or Unconfined, containerd's default
/// for RuntimeDefault, the file under the seccomp root for Localhost.
pub fn seccomp(
    security: &EffectiveSecurity<'_>,
    settings: &SeccompSettings,
    bounding: &HashSet<Capability>,
    container: &str,
) -> Result<Option<LinuxSeccomp>, SecurityError> {
    if security.privileged() {
        return Ok(None);
    }
    let Some(profile) = security.seccomp_profile() else {
        return Ok(settings.default_runtime.then(|| runtime_default_profile(bounding)));
    };
    match profile.type_.as_str() {
        "Unconfined" => Ok(None),
        "RuntimeDefault" => Ok(Some(runtime_default_profile(bounding))),
        "Localhost" => {
            let relative = profile
                .localhost_profile
                .as_deref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| SecurityError::LocalhostWithoutPath { container: container.to_string() })?;
            load_localhost(&settings.root, relative, container).map(Some)
        }
        other => Err(SecurityError::SeccompType { container: container.to_string(), kind: other.to_string() }),
    }
}

fn load_localhost(root: &Path, relative: &str, container: &str) -> Result<LinuxSeccomp, SecurityError> {
    let escapes = Path::new(relative)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if escapes {
        return Err(SecurityError::LocalhostOutsideRoot {
            container: container.to_string(),
            path: relative.to_string(),
        });
    }
    let path = root.join(relative);
    let text = std::fs::read(&path).map_err(|source| SecurityError::ReadProfile { path: path.clone(), source })?;
    serde_json::from_slice(&text).map_err(|source| SecurityError::ParseProfile { path, source })
}

#[cfg(test)]
#[path = "security_context_tests.rs"]
mod tests;
