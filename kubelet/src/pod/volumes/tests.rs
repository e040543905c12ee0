use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::core::v1::{
    AWSElasticBlockStoreVolumeSource, ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::pod::referenced_objects::{MemoryObjects, ObjectKind};

fn pod(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u1".into()),
            labels: Some([("app".to_string(), "web".to_string())].into_iter().collect()),
            ..Default::default()
        },
        spec: Some(PodSpec { volumes: Some(volumes), ..Default::default() }),
        status: None,
    }
}

fn volume(name: &str) -> Volume {
    Volume { name: name.into(), ..Default::default() }
}

const NODE: NodeAllocatable =
    NodeAllocatable { cpu_millis: 1000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 30 };

#[test]
fn kubelet_paths_per_plugin() {
    let root = Path::new("/var/lib/nodelet");
    let pod = pod(vec![
        Volume { empty_dir: Some(EmptyDirVolumeSource::default()), ..volume("scratch") },
        volume("defaulted"),
        Volume { host_path: Some(HostPathVolumeSource { path: "/srv/data".into(), type_: None }), ..volume("host") },
        Volume {
            config_map: Some(ConfigMapVolumeSource { name: "cfg".into(), ..Default::default() }),
            ..volume("cfg")
        },
        Volume {
            aws_elastic_block_store: Some(AWSElasticBlockStoreVolumeSource {
                volume_id: "vol-1".into(),
                ..Default::default()
            }),
            ..volume("ebs")
        },
    ]);
    let volumes = host_volumes(root, &pod);
    let base = Path::new("/var/lib/nodelet/pods/u1/volumes");
    assert_eq!(volumes["scratch"], HostVolume { path: base.join("kubernetes.io~empty-dir/scratch"), read_only: false });
    assert_eq!(volumes["defaulted"].path, base.join("kubernetes.io~empty-dir/defaulted"));
    assert_eq!(volumes["host"], HostVolume { path: "/srv/data".into(), read_only: false });
    assert_eq!(volumes["cfg"], HostVolume { path: base.join("kubernetes.io~configmap/cfg"), read_only: true });
    assert!(!volumes.contains_key("ebs"));
    assert!(has_refreshed_volumes(&pod));
}

#[tokio::test]
async fn disk_volumes_set_up_and_failures_named() {
    let root = tempfile::tempdir().unwrap();
    let objects = MemoryObjects::default();
    objects.insert(ObjectKind::ConfigMap, "ns", "cfg", &[("greeting", "hello"), ("other", "x")]);
    let field = |path: &str| ObjectFieldSelector { field_path: path.into(), api_version: None };
    let pod = pod(vec![
        volume("scratch"),
        Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                items: Some(vec![KeyToPath {
                    key: "greeting".into(),
                    path: "conf/greeting.txt".into(),
                    mode: Some(0o600),
                }]),
                ..Default::default()
            }),
            ..volume("cfg")
        },
        Volume {
            config_map: Some(ConfigMapVolumeSource { name: "absent".into(), ..Default::default() }),
            ..volume("missing")
        },
        Volume {
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(field("metadata.labels")),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..volume("info")
        },
        Volume {
            aws_elastic_block_store: Some(AWSElasticBlockStoreVolumeSource {
                volume_id: "vol-1".into(),
                ..Default::default()
            }),
            ..volume("ebs")
        },
    ]);
    let ctx = VolumeContext {
        root_dir: root.path(),
        pod: &pod,
        objects: &objects,
        facts: &PodFacts::default(),
        allocatable: &NODE,
        now: Utc::now(),
    };
    let failures = set_up_volumes(&ctx).await;
    let described: Vec<(String, String)> = failures.iter().map(|f| (f.volume.clone(), f.error.to_string())).collect();
    assert_eq!(
        described,
        [
            ("missing".to_string(), "configmap \"absent\" not found".to_string()),
            ("ebs".to_string(), "volume type awsElasticBlockStore is not supported by nodelet".to_string()),
        ]
    );
    let volumes = host_volumes(root.path(), &pod);
    assert!(volumes["scratch"].path.is_dir());
    let greeting = volumes["cfg"].path.join("conf/greeting.txt");
    assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "hello");
    assert_eq!(std::fs::metadata(&greeting).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!volumes["cfg"].path.join("other").exists());
    assert_eq!(std::fs::read_to_string(volumes["info"].path.join("labels")).unwrap(), "app=\"web\"");

    // An update reaches the files on the next set-up.
    objects.insert(ObjectKind::ConfigMap, "ns", "cfg", &[("greeting", "bonjour")]);
    set_up_volumes(&ctx).await;
    assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "bonjour");
}

#[test]
fn mount_retry_backs_off() {
    assert_eq!(mount_retry_delay(1), std::time::Duration::from_millis(500));
    assert_eq!(mount_retry_delay(2), std::time::Duration::from_secs(1));
    assert_eq!(mount_retry_delay(30), std::time::Duration::from_secs(122));
}

#[tokio::test]
async fn projected_sources_merge_with_the_token() {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, SecretProjection, ServiceAccountTokenProjection, VolumeProjection,
    };
    let objects = MemoryObjects::default();
    objects.insert(ObjectKind::ConfigMap, "ns", "ca", &[("ca.crt", "CERT")]);
    objects.insert(ObjectKind::Secret, "ns", "s", &[("k", "v")]);
    let mut pod = pod(Vec::new());
    pod.spec.as_mut().unwrap().service_account_name = Some("robot".into());
    let projected = ProjectedVolumeSource {
        default_mode: Some(0o444),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    expiration_seconds: Some(3607),
                    audience: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection { name: "ca".into(), ..Default::default() }),
                ..Default::default()
            },
            VolumeProjection {
                secret: Some(SecretProjection {
                    name: "s".into(),
                    items: Some(vec![KeyToPath { key: "k".into(), path: "sub/k".into(), mode: None }]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
    };
    let ctx = VolumeContext {
        root_dir: Path::new("/unused"),
        pod: &pod,
        objects: &objects,
        facts: &PodFacts::default(),
        allocatable: &NODE,
        now: Utc::now(),
    };
    let payload = set_up::projected_files(&ctx, &projected).await.unwrap();
    let text = |path: &str| String::from_utf8(payload[path].data.clone()).unwrap();
    assert_eq!(payload.keys().collect::<Vec<_>>(), ["ca.crt", "namespace", "sub/k", "token"]);
    assert_eq!(text("token"), "token-of-robot-for-p");
    assert_eq!(text("ca.crt"), "CERT");
    assert_eq!(text("namespace"), "ns");
    assert!(payload.values().all(|f| f.mode == 0o444));
}
