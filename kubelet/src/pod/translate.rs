//! The one place where Kubernetes meets OCI: a pod's container, its image configuration and
//! the facts of its sandbox become an `oci_spec::runtime::Spec` (the bundle's config.json).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Capability, LinuxBuilder,
    LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::expand::expand;
use super::ids::{
    ANNOTATION_CONTAINER_NAME, ANNOTATION_POD_NAME, ANNOTATION_POD_NAMESPACE, ANNOTATION_POD_UID,
    ANNOTATION_RESTART_COUNT, ANNOTATION_STOP_SIGNAL,
};
use super::pod_files::{pod_hostname, PodFiles};
use super::quantity::{milli_value, value, QuantityError};
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
    #[error("build oci spec for container {container}")]
    Build {
        container: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
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
    pub netns_path: &'a Path,
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
    let user = container_user(input, image_config.user().as_deref().unwrap_or(""))?;

    let capabilities: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut process_capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities.clone())
        .effective(capabilities.clone())
        .permitted(capabilities)
        .build()
        .map_err(build)?;
    // The builder starts from oci-spec's defaults; containerd sets no ambient/inheritable caps.
    process_capabilities.set_ambient(None);
    process_capabilities.set_inheritable(None);
    let groups = supplemental_groups(input.pod);
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
        .no_new_privileges(false)
        .build()
        .map_err(build)?;
    // No rlimits of our own: containers inherit the monitor's, as with containerd.
    process.set_rlimits(None);

    let namespaces = [
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Network, Some(input.netns_path.to_path_buf())),
    ]
    .into_iter()
    .map(|(typ, path)| {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(path) => builder.path(path).build(),
            None => builder.build(),
        }
    })
    .collect::<Result<Vec<_>, _>>()
    .map_err(build)?;

    let volume_mounts = volume_mounts(input)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(cgroups_path(input))
        .resources(resources(input.container)?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(build)?;
    // As containerd: a volume that receives mounts from the host (rslave) or shares them
    // (rshared) needs the rootfs to propagate the same way.
    let propagations: Vec<&str> = volume_mounts.iter().map(|m| m.propagation).collect();
    if propagations.contains(&"rshared") {
        linux.set_rootfs_propagation(Some("rshared".to_string()));
    } else if propagations.contains(&"rslave") {
        linux.set_rootfs_propagation(Some("rslave".to_string()));
    }

    let mut mounts = get_default_mounts();
    mounts.extend(pod_file_mounts(input.pod_files).map_err(build)?);
    for mount in volume_mounts {
        mounts.push(mount.into_oci().map_err(build)?);
    }

    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(input.rootfs.to_path_buf()).readonly(false).build().map_err(build)?)
        .hostname(pod_hostname(input.pod))
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations(input))
        .build()
        .map_err(build)
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
fn container_user(input: &TranslateInput<'_>, image_user: &str) -> Result<ResolvedUser, TranslateError> {
    let mut user = resolve_image_user(image_user, input.rootfs)
        .map_err(|source| TranslateError::User { container: input.container.name.clone(), source })?;
    let pod_context = input.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let container_context = input.container.security_context.as_ref();
    let run_as_user = container_context.and_then(|c| c.run_as_user).or_else(|| pod_context.and_then(|c| c.run_as_user));
    let run_as_group =
        container_context.and_then(|c| c.run_as_group).or_else(|| pod_context.and_then(|c| c.run_as_group));
    if let Some(uid) = run_as_user.and_then(|u| u32::try_from(u).ok()) {
        user.uid = uid;
    }
    if let Some(gid) = run_as_group.and_then(|g| u32::try_from(g).ok()) {
        user.gid = gid;
    }
    Ok(user)
}

fn supplemental_groups(pod: &Pod) -> Vec<u32> {
    let Some(context) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return Vec::new();
    };
    let mut groups: Vec<u32> = context
        .fs_group
        .into_iter()
        .chain(context.supplemental_groups.iter().flatten().copied())
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
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
    let privileged = input.container.security_context.as_ref().and_then(|c| c.privileged).unwrap_or(false);
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
