//! The rest of `linux.resources` on cgroup v1 through nodelet-runc: swappiness,
//! disableOOMKiller, per-device block I/O throttles (at create and with `update -r`), and
//! the clear errors for what this host's hierarchies cannot do (unified, hugetlb without its
//! controller), with nothing left behind.

mod container_support;
mod runc_support;

use std::path::{Path, PathBuf};

use container_support::*;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResources, LinuxThrottleDeviceBuilder,
    Spec,
};
use runc_support::*;

fn v1_file(env: &TestEnv, id: &str, controller: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller).join(env.cgroups_path(id).trim_start_matches('/')).join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

fn set_resources(spec: &mut Spec, edit: impl FnOnce(&mut LinuxResources)) {
    let mut linux = spec.linux().clone().expect("linux");
    let mut resources = linux.resources().clone().unwrap_or_default();
    edit(&mut resources);
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

/// A real block device's major:minor (a disk if there is one, else any).
fn block_device() -> (i64, i64) {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").expect("/sys/block").filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) else { continue };
        let Some((major, minor)) = dev.trim().split_once(':') else { continue };
        let disk = !["loop", "zram", "ram"].iter().any(|p| name.starts_with(p));
        found.push((!disk, major.parse().unwrap(), minor.parse().unwrap()));
    }
    found.sort();
    let (_, major, minor) = *found.first().expect("a block device");
    (major, minor)
}

fn throttle(major: i64, minor: i64, rate: u64) -> oci_spec::runtime::LinuxThrottleDevice {
    LinuxThrottleDeviceBuilder::default().major(major).minor(minor).rate(rate).build().unwrap()
}

#[test]
fn memory_knobs_and_block_throttles_land_at_create_and_update() {
    assert!(Path::new("/sys/fs/cgroup/blkio").is_dir(), "this test reads cgroup v1 files");
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("resources");
    let (major, minor) = block_device();
    let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
    set_resources(&mut spec, |r| {
        r.set_memory(Some(LinuxMemoryBuilder::default().swappiness(10u64).disable_oom_killer(true).build().unwrap()));
        r.set_block_io(Some(
            LinuxBlockIoBuilder::default()
                .throttle_read_bps_device(vec![throttle(major, minor, 1 << 20)])
                .throttle_write_iops_device(vec![throttle(major, minor, 100)])
                .build()
                .unwrap(),
        ));
    });
    write_bundle(&bundle, &spec);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let file = |c: &str, f: &str| read(&v1_file(&env, &id, c, f));
    assert_eq!(file("memory", "memory.swappiness"), "10");
    assert!(file("memory", "memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(file("blkio", "blkio.throttle.read_bps_device"), format!("{major}:{minor} 1048576"));
    assert_eq!(file("blkio", "blkio.throttle.write_iops_device"), format!("{major}:{minor} 100"));

    let json = env.dir.path().join("throttle.json");
    let update = format!(
        r#"{{"blockIO": {{"throttleWriteBpsDevice": [{{"major": {major}, "minor": {minor}, "rate": 2097152}}]}},
            "memory": {{"swappiness": 30}}}}"#
    );
    std::fs::write(&json, update).unwrap();
    cli.ok(&["update", "-r", path_str(&json), &id]);
    assert_eq!(file("blkio", "blkio.throttle.write_bps_device"), format!("{major}:{minor} 2097152"));
    assert_eq!(file("memory", "memory.swappiness"), "30");
    assert_eq!(file("blkio", "blkio.throttle.read_bps_device"), format!("{major}:{minor} 1048576"), "untouched");
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn what_the_host_cannot_do_fails_create_cleanly() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let assert_nothing_left = |id: &str| {
        assert!(!cli.root.join(id).exists(), "state dir left behind");
        assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(id).exists()), "cgroup left behind");
    };

    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let id = unique("unified");
        let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
        set_resources(&mut spec, |r| {
            r.set_unified(Some([("memory.high".to_string(), "1M".to_string())].into()));
        });
        write_bundle(&bundle, &spec);
        let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("linux.resources.unified is not supported on cgroup v1"), "{}", out.stderr);
        assert_nothing_left(&id);
    }

    let id = unique("hugetlb");
    let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
    let limit = LinuxHugepageLimitBuilder::default().page_size("2MB").limit(4i64 << 21).build().unwrap();
    set_resources(&mut spec, |r| {
        r.set_hugepage_limits(Some(vec![limit]));
    });
    write_bundle(&bundle, &spec);
    if Path::new("/sys/fs/cgroup/hugetlb").is_dir() {
        cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
        assert_eq!(read(&v1_file(&env, &id, "hugetlb", "hugetlb.2MB.limit_in_bytes")), "8388608");
        cli.ok(&["delete", "--force", &id]);
    } else {
        let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("no hugetlb controller for cgroup"), "{}", out.stderr);
        assert_nothing_left(&id);
    }
}
