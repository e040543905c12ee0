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

/// The container's cgroup in the hybrid host's unified hierarchy, where the filter attaches.
fn unified_dir(env: &TestEnv, id: &str) -> std::path::PathBuf {
    Path::new("/sys/fs/cgroup/unified").join(env.cgroups_path(id).trim_start_matches('/'))
}

/// Device programs attached to the cgroup directory itself.
fn attached_filters(dir: &Path) -> usize {
    let cgroup = std::fs::File::open(dir).expect("cgroup dir");
    nodelet_runtime::sys::bpf::prog_query(
        std::os::fd::AsFd::as_fd(&cgroup),
        nodelet_runtime::sys::bpf::ATTACH_CGROUP_DEVICE,
    )
    .expect("query")
    .len()
}

/// Open 42:42 for reading and for writing, and write to /dev/null: each outcome on a line.
const FILTER_PROBE: &str = "busybox mknod /tmp/x c 42 42; cat /tmp/x 2>&1; (echo w > /tmp/x) 2>&1; \
                            echo hi > /dev/null && echo null-ok";

/// `create` with the container's stdout and stderr in `out` (it inherits the command's).
fn create_with_output(cli: &Cli, bundle: &Path, id: &str, out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    let status = std::process::Command::new(&cli.exe)
        .args(["--root", path_str(&cli.root), "create", "--bundle", path_str(bundle), id])
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success(), "create {id}: {}", std::fs::read_to_string(out).unwrap_or_default());
}

#[test]
fn the_bpf_filter_on_the_unified_cgroup_enforces_the_rules_alone() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    assert!(unified.join("cgroup.procs").exists(), "this test needs the hybrid host's unified hierarchy");
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let read_only = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(42)
        .minor(42)
        .access("r")
        .build()
        .unwrap();
    let denied = "Operation not permitted";
    let no_driver = "No such device or address";
    for (name, rules, read, write) in
        [("bpfdeny", vec![deny_all()], denied, denied), ("bpfread", vec![deny_all(), read_only], no_driver, denied)]
    {
        let id = unique(name);
        let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", FILTER_PROBE]);
        with_mknod(&mut spec);
        set_device_rules(&mut spec, rules);
        write_bundle(&bundle, &spec);
        let out = env.dir.path().join(format!("{id}.out"));
        create_with_output(&cli, &bundle, &id, &out);
        let dir = unified_dir(&env, &id);
        assert_eq!(attached_filters(&dir), 1, "one filter on {}", dir.display());
        // Open the v1 controller wide: from now on only the BPF program decides.
        let v1 = Path::new("/sys/fs/cgroup/devices").join(env.cgroups_path(&id).trim_start_matches('/'));
        std::fs::write(v1.join("devices.allow"), "a").unwrap();
        assert_eq!(std::fs::read_to_string(v1.join("devices.list")).unwrap().trim(), "a *:* rwm");
        cli.ok(&["start", &id]);
        cli.wait_status(&id, "stopped");
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(read), "{name}: read of 42:42: {text}");
        assert!(lines[1].ends_with(write), "{name}: write of 42:42: {text}");
        assert_eq!(lines[2], "null-ok", "{name}: runc's defaults stay allowed: {text}");
        cli.ok(&["delete", &id]);
        assert!(!dir.exists(), "the unified cgroup is gone with its filter");
    }
}

#[test]
fn a_deny_inside_an_allowed_wildcard_is_refused() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("bpfhole");
    let (bundle, mut spec) = env.bundle(&id, &["true"]);
    let all_pts = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(136).access("rwm");
    let one_pts =
        LinuxDeviceCgroupBuilder::default().allow(false).typ(LinuxDeviceType::C).major(136).minor(3).access("w");
    set_device_rules(&mut spec, vec![deny_all(), all_pts.build().unwrap(), one_pts.build().unwrap()]);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot punch a hole in the wildcard rule"), "{}", out.stderr);
    assert!(out.stderr.contains("c 136:* rwm"), "{}", out.stderr);
    assert!(!cli.root.join(&id).exists(), "state left behind");
    assert!(!unified_dir(&env, &id).exists(), "cgroup left behind");
}
