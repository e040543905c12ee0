//! The doctor against fake host roots, and once against this host.

use std::fs;
use std::path::Path;

use super::check_names as names;
use super::*;

const V2_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
32 25 0:27 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:10 - bpf bpf rw,mode=700
";

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\nnodev\tbpf\nnodev\toverlay\n\text4\n";

struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    /// A healthy host: kernel 6.6, every namespace, BTF, the bpf sysctl, overlay and bpf
    /// filesystems, and the given mountinfo.
    fn new(mountinfo: &str) -> FakeHost {
        let host = FakeHost { dir: tempfile::tempdir().expect("tempdir") };
        host.write("proc/sys/kernel/osrelease", "6.6.0-test\n");
        for ns in ["mnt", "pid", "uts", "ipc", "net", "user", "cgroup", "time"] {
            host.write(&format!("proc/self/ns/{ns}"), "");
        }
        host.write("proc/self/mountinfo", mountinfo);
        host.write("proc/filesystems", FILESYSTEMS);
        host.write("proc/sys/kernel/unprivileged_bpf_disabled", "2\n");
        host.write("sys/kernel/btf/vmlinux", "");
        host.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        host
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, contents).expect("write");
    }

    fn remove(&self, relative: &str) {
        fs::remove_file(self.root().join(relative)).expect("remove");
    }

    fn diagnose(&self) -> DoctorReport {
        diagnose(&DoctorOptions { host_root: self.root().to_path_buf(), check_privileges: false, probe_bpf: false })
    }
}

fn status(report: &DoctorReport, name: &str) -> CheckStatus {
    report.check(name).unwrap_or_else(|| panic!("no check {name} in\n{report}")).status
}

#[test]
fn healthy_v2_host() {
    let report = FakeHost::new(V2_MOUNTINFO).diagnose();
    assert!(report.can_run_pods(), "{report}");
    assert!(report.checks.iter().all(|c| c.status == CheckStatus::Ok), "{report}");
    let mode = report.check(names::CGROUP_MODE).expect("mode");
    assert!(mode.detail.starts_with("v2"), "{mode:?}");
    assert!(report.check(names::BPFFS).expect("bpffs").detail.contains("/sys/fs/bpf"));
}

#[test]
fn hybrid_host() {
    let report = FakeHost::new(HYBRID_MOUNTINFO).diagnose();
    assert!(report.can_run_pods(), "{report}");
    assert!(report.check(names::CGROUP_MODE).expect("mode").detail.starts_with("hybrid"));
    let controllers = report.check(names::CGROUP_CONTROLLERS).expect("controllers");
    assert_eq!(controllers.status, CheckStatus::Ok, "{report}");
    assert!(!controllers.detail.contains("systemd"), "{controllers:?}");
    assert_eq!(report.check(names::BPFFS).expect("bpffs").detail, "supported (not mounted)");
}

#[test]
fn v1_host_warns_about_services_and_missing_controllers() {
    let report = FakeHost::new(V1_MOUNTINFO).diagnose();
    assert!(report.can_run_pods(), "{report}");
    assert_eq!(status(&report, names::CGROUP_MODE), CheckStatus::Warn);
    let controllers = report.check(names::CGROUP_CONTROLLERS).expect("controllers");
    assert_eq!(controllers.status, CheckStatus::Warn);
    assert!(controllers.detail.contains("cpuset"), "{controllers:?}");
}

#[test]
fn missing_required_controller_fails() {
    let host = FakeHost::new(V2_MOUNTINFO);
    host.write("sys/fs/cgroup/cgroup.controllers", "cpu io\n");
    let report = host.diagnose();
    assert_eq!(status(&report, names::CGROUP_CONTROLLERS), CheckStatus::Fail);
    assert!(!report.can_run_pods());
    assert!(report.to_string().contains("missing memory, pids"), "{report}");
}

#[test]
fn missing_overlay_fails_unless_it_is_a_module() {
    let host = FakeHost::new(V2_MOUNTINFO);
    host.write("proc/filesystems", "nodev\tcgroup2\nnodev\tbpf\n");
    let report = host.diagnose();
    assert_eq!(status(&report, names::OVERLAYFS), CheckStatus::Fail);
    assert!(!report.can_run_pods());
    assert!(report.to_string().contains("cannot run pods"), "{report}");

    host.write("lib/modules/6.6.0-test/kernel/fs/overlayfs/overlay.ko.xz", "");
    assert_eq!(status(&host.diagnose(), names::OVERLAYFS), CheckStatus::Ok);
}

#[test]
fn old_kernels() {
    let host = FakeHost::new(V2_MOUNTINFO);
    host.write("proc/sys/kernel/osrelease", "5.15.0-91-generic\n");
    assert_eq!(status(&host.diagnose(), names::KERNEL), CheckStatus::Warn);
    host.write("proc/sys/kernel/osrelease", "4.19.0\n");
    assert_eq!(status(&host.diagnose(), names::KERNEL), CheckStatus::Fail);
}

#[test]
fn missing_namespaces_btf_and_cgroups() {
    let host = FakeHost::new("");
    host.remove("proc/self/ns/pid");
    host.remove("proc/self/ns/time");
    host.remove("sys/kernel/btf/vmlinux");
    let report = host.diagnose();
    let namespaces = report.check(names::NAMESPACES).expect("namespaces");
    assert_eq!(namespaces.status, CheckStatus::Fail);
    assert_eq!(namespaces.detail, "missing pid");
    assert_eq!(status(&report, names::BTF), CheckStatus::Warn);
    assert_eq!(status(&report, names::CGROUP_MODE), CheckStatus::Fail);
}

#[test]
fn this_host_can_run_pods() {
    let report = diagnose(&DoctorOptions::host());
    println!("{report}");
    assert!(report.can_run_pods(), "{report}");
    assert_eq!(status(&report, names::KERNEL), CheckStatus::Ok);
    assert_eq!(status(&report, names::BTF), CheckStatus::Ok);
    assert_eq!(status(&report, names::NAMESPACES), CheckStatus::Ok);
    // The load-balancer really loads here (kernel 6.18 with BTF); it is never attached.
    assert_eq!(status(&report, names::BPF_PROGRAMS), CheckStatus::Ok, "{report}");
}
