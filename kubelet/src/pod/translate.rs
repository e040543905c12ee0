//! The one place where Kubernetes meets OCI: a pod's container, its image configuration and
//! the facts of its sandbox become an `oci_spec::runtime::Spec` (the bundle's config.json).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    get_default_mounts, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::expand::expand;
use super::host_devices::{host_devices, HostDevicesError};
use super::ids::{
    ANNOTATION_CONTAINER_NAME, ANNOTATION_POD_NAME, ANNOTATION_POD_NAMESPACE, ANNOTATION_POD_UID,
    ANNOTATION_RESTART_COUNT, ANNOTATION_STOP_SIGNAL,
};
use super::image_groups::member_groups;
use super::pod_files::{is_host_network, kernel_hostname, HostnameError, PodFiles};
use super::quantity::{milli_value, value, QuantityError};
use super::security_context::{
    capabilities, current_capabilities, proc_paths, seccomp, verify_run_as_non_root, EffectiveSecurity,
    SeccompSettings, SecurityError,
};
use super::user::{resolve_image_user, ResolvedUser, UserError};
use super::volumes::HostVolumes;

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("container {container} has no command: neither the pod nor the image gives one")]
    NoCommand { container: String },
    #[error("container {container}: resource {resource}")]
    Quantity {
        container: String,
        resource: &'static str,
        #[source]
        source: QuantityError,
    },
    #[error("container {container}")]
    User {
        container: String,
        #[source]
        source: UserError,
    },
    #[error("container {container}: volumeMount {mount_path:?} names volume {volume:?}, which the pod does not have or nodelet cannot mount")]
    UnknownVolume { container: String, mount_path: String, volume: String },
    #[error("container {container}: volumeMount {mount_path:?}: subPath was not prepared")]
    SubPathNotPrepared { container: String, mount_path: String },
    #[error("container {container}: volumeMount {mount_path:?}: invalid mountPropagation {mode:?}")]
    Propagation { container: String, mount_path: String, mode: String },
    #[error("container {container}: volumeMount {mount_path:?}: Bidirectional mount propagation is available only to privileged containers")]
    BidirectionalNotPrivileged { container: String, mount_path: String },
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Hostname(#[from] HostnameError),
    #[error("container {container}: the host devices of a privileged container")]
    Devices {
        container: String,
        #[source]
        source: HostDevicesError,
    },
    #[error("build oci spec for container {container}")]
    Build {
        container: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

impl TranslateError {
    /// The container's waiting reason, as kubelet reports the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            TranslateError::Security(error) => error.reason(),
            TranslateError::Devices { .. } => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

/// The capabilities containerd (and so kubelet) grants a container by default.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// cgroup v1 cpu.cfs_period_us kubelet uses.
const CPU_PERIOD_US: u64 = 100_000;
/// kubelet's floor for cpu.shares and for the CFS quota.
const MIN_CPU_SHARES: u64 = 2;
const MIN_CPU_QUOTA_US: i64 = 1000;

/// Everything translation needs about one container attempt.
pub struct TranslateInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfiguration,
    /// The mounted root filesystem (its /etc/passwd resolves user names).
    pub rootfs: &'a Path,
    /// The sandbox's network namespace (unused for a host-network pod).
    pub netns_path: &'a Path,
    /// The node's cluster domain, for a pod's FQDN.
    pub cluster_domain: Option<&'a str>,
    /// Where Localhost seccomp profiles live, and the default when none is set.
    pub seccomp: &'a SeccompSettings,
    pub pod_files: &'a PodFiles,
    /// Parent of all pod cgroups, like "/nodelet".
    pub cgroup_root: &'a str,
    pub attempt: u32,
    /// The container's own variables, resolved by [`super::env::resolve_env`], in order.
    pub env: &'a [(String, String)],
    /// The pod's volumes on the host, by name.
    pub volumes: &'a HostVolumes,
    /// The prepared source of each volumeMount with a subPath, by its index in volumeMounts.
    pub subpaths: &'a BTreeMap<usize, PathBuf>,
}

pub fn container_spec(input: &TranslateInput<'_>) -> Result<Spec, TranslateError> {
    let name = input.container.name.clone();
    let build = |source| TranslateError::Build { container: name.clone(), source };
    let image_config = input.image.config().clone().unwrap_or_default();

    let env = environment(input.env, image_config.env().as_deref().unwrap_or(&[]));
    let container_vars: HashMap<String, String> = input.env.iter().cloned().collect();
    let args = process_args(input.container, &image_config, &container_vars)?;
    let cwd = input
        .container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image_config.working_dir().clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let image_user = image_config.user().as_deref().unwrap_or("");
    let security = EffectiveSecurity::of(input.pod, input.container);
    verify_run_as_non_root(&security, input.pod, &name, image_user)?;
    let user = container_user(input, &security, image_user)?;

    let capabilities = capabilities(&security, &current_capabilities()?, &name)?;
    let seccomp = seccomp(&security, input.seccomp, &capabilities, &name)?;
    let mut process_capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .build()
        .map_err(build)?;
    // The builder starts from oci-spec's defaults; containerd sets no ambient/inheritable caps.
    process_capabilities.set_ambient(None);
    process_capabilities.set_inheritable(None);
    let groups = process_groups(input, &security, &user, image_user);
    let mut process_user = UserBuilder::default().uid(user.uid).gid(user.gid).build().map_err(build)?;
    if !groups.is_empty() {
        process_user.set_additional_gids(Some(groups));
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(process_user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(process_capabilities)
        .no_new_privileges(security.no_new_privileges())
        .build()
        .map_err(build)?;
    // No rlimits of our own: containers inherit the monitor's, as with containerd.
    process.set_rlimits(None);

    let volume_mounts = volume_mounts(input)?;
    let (masked_paths, readonly_paths) = proc_paths(&security);
    let mut resources = resources(input.container)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input).map_err(build)?)
        .cgroups_path(cgroups_path(input))
        .masked_paths(masked_paths)
        .readonly_paths(readonly_paths)
        .build()
        .map_err(build)?;
    linux.set_seccomp(seccomp);
    if security.privileged() {
        // Every host device, and the device cgroup open to all, as containerd does.
        let devices = host_devices(Path::new("/dev"))
            .map_err(|source| TranslateError::Devices { container: name.clone(), source })?;
        linux.set_devices(Some(devices));
        let mut allow_all = LinuxDeviceCgroup::default();
        allow_all.set_allow(true);
        allow_all.set_access(Some("rwm".to_string()));
        resources.set_devices(Some(vec![allow_all]));
    }
    linux.set_resources(Some(resources));
    // As containerd: a volume that receives mounts from the host (rslave) or shares them
    // (rshared) needs the rootfs to propagate the same way.
    let propagations: Vec<&str> = volume_mounts.iter().map(|m| m.propagation).collect();
    if propagations.contains(&"rshared") {
        linux.set_rootfs_propagation(Some("rshared".to_string()));
    } else if propagations.contains(&"rslave") {
        linux.set_rootfs_propagation(Some("rslave".to_string()));
    }

    let mut mounts = get_default_mounts();
    if security.privileged() {
        writable_sysfs(&mut mounts);
    }
    mounts.extend(pod_file_mounts(input.pod_files).map_err(build)?);
    for mount in volume_mounts {
        mounts.push(mount.into_oci().map_err(build)?);
    }

    let root = RootBuilder::default()
        .path(input.rootfs.to_path_buf())
        .readonly(security.read_only_root())
        .build()
        .map_err(build)?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations(input))
        .build()
        .map_err(build)?;
    // A host-network pod shares the node's UTS namespace and so its hostname.
    let hostname = match is_host_network(input.pod) {
        true => None,
        false => Some(kernel_hostname(input.pod, input.cluster_domain)?),
    };
    spec.set_hostname(hostname);
    Ok(spec)
}

/// New pid, ipc, uts, mount and network namespaces, except those the pod shares with the host:
/// hostPID, hostIPC, hostNetwork (which also keeps the host's hostname).
fn namespaces(input: &TranslateInput<'_>) -> Result<Vec<LinuxNamespace>, oci_spec::OciSpecError> {
    let spec = input.pod.spec.as_ref();
    let host_pid = spec.and_then(|s| s.host_pid) == Some(true);
    let host_ipc = spec.and_then(|s| s.host_ipc) == Some(true);
    let host_network = is_host_network(input.pod);
    let mut namespaces = Vec::new();
    let mut add = |typ, path: Option<&Path>| -> Result<(), oci_spec::OciSpecError> {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        namespaces.push(match path {
            Some(path) => builder.path(path.to_path_buf()).build()?,
            None => builder.build()?,
        });
        Ok(())
    };
    if !host_pid {
        add(LinuxNamespaceType::Pid, None)?;
    }
    if !host_ipc {
        add(LinuxNamespaceType::Ipc, None)?;
    }
    if !host_network {
        add(LinuxNamespaceType::Uts, None)?;
    }
    add(LinuxNamespaceType::Mount, None)?;
    if !host_network {
        add(LinuxNamespaceType::Network, Some(input.netns_path))?;
    }
    Ok(namespaces)
}

/// A privileged container gets /sys and its cgroups read-write.
fn writable_sysfs(mounts: &mut [Mount]) {
    for mount in mounts {
        let system = matches!(mount.destination().to_str(), Some("/sys" | "/sys/fs/cgroup"));
        if let (true, Some(options)) = (system, mount.options().clone()) {
            let options = options.into_iter().map(|o| if o == "ro" { "rw".to_string() } else { o }).collect();
            mount.set_options(Some(options));
        }
    }
}

/// Image env first, then the container's variables, replacing by name.
fn environment(container_env: &[(String, String)], image_env: &[String]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut set = |name: String, value: String| {
        if !values.contains_key(&name) {
            order.push(name.clone());
        }
        values.insert(name, value);
    };
    for entry in image_env {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(name.to_string(), value.to_string());
    }
    for (name, value) in container_env {
        set(name.clone(), value.clone());
    }
    order
        .into_iter()
        .map(|name| {
            let value = values.get(&name).cloned().unwrap_or_default();
            format!("{name}={value}")
        })
        .collect()
}

/// Kubernetes' rules: `command` replaces the entrypoint (and drops the image cmd), `args`
/// replaces the cmd; both are expanded against the container's env.
fn process_args(
    container: &Container,
    image: &oci_spec::image::Config,
    vars: &HashMap<String, String>,
) -> Result<Vec<String>, TranslateError> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let expand_all = |list: Vec<String>| -> Vec<String> { list.iter().map(|s| expand(s, vars)).collect() };
    let mut out =
        if !command.is_empty() { expand_all(command) } else { image.entrypoint().clone().unwrap_or_default() };
    if !args.is_empty() {
        out.extend(expand_all(args));
    } else if container.command.as_ref().is_none_or(Vec::is_empty) {
        out.extend(image.cmd().clone().unwrap_or_default());
    }
    if out.is_empty() {
        return Err(TranslateError::NoCommand { container: container.name.clone() });
    }
    Ok(out)
}

/// Image user, then the pod's and the container's securityContext runAsUser/runAsGroup.
fn container_user(
    input: &TranslateInput<'_>,
    security: &EffectiveSecurity<'_>,
    image_user: &str,
) -> Result<ResolvedUser, TranslateError> {
    let mut user = resolve_image_user(image_user, input.rootfs)
        .map_err(|source| TranslateError::User { container: input.container.name.clone(), source })?;
    if let Some(uid) = security.run_as_user().and_then(|u| u32::try_from(u).ok()) {
        user.uid = uid;
    }
    if let Some(gid) = security.run_as_group().and_then(|g| u32::try_from(g).ok()) {
        user.gid = gid;
    }
    Ok(user)
}

/// containerd's supplementary groups: the primary group, the groups of the image's /etc/group
/// that list the user, then the pod's supplementalGroups and fsGroup.
fn process_groups(
    input: &TranslateInput<'_>,
    security: &EffectiveSecurity<'_>,
    user: &ResolvedUser,
    image_user: &str,
) -> Vec<u32> {
    let image_name = image_user.split(':').next().filter(|n| !n.is_empty() && n.parse::<u32>().is_err());
    let name = image_name.filter(|_| security.run_as_user().is_none());
    let mut groups = vec![user.gid];
    groups.extend(member_groups(input.rootfs, user.uid, name));
    groups.extend(security.supplemental_groups());
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// "<cgroup_root>/kubepods/pod<uid>/<container-name>".
fn cgroups_path(input: &TranslateInput<'_>) -> PathBuf {
    let uid = input.pod.metadata.uid.as_deref().unwrap_or_default();
    let root = input.cgroup_root.trim_end_matches('/');
    PathBuf::from(format!("{root}/kubepods/pod{uid}/{}", input.container.name))
}

/// cpu shares from requests.cpu (limits.cpu when no request), CFS quota from limits.cpu,
/// memory limit from limits.memory: kubelet's formulas.
fn resources(container: &Container) -> Result<oci_spec::runtime::LinuxResources, TranslateError> {
    let requirements = container.resources.clone().unwrap_or_default();
    let requests = requirements.requests.unwrap_or_default();
    let limits = requirements.limits.unwrap_or_default();
    let parse = |resource: &'static str, quantity, f: fn(_) -> Result<i128, QuantityError>| {
        f(quantity).map_err(|source| TranslateError::Quantity { container: container.name.clone(), resource, source })
    };
    let cpu_request = requests.get("cpu").or_else(|| limits.get("cpu"));
    let cpu_request_milli = match cpu_request {
        Some(q) => parse("requests.cpu", q, milli_value)?,
        None => 0,
    };
    let shares = u64::try_from(cpu_request_milli * 1024 / 1000).unwrap_or(0).max(MIN_CPU_SHARES);
    let build_error = |source| TranslateError::Build { container: container.name.clone(), source };
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(limit) = limits.get("cpu") {
        let milli = parse("limits.cpu", limit, milli_value)?;
        let quota = i64::try_from(milli * i128::from(CPU_PERIOD_US) / 1000).unwrap_or(i64::MAX).max(MIN_CPU_QUOTA_US);
        cpu = cpu.quota(quota).period(CPU_PERIOD_US);
    }
    let mut builder = LinuxResourcesBuilder::default().cpu(cpu.build().map_err(build_error)?);
    if let Some(limit) = limits.get("memory") {
        let bytes = i64::try_from(parse("limits.memory", limit, value)?).unwrap_or(i64::MAX);
        builder = builder.memory(LinuxMemoryBuilder::default().limit(bytes).build().map_err(build_error)?);
    }
    builder.build().map_err(build_error)
}

fn pod_file_mounts(files: &PodFiles) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    [("/etc/hosts", &files.hosts), ("/etc/hostname", &files.hostname), ("/etc/resolv.conf", &files.resolv_conf)]
        .into_iter()
        .map(|(destination, source)| {
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source.clone())
                .options(vec!["rbind".to_string(), "rprivate".to_string(), "rw".to_string()])
                .build()
        })
        .collect()
}

/// One volumeMount, resolved to its host source.
struct VolumeBind {
    source: PathBuf,
    destination: String,
    read_only: bool,
    propagation: &'static str,
}

impl VolumeBind {
    fn into_oci(self) -> Result<Mount, oci_spec::OciSpecError> {
        let access = if self.read_only { "ro" } else { "rw" };
        MountBuilder::default()
            .destination(self.destination)
            .typ("bind")
            .source(self.source)
            .options(vec!["rbind".to_string(), self.propagation.to_string(), access.to_string()])
            .build()
    }
}

/// The container's volumeMounts as bind mounts, parents before children (containerd sorts
/// them by depth). Volumes of configMaps, secrets, the downward API and projections are always
/// read-only, as kubelet mounts them.
fn volume_mounts(input: &TranslateInput<'_>) -> Result<Vec<VolumeBind>, TranslateError> {
    let container = &input.container.name;
    let privileged = EffectiveSecurity::of(input.pod, input.container).privileged();
    let mut binds = Vec::new();
    for (index, mount) in input.container.volume_mounts.iter().flatten().enumerate() {
        let unknown = || TranslateError::UnknownVolume {
            container: container.clone(),
            mount_path: mount.mount_path.clone(),
            volume: mount.name.clone(),
        };
        let volume = input.volumes.get(&mount.name).ok_or_else(unknown)?;
        let source = if has_sub_path(mount) {
            input.subpaths.get(&index).cloned().ok_or_else(|| TranslateError::SubPathNotPrepared {
                container: container.clone(),
                mount_path: mount.mount_path.clone(),
            })?
        } else {
            volume.path.clone()
        };
        let propagation = match mount.mount_propagation.as_deref().unwrap_or("None") {
            "None" | "" => "rprivate",
            "HostToContainer" => "rslave",
            "Bidirectional" if privileged => "rshared",
            "Bidirectional" => {
                return Err(TranslateError::BidirectionalNotPrivileged {
                    container: container.clone(),
                    mount_path: mount.mount_path.clone(),
                })
            }
            other => {
                return Err(TranslateError::Propagation {
                    container: container.clone(),
                    mount_path: mount.mount_path.clone(),
                    mode: other.to_string(),
                })
            }
        };
        binds.push(VolumeBind {
            source,
            destination: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false) || volume.read_only,
            propagation,
        });
    }
    binds.sort_by_key(|b| Path::new(&b.destination).components().count());
    Ok(binds)
}

/// Whether the mount uses subPath or subPathExpr.
pub fn has_sub_path(mount: &VolumeMount) -> bool {
    mount.sub_path.as_deref().is_some_and(|p| !p.is_empty())
        || mount.sub_path_expr.as_deref().is_some_and(|p| !p.is_empty())
}

fn annotations(input: &TranslateInput<'_>) -> HashMap<String, String> {
    let meta = &input.pod.metadata;
    [
        (ANNOTATION_POD_UID, meta.uid.clone().unwrap_or_default()),
        (ANNOTATION_POD_NAME, meta.name.clone().unwrap_or_default()),
        (ANNOTATION_POD_NAMESPACE, meta.namespace.clone().unwrap_or_default()),
        (ANNOTATION_CONTAINER_NAME, input.container.name.clone()),
        (ANNOTATION_RESTART_COUNT, input.attempt.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(
        input
            .image
            .config()
            .as_ref()
            .and_then(|config| config.stop_signal().clone())
            .map(|signal| (ANNOTATION_STOP_SIGNAL.to_string(), signal)),
    )
    .collect()
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
