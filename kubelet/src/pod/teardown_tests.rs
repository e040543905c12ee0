//! Teardown against the real kernel (root): mounts below a pod directory reached through a
//! symlinked root are found and removed, bind sources survive, nothing is stacked.

use std::path::{Path, PathBuf};

use chrono::Utc;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, HostPathVolumeSource, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::pod::downward::{NodeAllocatable, PodFacts};
use crate::pod::fake_runtime::FakeRuntime;
use crate::pod::referenced_objects::MemoryObjects;
use crate::pod::volumes::mount_points::{bind, mount_points, unmount_all_below};
use crate::pod::volumes::one_filesystem::remove_all_one_filesystem;
use crate::pod::volumes::subpath::{prepare, SubPathMount};
use crate::pod::volumes::{set_up_volumes, VolumeContext};

const NODE: NodeAllocatable =
    NodeAllocatable { cpu_millis: 1000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 30 };

/// A root dir reached through a symlink (`<tmp>/link -> <tmp>/real`), a hostPath with a file
/// to keep, and whatever is mounted below, unmounted when the test ends however it ends.
struct Scene {
    real: PathBuf,
    root_dir: PathBuf,
    host_data: PathBuf,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        let root_dir = base.join("link");
        std::os::unix::fs::symlink(&real, &root_dir).unwrap();
        let host_data = base.join("host-data");
        std::fs::create_dir_all(host_data.join("sub")).unwrap();
        std::fs::write(host_data.join("sub/keep.txt"), "precious").unwrap();
        Scene { real, root_dir, host_data, dir }
    }

    fn mounts(&self) -> Vec<PathBuf> {
        let base = std::fs::canonicalize(self.dir.path()).unwrap();
        mount_points().unwrap().into_iter().filter(|p| p.starts_with(&base)).collect()
    }

    fn kept(&self) -> String {
        std::fs::read_to_string(self.host_data.join("sub/keep.txt")).unwrap_or_default()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = unmount_all_below(self.dir.path());
    }
}

fn pod(host_data: &Path) -> Pod {
    let empty = |medium: Option<&str>| EmptyDirVolumeSource { medium: medium.map(String::from), size_limit: None };
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(vec![
                Volume { name: "mem".into(), empty_dir: Some(empty(Some("Memory"))), ..Default::default() },
                Volume { name: "disk".into(), empty_dir: Some(empty(None)), ..Default::default() },
                Volume {
                    name: "data".into(),
                    host_path: Some(HostPathVolumeSource { path: host_data.display().to_string(), type_: None }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

fn bind_subpath(scene: &Scene, index: usize, sub_path: &str) -> PathBuf {
    let pod_dir = pod_dir(&scene.root_dir, "u1");
    prepare(&SubPathMount {
        pod_dir: &pod_dir,
        volume_name: "data",
        volume_path: &scene.host_data,
        container: "app",
        index,
        sub_path,
    })
    .unwrap()
}

#[tokio::test]
async fn symlinked_root_teardown_unmounts_and_keeps_bind_sources() {
    let scene = Scene::new();
    let pod = pod(&scene.host_data);
    let objects = MemoryObjects::default();
    let ctx = VolumeContext {
        root_dir: &scene.root_dir,
        pod: &pod,
        objects: &objects,
        facts: &PodFacts::default(),
        allocatable: &NODE,
        now: Utc::now(),
    };
    assert!(set_up_volumes(&ctx).await.is_empty());
    // A resync finds the tmpfs through the symlinked root instead of stacking another.
    assert!(set_up_volumes(&ctx).await.is_empty());
    let mem = scene.real.join("pods/u1/volumes/kubernetes.io~empty-dir/mem");
    assert_eq!(scene.mounts(), [mem], "one tmpfs, not stacked");

    let dir_bind = bind_subpath(&scene, 0, "sub");
    let file_bind = bind_subpath(&scene, 1, "sub/keep.txt");
    // Repeating (a container restart) reuses the binds.
    assert_eq!(bind_subpath(&scene, 0, "sub"), dir_bind);
    assert_eq!(std::fs::read_to_string(&file_bind).unwrap(), "precious");
    assert_eq!(scene.mounts().len(), 3, "{:?}", scene.mounts());

    remove_pod_dir(&pod_dir(&scene.root_dir, "u1"), "u1").unwrap();
    assert_eq!(scene.kept(), "precious", "the hostPath content was deleted through a bind");
    assert!(scene.mounts().is_empty(), "{:?}", scene.mounts());
    assert!(!scene.real.join("pods/u1").exists());
    // Repeating after success is fine.
    remove_pod_dir(&pod_dir(&scene.root_dir, "u1"), "u1").unwrap();
}

#[test]
fn removal_refuses_to_cross_a_mount() {
    let scene = Scene::new();
    let pod_dir = pod_dir(&scene.root_dir, "u1");
    let target = pod_dir.join("volume-subpaths/data/app/0");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(pod_dir.join("etc-hosts"), "x").unwrap();
    // Same filesystem as the pod directory: only the mount itself tells them apart.
    bind(&scene.host_data, &target).unwrap();

    let error = remove_all_one_filesystem(&pod_dir).unwrap_err();
    let resolved = scene.real.join("pods/u1/volume-subpaths/data/app/0");
    assert_eq!(
        error.to_string(),
        format!("refusing to remove {}: another filesystem is mounted there", resolved.display())
    );
    assert_eq!(scene.kept(), "precious");
    assert!(resolved.join("sub/keep.txt").exists(), "the mount was left in place");
}

#[tokio::test]
async fn release_forgets_the_pods_tokens() {
    let scene = Scene::new();
    let runtime = FakeRuntime::new();
    let objects = MemoryObjects::default();
    std::fs::create_dir_all(pod_dir(&scene.root_dir, "u1").join("volumes")).unwrap();
    release_pod(&runtime, &objects, &scene.root_dir, "u1", &[]).await.unwrap();
    assert_eq!(*objects.forgotten.lock().unwrap(), ["u1"]);
    assert!(!scene.real.join("pods/u1").exists());
}
