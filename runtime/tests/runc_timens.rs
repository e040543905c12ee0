//! Time namespaces through nodelet-runc: `linux.timeOffsets` shift the container's boottime
//! and monotonic clocks (what /proc/uptime and `clock_gettime` report inside), and the
//! spec's rules on offsets are enforced.

mod container_support;
mod runc_support;

use std::collections::HashMap;

use container_support::*;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, LinuxTimeOffset, LinuxTimeOffsetBuilder, Spec};
use runc_support::*;

const TEN_DAYS: i64 = 10 * 86400;

fn offsets(boottime: i64) -> HashMap<String, LinuxTimeOffset> {
    let offset = |secs| LinuxTimeOffsetBuilder::default().secs(secs).nanosecs(0u32).build().unwrap();
    [("boottime".to_string(), offset(boottime)), ("monotonic".to_string(), offset(boottime))].into_iter().collect()
}

fn with_time(spec: &mut Spec, new_namespace: bool, boottime: i64) {
    let mut linux = spec.linux().clone().expect("linux");
    if new_namespace {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Time).build().unwrap());
        linux.set_namespaces(Some(namespaces));
    }
    linux.set_time_offsets(Some(offsets(boottime)));
    spec.set_linux(Some(linux));
}

fn host_uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn offsets_shift_the_containers_uptime() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("timens");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "cat /proc/uptime; cat /proc/self/timens_offsets"]);
    with_time(&mut spec, true, TEN_DAYS);
    write_bundle(&bundle, &spec);
    let before = host_uptime();
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    let after = host_uptime();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let inside: f64 = out.stdout.split_whitespace().next().unwrap().parse().unwrap();
    let shift = TEN_DAYS as f64;
    assert!(inside >= before + shift && inside <= after + shift + 1.0, "{inside} vs host {before}..{after}");
    let lines: Vec<Vec<&str>> = out.stdout.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.contains(&vec!["monotonic", "864000", "0"]), "{}", out.stdout);
    assert!(lines.contains(&vec!["boottime", "864000", "0"]), "{}", out.stdout);

    // The same container's exec'd processes share the namespace.
    let id = unique("timens-exec");
    let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
    with_time(&mut spec, true, TEN_DAYS);
    write_bundle(&bundle, &spec);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    cli.ok(&["start", &id]);
    let uptime = cli.ok(&["exec", &id, "cat", "/proc/uptime"]);
    let inside: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
    assert!(inside >= shift, "{uptime}");
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn offsets_need_a_new_time_namespace() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("notimens");
    let (bundle, mut spec) = env.bundle(&id, &["true"]);
    with_time(&mut spec, false, TEN_DAYS);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("linux.timeOffsets is set but linux.namespaces has no time namespace"),
        "{}",
        out.stderr
    );
    assert!(!cli.root.join(&id).exists(), "state left behind");
}
