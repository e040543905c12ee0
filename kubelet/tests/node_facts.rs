//! Gathering machine facts from a fake host root.

use std::fs;
use std::path::Path;

use nodelet_kubelet::node::{FactSources, NodeFacts};

fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, contents).expect("write");
}

#[test]
fn gathers_facts_from_a_fake_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    write(r, "proc/cpuinfo", "processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2\n");
    write(r, "proc/meminfo", "MemTotal:        4000000 kB\nMemFree: 1 kB\n");
    write(r, "proc/sys/kernel/hostname", "Worker-A\n");
    write(r, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
    write(r, "proc/sys/kernel/random/boot_id", "b0071d\n");
    write(r, "etc/os-release", "PRETTY_NAME=\"Test OS 1\"\n");
    write(r, "etc/machine-id", "abc123\n");
    write(r, "sys/class/dmi/id/product_uuid", "UUID-1\n");
    write(r, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "4\n");
    write(r, "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "0\n");
    let facts = NodeFacts::gather(&FactSources {
        host_root: r.to_path_buf(),
        storage_dir: r.join("var/lib/nodelet"),
        probe_interfaces: false,
    })
    .expect("facts");
    assert_eq!(facts.hostname, "worker-a");
    assert_eq!(facts.cpu_count, 3);
    assert_eq!(facts.memory_bytes, 4_000_000 * 1024);
    assert!(facts.ephemeral_storage_bytes > 0);
    assert_eq!(facts.kernel_version, "6.1.0-18-amd64");
    assert_eq!(facts.os_image, "Test OS 1");
    assert_eq!(facts.machine_id, "abc123");
    assert_eq!(facts.system_uuid, "UUID-1");
    assert_eq!(facts.boot_id, "b0071d");
    assert_eq!(facts.internal_ip, None);
    let pages: Vec<(u64, u64)> = facts.hugepages.iter().map(|p| (p.page_size_bytes, p.count)).collect();
    assert_eq!(pages, [(2 << 20, 4), (1 << 30, 0)]);
}

#[test]
fn optional_facts_default_and_required_ones_fail() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    write(r, "proc/cpuinfo", "processor\t: 0\n");
    write(r, "proc/sys/kernel/hostname", "h\n");
    write(r, "proc/sys/kernel/osrelease", "6.1\n");
    let sources = FactSources { host_root: r.to_path_buf(), storage_dir: r.to_path_buf(), probe_interfaces: false };
    let error = NodeFacts::gather(&sources).expect_err("no meminfo");
    assert!(error.to_string().contains("meminfo"), "{error}");
    write(r, "proc/meminfo", "MemTotal: 1024 kB\n");
    let facts = NodeFacts::gather(&sources).expect("facts");
    assert_eq!(facts.os_image, "Linux");
    assert_eq!(facts.machine_id, "");
}

#[test]
fn gathers_facts_on_this_host() {
    let facts = NodeFacts::gather(&FactSources::host("/var/lib/nodelet")).expect("host facts");
    assert!(facts.cpu_count >= 1);
    assert!(facts.memory_bytes > 0);
    assert!(!facts.hostname.is_empty());
    assert!(facts.internal_ip.is_some(), "this VM has a default route: {facts:?}");
}
