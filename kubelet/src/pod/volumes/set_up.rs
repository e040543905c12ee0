//! Setting up one volume of each kind: the directory or tmpfs, the type check of a hostPath,
//! and the files of configMap, secret, downwardAPI and projected volumes (their sources read,
//! their payload written atomically).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource};

use super::atomic_writer::{write_payload, FileProjection, Payload};
use super::host_path::check_type;
use super::mount_points::mount_tmpfs;
use super::payload::{downward_payload, key_payload, KeySource, DEFAULT_MODE};
use super::{Source, VolumeContext, VolumeError};
use crate::pod::quantity::value;
use crate::pod::referenced_objects::ObjectKind;
use crate::pod::service_account_token::{TokenWanted, DEFAULT_EXPIRATION_SECONDS};

/// What setting up one volume does on the host once its sources are read: blocking work
/// (writes, chown, mount(2), mountinfo), run off the async threads.
pub(super) enum HostWork {
    /// A directory, on a tmpfs (of `size` bytes, unlimited when None) when memory-backed.
    EmptyDir {
        memory: bool,
        size: Option<u64>,
    },
    HostPath {
        path: PathBuf,
        type_: String,
    },
    /// Files written atomically, on a tmpfs sized to the node's memory when `tmpfs`.
    Files {
        payload: Payload,
        tmpfs: bool,
    },
}

/// What the host work needs from the pod and the node.
pub(super) struct HostSettings {
    pub fs_group: Option<u32>,
    pub now: DateTime<Utc>,
    pub memory_bytes: i128,
}

impl HostSettings {
    pub(super) fn of(ctx: &VolumeContext<'_>) -> HostSettings {
        HostSettings { fs_group: fs_group(ctx.pod), now: ctx.now, memory_bytes: ctx.allocatable.memory_bytes }
    }
}

/// Read the volume's sources (objects, tokens, the pod itself).
pub(super) async fn plan_one(ctx: &VolumeContext<'_>, source: &Source<'_>) -> Result<HostWork, VolumeError> {
    let files = |payload, tmpfs| Ok(HostWork::Files { payload, tmpfs });
    match source {
        Source::EmptyDir { memory, medium, size_limit } => {
            if !memory && !medium.is_empty() {
                return Err(VolumeError::UnsupportedMedium(medium.clone()));
            }
            let size = match (memory, size_limit) {
                (false, _) => 0,
                (true, Some(q)) => value(q).map_err(VolumeError::SizeLimit)?,
                (true, None) => ctx.allocatable.memory_bytes,
            };
            Ok(HostWork::EmptyDir { memory: *memory, size: u64::try_from(size).ok().filter(|s| *s > 0) })
        }
        Source::HostPath { path, type_ } => {
            Ok(HostWork::HostPath { path: PathBuf::from(path), type_: type_.to_string() })
        }
        Source::ConfigMap(s) => {
            let source = KeySource {
                kind: ObjectKind::ConfigMap,
                name: &s.name,
                items: s.items.as_deref(),
                optional: s.optional.unwrap_or(false),
                default_mode: s.default_mode.unwrap_or(DEFAULT_MODE),
            };
            files(key_files(ctx, &source).await?, false)
        }
        Source::Secret(s) => {
            let name = s.secret_name.as_deref().unwrap_or_default();
            let source = KeySource {
                kind: ObjectKind::Secret,
                name,
                items: s.items.as_deref(),
                optional: s.optional.unwrap_or(false),
                default_mode: s.default_mode.unwrap_or(DEFAULT_MODE),
            };
            files(key_files(ctx, &source).await?, true)
        }
        Source::DownwardApi(s) => {
            let items = s.items.as_deref().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
            files(downward_payload(ctx.pod, items, mode, ctx.facts, ctx.allocatable)?, false)
        }
        Source::Projected(s) => files(projected_files(ctx, s).await?, true),
        Source::Unsupported(kind) => Err(VolumeError::Unsupported(kind.clone())),
    }
}

/// Make the volume exist at `path` as planned (blocking).
pub(super) fn apply(work: HostWork, path: &Path, host: &HostSettings) -> Result<(), VolumeError> {
    match work {
        HostWork::EmptyDir { memory, size } => {
            create_volume_dir(path)?;
            if memory {
                mount_tmpfs(path, size)?;
            }
            own_volume_root(host.fs_group, path)
        }
        HostWork::HostPath { path, type_ } => Ok(check_type(&path, &type_)?),
        HostWork::Files { payload, tmpfs } => {
            create_volume_dir(path)?;
            if tmpfs {
                // Files that must never reach the disk (secrets), sized to the node's memory.
                mount_tmpfs(path, u64::try_from(host.memory_bytes).ok().filter(|s| *s > 0))?;
            }
            write(host, path, payload)
        }
    }
}

async fn key_files(ctx: &VolumeContext<'_>, source: &KeySource<'_>) -> Result<Payload, VolumeError> {
    let data = ctx.objects.get(source.kind, ctx.namespace(), source.name).await?;
    Ok(key_payload(source, data.as_ref())?)
}

/// The projected sources in order; a later file replaces an earlier one at the same path.
pub(super) async fn projected_files(
    ctx: &VolumeContext<'_>,
    projected: &ProjectedVolumeSource,
) -> Result<Payload, VolumeError> {
    let default_mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
    let mut payload = Payload::new();
    for projection in projected.sources.iter().flatten() {
        let files = if let Some(s) = &projection.config_map {
            let source = KeySource {
                kind: ObjectKind::ConfigMap,
                name: &s.name,
                items: s.items.as_deref(),
                optional: s.optional.unwrap_or(false),
                default_mode,
            };
            key_files(ctx, &source).await?
        } else if let Some(s) = &projection.secret {
            let source = KeySource {
                kind: ObjectKind::Secret,
                name: &s.name,
                items: s.items.as_deref(),
                optional: s.optional.unwrap_or(false),
                default_mode,
            };
            key_files(ctx, &source).await?
        } else if let Some(s) = &projection.downward_api {
            let items = s.items.as_deref().unwrap_or_default();
            downward_payload(ctx.pod, items, default_mode, ctx.facts, ctx.allocatable)?
        } else if let Some(s) = &projection.service_account_token {
            let meta = &ctx.pod.metadata;
            let wanted = TokenWanted {
                namespace: ctx.namespace().to_string(),
                service_account: service_account_of(ctx.pod),
                audience: s.audience.clone().unwrap_or_default(),
                expiration_seconds: s.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                pod_name: meta.name.clone().unwrap_or_default(),
                pod_uid: meta.uid.clone().unwrap_or_default(),
            };
            let token = ctx.objects.service_account_token(&wanted).await?;
            let mode = u32::try_from(default_mode).unwrap_or(0o644);
            Payload::from([(s.path.clone(), FileProjection { data: token.token.into_bytes(), mode })])
        } else {
            continue;
        };
        payload.extend(files);
    }
    Ok(payload)
}

/// spec.serviceAccountName, "default" when unset as the API defaults it.
fn service_account_of(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// The pod's fsGroup, which owns its writable and object volumes.
fn fs_group(pod: &Pod) -> Option<u32> {
    let context = pod.spec.as_ref()?.security_context.as_ref()?;
    context.fs_group.and_then(|g| u32::try_from(g).ok())
}

/// Write the files; with an fsGroup they are group-readable and the group's, as kubelet's
/// SetVolumeOwnership leaves read-only volumes.
fn write(host: &HostSettings, path: &Path, mut payload: Payload) -> Result<(), VolumeError> {
    if host.fs_group.is_some() {
        for file in payload.values_mut() {
            file.mode |= 0o440;
        }
    }
    write_payload(path, &payload, host.now, host.fs_group)?;
    own_volume_root(host.fs_group, path)
}

/// With an fsGroup, the volume's root directory belongs to the group, setgid, so that what
/// containers create there does too.
fn own_volume_root(fs_group: Option<u32>, path: &Path) -> Result<(), VolumeError> {
    let Some(gid) = fs_group else {
        return Ok(());
    };
    let fail = |source| VolumeError::Ownership { path: path.to_path_buf(), source };
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| fail(std::io::Error::from(e)))?;
    let mode = std::fs::metadata(path).map_err(fail)?.permissions().mode() | 0o2000;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)
}

/// The volume's directory, mode 0777 as kubelet's emptyDir makes it.
fn create_volume_dir(path: &Path) -> Result<(), VolumeError> {
    let fail = |source| VolumeError::CreateDir { path: path.to_path_buf(), source };
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(fail)
}
