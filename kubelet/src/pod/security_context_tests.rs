use k8s_openapi::api::core::v1::{Capabilities, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn pod(pod_context: PodSecurityContext, container_context: SecurityContext) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            security_context: Some(pod_context),
            containers: vec![Container {
                name: "app".into(),
                security_context: Some(container_context),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn check(p: &Pod, image_user: &str) -> Result<(), SecurityError> {
    let container = &p.spec.as_ref().expect("spec").containers[0];
    verify_run_as_non_root(&EffectiveSecurity::of(p, container), p, &container.name, image_user)
}

fn with<T>(p: &Pod, f: impl FnOnce(&EffectiveSecurity<'_>) -> T) -> T {
    let container = &p.spec.as_ref().expect("spec").containers[0];
    f(&EffectiveSecurity::of(p, container))
}

#[test]
fn run_as_non_root_messages_are_kubelets() {
    let non_root = PodSecurityContext { run_as_non_root: Some(true), ..Default::default() };
    let p = pod(non_root.clone(), SecurityContext::default());
    let error = check(&p, "").expect_err("root image");
    assert_eq!(
        error.to_string(),
        "container has runAsNonRoot and image will run as root (pod: \"web_default(u1)\", container: app)"
    );
    assert_eq!(error.reason(), "CreateContainerConfigError");
    assert!(check(&p, "0:0").is_err());
    assert!(check(&p, "1000").is_ok());
    assert_eq!(
        check(&p, "nginx:web").expect_err("name").to_string(),
        "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"web_default(u1)\", container: app)"
    );
    let root_user = pod(non_root, SecurityContext { run_as_user: Some(0), ..Default::default() });
    assert_eq!(
        check(&root_user, "1000").expect_err("runAsUser 0").to_string(),
        "container's runAsUser breaks non-root policy (pod: \"web_default(u1)\", container: app)"
    );
    // The container's runAsNonRoot: false wins over the pod's true.
    let allowed = pod(
        PodSecurityContext { run_as_non_root: Some(true), ..Default::default() },
        SecurityContext { run_as_non_root: Some(false), ..Default::default() },
    );
    assert!(check(&allowed, "").is_ok());
}

#[test]
fn container_fields_win_over_the_pod() {
    let p = pod(
        PodSecurityContext { run_as_user: Some(1), run_as_group: Some(2), ..Default::default() },
        SecurityContext { run_as_user: Some(10), ..Default::default() },
    );
    assert_eq!(with(&p, |s| (s.run_as_user(), s.run_as_group())), (Some(10), Some(2)));
}

#[test]
fn capabilities_add_and_drop_in_containerds_order() {
    let caps = |add: &[&str], drop: &[&str]| {
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        let context = SecurityContext {
            capabilities: Some(Capabilities { add: strings(add), drop: strings(drop) }),
            ..Default::default()
        };
        let p = pod(PodSecurityContext::default(), context);
        with(&p, |s| capabilities(s, &all(), "app"))
    };
    let set = caps(&["NET_ADMIN"], &["CHOWN", "cap_kill"]).expect("caps");
    assert!(set.contains(&Capability::NetAdmin) && !set.contains(&Capability::Chown));
    assert!(!set.contains(&Capability::Kill) && set.contains(&Capability::Setuid));
    assert_eq!(caps(&[], &["ALL"]).expect("none"), HashSet::new());
    assert_eq!(caps(&["NET_RAW"], &["ALL"]).expect("one"), [Capability::NetRaw].into_iter().collect());
    let all_but_chown = caps(&["ALL"], &["CHOWN"]).expect("all");
    assert_eq!(all_but_chown.len(), all().len() - 1);
    let error = caps(&["FLY"], &[]).expect_err("unknown");
    assert_eq!(error.to_string(), "container app: unknown capability \"FLY\"");
    let privileged =
        pod(PodSecurityContext::default(), SecurityContext { privileged: Some(true), ..Default::default() });
    assert_eq!(with(&privileged, |s| capabilities(s, &all(), "app")).expect("all"), all());
}

/// Every capability but CAP_SYS_RESOURCE (24), as on a host that dropped it.
fn all() -> HashSet<Capability> {
    capabilities_of_mask(0x1ff_feff_ffff)
}

#[test]
fn capability_masks_by_kernel_number() {
    let set = capabilities_of_mask(0xa80425fb);
    assert_eq!(set, DEFAULT_CAPABILITIES.into_iter().collect());
    assert_eq!(all().len(), 40);
    assert!(!all().contains(&Capability::SysResource));
    assert!(current_capabilities().is_ok());
}

#[test]
fn proc_paths_unless_privileged_or_unmasked() {
    let plain = pod(PodSecurityContext::default(), SecurityContext::default());
    let (masked, readonly) = with(&plain, proc_paths);
    assert!(masked.contains(&"/proc/kcore".to_string()) && readonly.contains(&"/proc/sys".to_string()));
    let unmasked = pod(
        PodSecurityContext::default(),
        SecurityContext { proc_mount: Some("Unmasked".into()), ..Default::default() },
    );
    assert_eq!(with(&unmasked, proc_paths), (vec![], vec![]));
}

#[test]
fn no_new_privileges_only_when_escalation_is_refused() {
    let p = |allow| {
        pod(PodSecurityContext::default(), SecurityContext { allow_privilege_escalation: allow, ..Default::default() })
    };
    assert!(!with(&p(None), |s| s.no_new_privileges()));
    assert!(!with(&p(Some(true)), |s| s.no_new_privileges()));
    assert!(with(&p(Some(false)), |s| s.no_new_privileges()));
}

#[test]
fn seccomp_by_type_and_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("profiles")).expect("mkdir");
    std::fs::write(dir.path().join("profiles/audit.json"), r#"{"defaultAction":"SCMP_ACT_LOG"}"#).expect("write");
    let settings = |default_runtime| SeccompSettings { root: dir.path().to_path_buf(), default_runtime };
    let profile = |kind: &str, path: Option<&str>| SecurityContext {
        seccomp_profile: Some(SeccompProfile { type_: kind.into(), localhost_profile: path.map(str::to_string) }),
        ..Default::default()
    };
    let run = |context: SecurityContext, default_runtime| {
        let p = pod(PodSecurityContext::default(), context);
        with(&p, |s| seccomp(s, &settings(default_runtime), &HashSet::new(), "app"))
    };
    assert!(run(SecurityContext::default(), false).expect("unset").is_none());
    assert!(run(SecurityContext::default(), true).expect("default").is_some());
    assert!(run(profile("Unconfined", None), true).expect("unconfined").is_none());
    assert!(run(profile("RuntimeDefault", None), false).expect("runtime default").is_some());
    let local = run(profile("Localhost", Some("profiles/audit.json")), false).expect("localhost").expect("some");
    assert_eq!(local.default_action(), oci_spec::runtime::LinuxSeccompAction::ScmpActLog);
    let missing = run(profile("Localhost", Some("profiles/none.json")), false).expect_err("missing");
    assert_eq!(missing.reason(), "CreateContainerError");
    assert!(missing.to_string().contains("profiles/none.json"), "{missing}");
    assert!(run(profile("Localhost", Some("../etc/x.json")), false).is_err());
    let mut privileged = profile("RuntimeDefault", None);
    privileged.privileged = Some(true);
    assert!(run(privileged, false).expect("privileged").is_none());
}
