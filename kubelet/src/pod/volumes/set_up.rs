//! Setting up one volume of each kind: the directory or tmpfs, the type check of a hostPath,
//! and the files of configMap, secret, downwardAPI and projected volumes (their sources read,
//! their payload written atomically).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource};

use super::atomic_writer::{write_payload, FileProjection, Payload};
use super::host_path::check_type;
use super::mount_points::mount_tmpfs;
use super::payload::{downward_payload, key_payload, KeySource, DEFAULT_MODE};
use super::{Source, VolumeContext, VolumeError};
use crate::pod::quantity::value;
use crate::pod::referenced_objects::ObjectKind;
use crate::pod::service_account_token::{TokenWanted, DEFAULT_EXPIRATION_SECONDS};

pub(super) async fn set_up_one(ctx: &VolumeContext<'_>, source: &Source<'_>, path: &Path) -> Result<(), VolumeError> {
    match source {
        Source::EmptyDir { memory, medium, size_limit } => {
            if !memory && !medium.is_empty() {
                return Err(VolumeError::UnsupportedMedium(medium.clone()));
            }
            create_volume_dir(path)?;
            if *memory {
                let size = match size_limit {
                    Some(q) => value(q).map_err(VolumeError::SizeLimit)?,
                    None => ctx.allocatable.memory_bytes,
                };
                mount_tmpfs(path, u64::try_from(size).ok().filter(|s| *s > 0))?;
            }
            own_volume_root(ctx, path)
        }
        Source::HostPath { path, type_ } => Ok(check_type(Path::new(path), type_)?),
        Source::ConfigMap(s) => {
            let source = KeySource {
                kind: ObjectKind::ConfigMap,
                name: &s.name,
                items: s.items.as_deref(),
                optional: s.optional.unwrap_or(false),
                default_mode: s.default_mode.unwrap_or(DEFAULT_MODE),
            };
            let payload = key_files(ctx, &source).await?;
            create_volume_dir(path)?;
            write(ctx, path, payload)
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
            let payload = key_files(ctx, &source).await?;
            create_tmpfs_dir(ctx, path)?;
            write(ctx, path, payload)
        }
        Source::DownwardApi(s) => {
            let items = s.items.as_deref().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
            let payload = downward_payload(ctx.pod, items, mode, ctx.facts, ctx.allocatable)?;
            create_volume_dir(path)?;
            write(ctx, path, payload)
        }
        Source::Projected(s) => {
            let payload = projected_files(ctx, s).await?;
            create_tmpfs_dir(ctx, path)?;
            write(ctx, path, payload)
        }
        Source::Unsupported(kind) => Err(VolumeError::Unsupported(kind.clone())),
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
fn write(ctx: &VolumeContext<'_>, path: &Path, mut payload: Payload) -> Result<(), VolumeError> {
    let group = fs_group(ctx.pod);
    if group.is_some() {
        for file in payload.values_mut() {
            file.mode |= 0o440;
        }
    }
    write_payload(path, &payload, ctx.now, group)?;
    own_volume_root(ctx, path)
}

/// With an fsGroup, the volume's root directory belongs to the group, setgid, so that what
/// containers create there does too.
fn own_volume_root(ctx: &VolumeContext<'_>, path: &Path) -> Result<(), VolumeError> {
    let Some(gid) = fs_group(ctx.pod) else {
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

/// A tmpfs for files that must never reach the disk (secrets), sized to the node's memory.
fn create_tmpfs_dir(ctx: &VolumeContext<'_>, path: &Path) -> Result<(), VolumeError> {
    create_volume_dir(path)?;
    mount_tmpfs(path, u64::try_from(ctx.allocatable.memory_bytes).ok().filter(|s| *s > 0))?;
    Ok(())
}
