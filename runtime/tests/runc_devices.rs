//! Device rules (`linux.resources.devices`) through nodelet-runc on the v1 devices
//! controller: runc's `runc spec` rule (deny everything) plus runc's always-allowed devices;
//! the kernel refuses to open anything else, even to a process that may mknod it.

mod container_support;
mod runc_support;

use std::path::Path;

use container_support::*;
use oci_spec::runtime::{Capability, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};
use runc_support::*;

/// Makes two nodes in /tmp and opens each: 1:3 (null, allowed by runc's defaults) and 42:42
/// (EPERM when the cgroup refuses it, ENXIO when it allows it: no driver has that number).
const PROBE: &str = "busybox mknod /tmp/null2 c 1 3 && echo hi > /tmp/null2 && echo null-ok; \
                     busybox mknod /tmp/x c 42 42 && cat /tmp/x 2>&1; true";

fn with_mknod(spec: &mut Spec) {
    let mut process = spec.process().clone().expect("process");
    let mut caps = process.capabilities().clone().expect("caps");
    let add = |set: Option<std::collections::HashSet<Capability>>| {
        let mut set = set.unwrap_or_default();
        set.insert(Capability::Mknod);
        Some(set)
    };
    caps.set_bounding(add(caps.bounding().clone()));
    caps.set_effective(add(caps.effective().clone()));
    caps.set_permitted(add(caps.permitted().clone()));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));
}

fn set_device_rules(spec: &mut Spec, rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>) {
    let mut linux = spec.linux().clone().expect("linux");
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

fn deny_all() -> oci_spec::runtime::LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap()
}

#[test]
fn deny_all_keeps_runcs_defaults_and_refuses_the_rest() {
    let devices_root = Path::new("/sys/fs/cgroup/devices");
    assert!(devices_root.is_dir(), "this test reads the v1 devices controller");
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");

    let id = unique("devdeny");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", &format!("{PROBE}; sleep 1000")]);
    with_mknod(&mut spec);
    set_device_rules(&mut spec, vec![deny_all()]);
    write_bundle(&bundle, &spec);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let list_path = devices_root.join(env.cgroups_path(&id).trim_start_matches('/')).join("devices.list");
    let list = std::fs::read_to_string(&list_path).unwrap();
    let mut rules: Vec<&str> = list.lines().collect();
    rules.sort();
    let mut expected = vec![
        "b *:* m",
        "c *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 10:200 rwm",
        "c 136:* rwm",
        "c 5:0 rwm",
        "c 5:2 rwm",
    ];
    expected.sort();
    assert_eq!(rules, expected, "the kernel's list for {}", list_path.display());
    cli.ok(&["delete", "--force", &id]);

    // The same probe, run to the end: /dev/null's numbers work, 42:42 is refused.
    let id = unique("devrun");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", PROBE]);
    with_mknod(&mut spec);
    set_device_rules(&mut spec, vec![deny_all()]);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("null-ok"), "{}", out.stdout);
    assert!(out.stdout.contains("Operation not permitted"), "42:42 must be refused: {}", out.stdout);

    // An allow rule after the deny lets it through to the (absent) driver.
    let id = unique("devallow");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", PROBE]);
    with_mknod(&mut spec);
    let allow = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(42)
        .minor(42)
        .access("rw")
        .build()
        .unwrap();
    set_device_rules(&mut spec, vec![deny_all(), allow]);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("No such device or address"), "42:42 is allowed: {}", out.stdout);
}
