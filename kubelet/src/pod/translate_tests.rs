use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

use super::*;
use crate::pod::downward::{NodeAllocatable, PodFacts};
use crate::pod::env::{resolve_env, EnvInput};
use crate::pod::referenced_objects::NoObjects;
use crate::pod::volumes::HostVolume;

fn pod(container: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("0b1c".into()),
            ..Default::default()
        },
        spec: Some(PodSpec { containers: vec![container], ..Default::default() }),
        status: None,
    }
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfiguration {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .entrypoint(strings(entrypoint))
                .cmd(strings(cmd))
                .env(vec!["PATH=/usr/bin:/bin".to_string(), "MODE=image".to_string()])
                .working_dir("/srv".to_string())
                .build()
                .expect("config"),
        )
        .build()
        .expect("image")
}

fn translate(pod: &Pod, image: &ImageConfiguration) -> Result<Spec, TranslateError> {
    translate_with_volumes(pod, image, &HostVolumes::new(), &BTreeMap::new())
}

fn translate_with_volumes(
    pod: &Pod,
    image: &ImageConfiguration,
    volumes: &HostVolumes,
    subpaths: &BTreeMap<usize, PathBuf>,
) -> Result<Spec, TranslateError> {
    let files = PodFiles::in_dir(Path::new("/var/lib/nodelet/pods/0b1c"));
    let spec = pod.spec.as_ref().expect("spec");
    let container = &spec.containers[0];
    let facts = PodFacts { node_name: "n1".into(), ..Default::default() };
    let allocatable = NodeAllocatable { cpu_millis: 1000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 30 };
    let env_input = EnvInput { pod, container, facts: &facts, allocatable: &allocatable };
    let env = futures::executor::block_on(resolve_env(&env_input, &NoObjects)).expect("env");
    container_spec(&TranslateInput {
        pod,
        container,
        image,
        rootfs: Path::new("/var/lib/nodelet/pods/0b1c/containers/app-2/rootfs"),
        netns_path: Path::new("/run/nodelet/netns/0b1c"),
        cluster_domain: Some("cluster.local"),
        seccomp: &SeccompSettings { root: PathBuf::from("/var/lib/nodelet/seccomp"), default_runtime: false },
        pod_files: &files,
        cgroup_root: "/nodelet",
        attempt: 2,
        env: &env.vars,
        volumes,
        subpaths,
    })
}

/// Serialized with capability sets sorted, so the golden text is stable.
fn normalized_json(spec: &Spec) -> serde_json::Value {
    let mut value = serde_json::to_value(spec).expect("json");
    if let Some(caps) = value.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    value
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

#[test]
fn golden_spec_for_a_typical_container() {
    let container = Container {
        name: "app".into(),
        image: Some("127.0.0.1:5000/web:1".into()),
        args: Some(vec!["--port=$(PORT)".into()]),
        env: Some(vec![
            EnvVar { name: "PORT".into(), value: Some("8080".into()), value_from: None },
            EnvVar { name: "MODE".into(), value: Some("pod-$(PORT)".into()), value_from: None },
            EnvVar {
                name: "FROM_API".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                    ..Default::default()
                }),
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "250m")])),
            limits: Some(quantities(&[("cpu", "500m"), ("memory", "64Mi")])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = translate(&pod(container), &image(&["/bin/web"], &["--default"])).expect("spec");
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("testdata/golden_spec.json")).expect("golden json");
    assert_eq!(
        normalized_json(&spec),
        golden,
        "actual:\n{}",
        serde_json::to_string_pretty(&normalized_json(&spec)).expect("pretty")
    );
}

fn args_of(container: Container, entrypoint: &[&str], cmd: &[&str]) -> Vec<String> {
    let spec = translate(&pod(container), &image(entrypoint, cmd)).expect("spec");
    spec.process().as_ref().and_then(|p| p.args().clone()).expect("args")
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    let base = Container { name: "app".into(), ..Default::default() };
    let with = |command: Option<&[&str]>, args: Option<&[&str]>| Container {
        command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
        args: args.map(|a| a.iter().map(|s| s.to_string()).collect()),
        ..base.clone()
    };
    assert_eq!(args_of(with(None, None), &["ep"], &["cmd"]), ["ep", "cmd"]);
    assert_eq!(args_of(with(Some(&["c"]), None), &["ep"], &["cmd"]), ["c"]);
    assert_eq!(args_of(with(None, Some(&["a"])), &["ep"], &["cmd"]), ["ep", "a"]);
    assert_eq!(args_of(with(Some(&["c"]), Some(&["a"])), &["ep"], &["cmd"]), ["c", "a"]);
    assert!(matches!(translate(&pod(with(None, None)), &image(&[], &[])), Err(TranslateError::NoCommand { .. })));
}

#[test]
fn no_requests_gives_minimum_shares_and_no_limits() {
    let container = Container { name: "app".into(), command: Some(vec!["x".into()]), ..Default::default() };
    let spec = translate(&pod(container), &image(&[], &[])).expect("spec");
    let value = serde_json::to_value(&spec).expect("json");
    assert_eq!(value["linux"]["resources"], serde_json::json!({"cpu": {"shares": 2}}));
}

#[test]
fn security_context_overrides_image_user() {
    let container = Container { name: "app".into(), command: Some(vec!["x".into()]), ..Default::default() };
    let mut p = pod(container);
    p.spec.as_mut().expect("spec").security_context = Some(PodSecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        fs_group: Some(2000),
        ..Default::default()
    });
    let spec = translate(&p, &image(&[], &[])).expect("spec");
    let user = spec.process().as_ref().expect("process").user();
    assert_eq!((user.uid(), user.gid()), (1000, 3000));
    // containerd keeps the primary group among the supplementary ones.
    assert_eq!(user.additional_gids().clone(), Some(vec![2000, 3000]));
}

fn namespace_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
    let linux = spec.linux().as_ref().expect("linux");
    linux.namespaces().iter().flatten().map(|n| n.typ()).collect()
}

#[test]
fn host_namespaces_are_left_out() {
    let container = Container { name: "app".into(), command: Some(vec!["x".into()]), ..Default::default() };
    let mut p = pod(container);
    let spec = translate(&p, &image(&[], &[])).expect("spec");
    assert_eq!(namespace_types(&spec).len(), 5);
    assert_eq!(spec.hostname().as_deref(), Some("web"));
    let pod_spec = p.spec.as_mut().expect("spec");
    pod_spec.host_network = Some(true);
    pod_spec.host_pid = Some(true);
    pod_spec.host_ipc = Some(true);
    let spec = translate(&p, &image(&[], &[])).expect("spec");
    assert_eq!(namespace_types(&spec), [LinuxNamespaceType::Mount]);
    assert_eq!(spec.hostname(), &None);
}

#[test]
fn hostname_as_fqdn_and_its_limit() {
    let container = Container { name: "app".into(), command: Some(vec!["x".into()]), ..Default::default() };
    let mut p = pod(container);
    let pod_spec = p.spec.as_mut().expect("spec");
    pod_spec.subdomain = Some("db".into());
    pod_spec.set_hostname_as_fqdn = Some(true);
    let spec = translate(&p, &image(&[], &[])).expect("spec");
    assert_eq!(spec.hostname().as_deref(), Some("web.db.default.svc.cluster.local"));
    p.spec.as_mut().expect("spec").hostname = Some("h".repeat(40));
    let error = translate(&p, &image(&[], &[])).expect_err("too long");
    assert_eq!(
        error.to_string(),
        format!(
            "failed to construct FQDN from pod hostname and cluster domain, FQDN {}.db.default.svc.cluster.local is too long (64 characters is the max, 69 characters requested)",
            "h".repeat(40)
        )
    );
}

#[test]
fn security_context_reaches_the_spec() {
    let container = Container {
        name: "app".into(),
        command: Some(vec!["x".into()]),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = translate(&pod(container), &image(&[], &[])).expect("spec");
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    assert_eq!(spec.process().as_ref().and_then(|p| p.no_new_privileges()), Some(true));
    assert!(spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).is_some());
}

#[test]
fn privileged_gets_devices_and_writable_sys() {
    let container = Container {
        name: "app".into(),
        command: Some(vec!["x".into()]),
        security_context: Some(SecurityContext { privileged: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let spec = translate(&pod(container), &image(&[], &[])).expect("spec");
    let linux = spec.linux().as_ref().expect("linux");
    assert!(linux.devices().iter().flatten().any(|d| d.path() == Path::new("/dev/null")));
    assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
    let sys = spec.mounts().iter().flatten().find(|m| m.destination() == Path::new("/sys")).expect("/sys");
    assert!(sys.options().iter().flatten().any(|o| o == "rw"));
    let caps = spec.process().as_ref().and_then(|p| p.capabilities().clone()).expect("caps");
    assert!(caps.bounding().iter().flatten().any(|c| *c == Capability::SysAdmin));
}

#[test]
fn run_as_non_root_with_a_root_image_is_a_config_error() {
    let container = Container {
        name: "app".into(),
        command: Some(vec!["x".into()]),
        security_context: Some(SecurityContext { run_as_non_root: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let error = translate(&pod(container), &image(&[], &[])).expect_err("root image");
    assert_eq!(error.reason(), "CreateContainerConfigError");
    assert!(error.to_string().starts_with("container has runAsNonRoot and image will run as root"), "{error}");
}

#[test]
fn bad_quantity_names_the_resource() {
    let container = Container {
        name: "app".into(),
        command: Some(vec!["x".into()]),
        resources: Some(ResourceRequirements { limits: Some(quantities(&[("memory", "lots")])), ..Default::default() }),
        ..Default::default()
    };
    let err = translate(&pod(container), &image(&[], &[])).expect_err("bad quantity");
    assert_eq!(err.to_string(), "container app: resource limits.memory");
}

fn mounts_of(spec: &Spec) -> Vec<(String, String, Vec<String>)> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default(),
                m.options().clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn volume_mounts_become_bind_mounts() {
    let mount =
        |name: &str, path: &str| VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() };
    let container = Container {
        name: "app".into(),
        command: Some(vec!["x".into()]),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                mount_propagation: Some("HostToContainer".into()),
                ..mount("data", "/data/deep")
            },
            mount("cfg", "/etc/app"),
            VolumeMount { sub_path: Some("logs".into()), ..mount("data", "/logs") },
        ]),
        ..Default::default()
    };
    let volumes: HostVolumes = [
        ("data".to_string(), HostVolume { path: "/v/data".into(), read_only: false }),
        ("cfg".to_string(), HostVolume { path: "/v/cfg".into(), read_only: true }),
    ]
    .into_iter()
    .collect();
    let subpaths: BTreeMap<usize, PathBuf> =
        [(2, PathBuf::from("/pod/volume-subpaths/data/app/2"))].into_iter().collect();
    let spec = translate_with_volumes(&pod(container.clone()), &image(&[], &[]), &volumes, &subpaths).expect("spec");
    let options = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let binds = mounts_of(&spec);
    let volume_binds: Vec<_> =
        binds.iter().filter(|(d, _, _)| !d.starts_with("/etc/host") && d != "/etc/resolv.conf").cloned().collect();
    assert_eq!(
        volume_binds,
        [
            ("/logs".to_string(), "/pod/volume-subpaths/data/app/2".to_string(), options(&["rbind", "rprivate", "rw"])),
            ("/data/deep".to_string(), "/v/data".to_string(), options(&["rbind", "rslave", "ro"])),
            ("/etc/app".to_string(), "/v/cfg".to_string(), options(&["rbind", "rprivate", "ro"])),
        ]
    );
    assert_eq!(spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()).as_deref(), Some("rslave"));

    let missing = translate_with_volumes(&pod(container.clone()), &image(&[], &[]), &HostVolumes::new(), &subpaths);
    assert!(matches!(missing, Err(TranslateError::UnknownVolume { .. })));
    let mut bidirectional = container;
    bidirectional.volume_mounts =
        Some(vec![VolumeMount { mount_propagation: Some("Bidirectional".into()), ..mount("data", "/d") }]);
    let error =
        translate_with_volumes(&pod(bidirectional), &image(&[], &[]), &volumes, &subpaths).expect_err("not privileged");
    assert!(error.to_string().contains("only to privileged containers"), "{error}");
}
