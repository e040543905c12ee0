//! `linux.sysctl`, `process.oomScoreAdj` and `linux.personality` on the real kernel. Every
//! sysctl that is written lands in a network or IPC namespace the container gets of its own.

mod container_support;

use std::collections::HashMap;

use container_support::*;
use oci_spec::runtime::{LinuxNamespaceType, LinuxPersonalityBuilder, LinuxPersonalityDomain, Spec};

fn set_sysctl(spec: &mut Spec, pairs: &[(&str, &str)]) {
    let mut linux = spec.linux().clone().expect("linux");
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    linux.set_sysctl(Some(map));
    spec.set_linux(Some(linux));
}

fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{path}")).expect("host sysctl").trim().to_string()
}

#[tokio::test]
async fn sysctls_land_in_the_containers_own_namespaces() {
    let mut env = TestEnv::new();
    let host_forward = host_sysctl("net/ipv4/ip_forward");
    let host_ttl = host_sysctl("net/ipv4/ip_default_ttl");
    let host_shmmni = host_sysctl("kernel/shmmni");
    assert_ne!(host_ttl, "42", "the host must not already have the value the test sets");
    let edit = |spec: &mut Spec| {
        // The default spec gives the container new network and IPC namespaces.
        set_sysctl(spec, &[("net.ipv4.ip_forward", "1"), ("net/ipv4/ip_default_ttl", "42"), ("kernel.shmmni", "1234")]);
    };
    let script = "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_default_ttl /proc/sys/kernel/shmmni; \
                  echo 7 > /proc/sys/net/ipv4/ip_default_ttl || echo read-only";
    let (state, log) = run_to_end(&mut env, "sysctl", edit, &["sh", "-c", script]).await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[..3], ["1", "42", "1234"], "log: {log}");
    // Written before the spec's read-only paths (/proc/sys) were applied, not after.
    assert!(log.contains("read-only"), "log: {log}");
    assert_eq!(host_sysctl("net/ipv4/ip_forward"), host_forward);
    assert_eq!(host_sysctl("net/ipv4/ip_default_ttl"), host_ttl);
    assert_eq!(host_sysctl("kernel/shmmni"), host_shmmni);
}

#[tokio::test]
async fn sysctls_outside_the_containers_namespaces_are_refused() {
    let mut env = TestEnv::new();
    let swappiness = host_sysctl("vm/swappiness");
    let err = create_error(&mut env, "vm-sysctl", |spec| set_sysctl(spec, &[("vm.swappiness", &swappiness)])).await;
    assert!(err.contains("sysctl \"vm.swappiness\" is not in a separate kernel namespace"), "{err}");
    // The host's own value: even a wrongly accepted key could not change the host.
    let ttl = host_sysctl("net/ipv4/ip_default_ttl");
    let host_net = |spec: &mut Spec| {
        set_sysctl(spec, &[("net.ipv4.ip_default_ttl", &ttl)]);
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
    };
    let err = create_error(&mut env, "host-net-sysctl", host_net).await;
    assert!(err.contains("\"net.ipv4.ip_default_ttl\" is not allowed in the host's network namespace"), "{err}");
}

#[tokio::test]
async fn oom_score_adj_is_set_before_start() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "oom-score";
    let (bundle, mut spec) = env.bundle(id, &["sleep", "1000"]);
    let mut process = spec.process().clone().unwrap();
    process.set_oom_score_adj(Some(123));
    spec.set_process(Some(process));
    write_bundle(&bundle, &spec);
    let pid = runtime.create(id, &bundle, &env.log_path(id)).await.expect("create").pid.expect("pid");
    let score = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(score.trim(), "123");
    runtime.delete(id, true).await.expect("delete");
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn linux32_personality_shows_in_uname() {
    let mut env = TestEnv::new();
    let edit = |spec: &mut Spec| {
        let personality =
            LinuxPersonalityBuilder::default().domain(LinuxPersonalityDomain::PerLinux32).build().expect("personality");
        let mut linux = spec.linux().clone().unwrap();
        linux.set_personality(Some(personality));
        spec.set_linux(Some(linux));
    };
    let (state, log) = run_to_end(&mut env, "linux32", edit, &["uname", "-m"]).await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    assert_eq!(log.trim(), "i686");
}
