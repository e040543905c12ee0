//! User namespaces through nodelet-runc, as runc's own userns tests run them: container ids
//! 0-65535 mapped to host 100000-165535, over a rootfs chowned for them; the init is root
//! inside and nobody outside, proc, sysfs, devpts, mqueue and the default devices work, and
//! a second container can join the first one's user namespace by path.

mod container_support;
mod runc_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use container_support::*;
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use runc_support::*;

const HOST_BASE: u32 = 100000;
const SIZE: u32 = 65536;

fn mapping() -> Vec<LinuxIdMapping> {
    vec![LinuxIdMappingBuilder::default().container_id(0u32).host_id(HOST_BASE).size(SIZE).build().unwrap()]
}

/// The spec's namespaces with `user` added (a new one, or the one at `path`), and the maps.
fn with_userns(spec: &mut Spec, path: Option<&str>, maps: bool) {
    let mut linux = spec.linux().clone().expect("linux");
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut user = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
    if let Some(path) = path {
        user = user.path(path);
    }
    namespaces.push(user.build().unwrap());
    linux.set_namespaces(Some(namespaces));
    if maps {
        linux.set_uid_mappings(Some(mapping()));
        linux.set_gid_mappings(Some(mapping()));
    }
    spec.set_linux(Some(linux));
}

fn without_namespace(spec: &mut Spec, kind: LinuxNamespaceType) {
    let mut linux = spec.linux().clone().expect("linux");
    let namespaces = linux.namespaces().clone().unwrap_or_default().into_iter().filter(|ns| ns.typ() != kind);
    linux.set_namespaces(Some(namespaces.collect()));
    spec.set_linux(Some(linux));
}

/// Give the rootfs to the container's root, and let it walk the path down to the bundle
/// (the test's temp dir is 0700), as runc's tests do.
fn prepare_for_userns(env: &TestEnv, bundle: &Path) {
    chown_tree(&bundle.join("rootfs"), HOST_BASE);
    let mut dir = bundle.to_path_buf();
    while dir.starts_with(env.dir.path()) {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        if !dir.pop() {
            break;
        }
    }
}

fn chown_tree(path: &Path, id: u32) {
    std::os::unix::fs::lchown(path, Some(id), Some(id)).expect("lchown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), id);
        }
    }
}

const PROBE: &str = "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; \
    touch /tmp/made && ls -ln /tmp/made; echo x > /dev/null && echo null-ok; \
    ls /sys/kernel >/dev/null && echo sysfs-ok; ls /dev/pts/ptmx && echo devpts-ok; \
    ls -ld /dev/mqueue >/dev/null && echo mqueue-ok; cat /proc/1/cmdline | tr '\\0' ' '; echo";

#[test]
fn the_init_is_root_inside_and_mapped_outside() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("userns");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", &format!("{PROBE}; sleep 1000")]);
    with_userns(&mut spec, None, true);
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let log = env.dir.path().join("userns.out");
    let out = std::fs::File::create(&log).unwrap();
    let status = std::process::Command::new(NODELET_RUNC)
        .args(["--root", path_str(&cli.root), "create", "--bundle", path_str(&bundle), &id])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    let _cleanup = DeleteOnDrop(&cli, &id);
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let pid = cli.state(&id)["pid"].as_i64().expect("pid");
    let host_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = host_status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert_eq!(uids.split_whitespace().collect::<Vec<_>>(), ["Uid:", "100000", "100000", "100000", "100000"]);
    let host_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(host_map.split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"]);

    cli.ok(&["start", &id]);
    let mut text = String::new();
    wait_until(std::time::Duration::from_secs(10), || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("sh -c")
    });
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(&lines[..2], ["0", "0"], "root in the namespace: {text}");
    assert!(text.contains("0     100000      65536") || lines[2].split_whitespace().eq(["0", "100000", "65536"]));
    assert!(lines.iter().any(|l| l.split_whitespace().nth(2) == Some("0") && l.ends_with("/tmp/made")), "{text}");
    for marker in ["null-ok", "sysfs-ok", "devpts-ok", "mqueue-ok"] {
        assert!(lines.contains(&marker), "{marker} missing: {text}");
    }
    // What the container made on its rootfs belongs to the mapped id on the host.
    let made = std::fs::metadata(bundle.join("rootfs/tmp/made")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), HOST_BASE);
    // An exec'd process joins the user namespace too.
    let ids = cli.ok(&["exec", "--user", "1000:1000", &id, "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert!(ids.starts_with("1000\n"), "{ids}");
    assert!(ids.lines().nth(1).is_some_and(|l| l.split_whitespace().eq(["0", "100000", "65536"])), "{ids}");
    cli.ok(&["delete", "--force", &id]);
}

/// Deletes the container on drop, so a failed assertion leaves nothing behind.
struct DeleteOnDrop<'a>(&'a Cli, &'a str);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["delete", "--force", self.1]);
    }
}

#[test]
fn without_a_network_namespace_sysfs_is_the_hosts() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("usernet");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "ls /sys/class/net"]);
    with_userns(&mut spec, None, true);
    without_namespace(&mut spec, LinuxNamespaceType::Network);
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.lines().any(|l| l.trim() == "lo"), "the host's interfaces: {}", out.stdout);
}

#[test]
fn mappings_without_a_user_namespace_are_refused() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("nouserns");
    let (bundle, mut spec) = env.bundle(&id, &["true"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_uid_mappings(Some(mapping()));
    spec.set_linux(Some(linux));
    write_bundle(&bundle, &spec);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("linux.uidMappings is set but linux.namespaces has no user namespace"),
        "{}",
        out.stderr
    );
    assert!(!cli.root.join(&id).exists(), "state left behind");
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(&id).exists()), "cgroup left behind");

    let id = unique("nomaps");
    let (bundle, mut spec) = env.bundle(&id, &["true"]);
    with_userns(&mut spec, None, false);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("linux.uidMappings and linux.gidMappings are empty"), "{}", out.stderr);
}

#[test]
fn a_second_container_joins_the_first_ones_user_and_network_namespaces() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let first = unique("owner");
    let (bundle, mut spec) = env.bundle(&first, &["sleep", "1000"]);
    with_userns(&mut spec, None, true);
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    cli.ok(&["create", "--bundle", path_str(&bundle), &first]);
    let pid = cli.state(&first)["pid"].as_i64().expect("pid");

    let second = unique("joiner");
    let user_ns = format!("/proc/{pid}/ns/user");
    let net_ns = format!("/proc/{pid}/ns/net");
    let script = "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/net; hostname";
    let (bundle, mut spec) = env.bundle(&second, &["sh", "-c", script]);
    with_userns(&mut spec, Some(&user_ns), true); // the same maps: accepted, as runc does
    let mut linux = spec.linux().clone().unwrap();
    let namespaces = linux.namespaces().clone().unwrap_or_default().into_iter().map(|ns| {
        if ns.typ() == LinuxNamespaceType::Network {
            LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(net_ns.as_str()).build().unwrap()
        } else {
            ns
        }
    });
    linux.set_namespaces(Some(namespaces.collect()));
    spec.set_linux(Some(linux));
    spec.set_hostname(Some("joiner".to_string()));
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &second]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{}", out.stdout);
    assert!(lines[1].split_whitespace().eq(["0", "100000", "65536"]), "{}", out.stdout);
    let first_net = std::fs::read_link(&net_ns).unwrap();
    assert_eq!(lines[2], first_net.to_str().unwrap(), "the first container's netns");
    assert_eq!(lines[3], "joiner", "a new uts namespace, owned by the joined user namespace");

    // Mappings that are not the joined namespace's are refused, naming the field.
    let third = unique("mismatch");
    let (bundle, mut spec) = env.bundle(&third, &["true"]);
    with_userns(&mut spec, Some(&user_ns), false);
    let mut linux = spec.linux().clone().unwrap();
    let other = LinuxIdMappingBuilder::default().container_id(0u32).host_id(200000u32).size(10u32).build().unwrap();
    linux.set_uid_mappings(Some(vec![other]));
    spec.set_linux(Some(linux));
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &third]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("linux.uidMappings does not match"), "{}", out.stderr);
    assert!(!cli.root.join(&third).exists(), "state left behind");
    cli.ok(&["delete", "--force", &first]);
}

/// Add `mounts[]` entry binding `source` at `destination` with the given id maps (oci-spec's
/// Mount has no field for them: written into config.json directly).
fn add_idmapped_mount(bundle: &Path, source: &Path, destination: &str, host_base: u32) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let maps = serde_json::json!([{"containerID": 0, "hostID": host_base, "size": SIZE}]);
    config["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": destination, "type": "bind", "source": source, "options": ["bind"],
        "uidMappings": maps, "gidMappings": maps,
    }));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// A host directory owned by root with a file of uid 1000, shared without a chown.
fn shared_dir(env: &TestEnv) -> std::path::PathBuf {
    let dir = env.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("of-1000"), "x").unwrap();
    std::os::unix::fs::lchown(dir.join("of-1000"), Some(1000), Some(1000)).unwrap();
    dir
}

#[test]
fn an_idmapped_mount_shows_host_files_with_the_containers_ids() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let shared = shared_dir(&env);
    let script = "ls -ln /shared | tr -s ' ' | cut -d' ' -f3,9 | sort; touch /shared/new && echo write-ok";
    let id = unique("idmap");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", script]);
    with_userns(&mut spec, None, true);
    write_bundle(&bundle, &spec);
    add_idmapped_mount(&bundle, &shared, "/shared", HOST_BASE);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(lines.contains(&"1000 of-1000"), "ids as on the host, seen through the maps: {}", out.stdout);
    assert!(lines.contains(&"write-ok"), "the container's root owns the root-owned dir: {}", out.stdout);
    let made = std::fs::metadata(shared.join("new")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 0, "written as root on the host");

    // Without a user namespace, the mount's maps alone shift the ids.
    let id = unique("idmap-host");
    let (bundle, spec) = env.bundle(&id, &["sh", "-c", "ls -ln /shared/of-1000 | tr -s ' ' | cut -d' ' -f3"]);
    write_bundle(&bundle, &spec);
    add_idmapped_mount(&bundle, &shared, "/shared", HOST_BASE);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "101000");
}

#[test]
fn an_idmapped_mount_must_be_a_bind_with_both_maps() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("idmap-bad");
    let (bundle, spec) = env.bundle(&id, &["true"]);
    write_bundle(&bundle, &spec);
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
    }));
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = cli.run(&["create", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("(/scratch): id-mapped mounts are only supported for bind mounts"), "{}", out.stderr);
    assert!(!cli.root.join(&id).exists(), "state left behind");
}

fn with_kmsg_device(spec: &mut Spec) {
    let kmsg = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/kmsg")
        .typ(oci_spec::runtime::LinuxDeviceType::C)
        .major(1)
        .minor(11)
        .file_mode(0o600u32)
        .uid(1000u32)
        .gid(0u32)
        .build()
        .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_devices(Some(vec![kmsg]));
    spec.set_linux(Some(linux));
}

#[test]
fn spec_devices_are_made_or_bound_in_a_user_namespace() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let listing = ["sh", "-c", "ls -ln /dev/kmsg | tr -s ' ' | cut -d' ' -f1,3,5,6"];
    // Without a user namespace: mknod, with the spec's mode and owner.
    let id = unique("devnode");
    let (bundle, mut spec) = env.bundle(&id, &listing);
    with_kmsg_device(&mut spec);
    write_bundle(&bundle, &spec);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "crw------- 1000 1, 11");

    // In one: the host's node, bind-mounted (owned by the host's root: nobody inside).
    let id = unique("devbind");
    let (bundle, mut spec) = env.bundle(&id, &listing);
    with_kmsg_device(&mut spec);
    with_userns(&mut spec, None, true);
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "crw-r--r-- 65534 1, 11", "the host's /dev/kmsg");
}

#[test]
fn same_answers_as_debian_runc() {
    if !Path::new(DEBIAN_RUNC).exists() {
        eprintln!("no {DEBIAN_RUNC}: nothing to compare with");
        return;
    }
    let env = TestEnv::new();
    let mut outputs = Vec::new();
    for (exe, name) in [(NODELET_RUNC, "nodelet"), (DEBIAN_RUNC, "runc")] {
        let cli = Cli::new(&env, exe, name);
        let id = unique(name);
        let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", PROBE]);
        with_userns(&mut spec, None, true);
        write_bundle(&bundle, &spec);
        prepare_for_userns(&env, &bundle);
        let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        // ls -ln's date column differs run to run: keep mode, owner and name.
        let lines: Vec<String> = out
            .stdout
            .lines()
            .map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                if l.ends_with("/tmp/made") {
                    format!("{} {} {}", fields[0], fields[2], fields[fields.len() - 1])
                } else {
                    fields.join(" ")
                }
            })
            .collect();
        outputs.push(lines);
    }
    assert_eq!(outputs[0], outputs[1], "nodelet (left) and runc (right)");
}

#[test]
fn a_time_namespace_inside_a_user_namespace_and_a_joined_pid_namespace() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let first = unique("pidowner");
    let (bundle, mut spec) = env.bundle(&first, &["sleep", "1000"]);
    with_userns(&mut spec, None, true);
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    cli.ok(&["create", "--bundle", path_str(&bundle), &first]);
    cli.ok(&["start", &first]);
    let pid = cli.state(&first)["pid"].as_i64().expect("pid");

    // A second container in the first one's user and pid namespaces, with a time namespace
    // of its own (owned by that user namespace) five days ahead.
    let second = unique("pidjoiner");
    let script = "cat /proc/1/cmdline | tr '\\0' ' '; echo; cut -d' ' -f1 /proc/uptime";
    let (bundle, mut spec) = env.bundle(&second, &["sh", "-c", script]);
    with_userns(&mut spec, Some(&format!("/proc/{pid}/ns/user")), false);
    let mut linux = spec.linux().clone().unwrap();
    let pid_ns = format!("/proc/{pid}/ns/pid");
    let mut namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|ns| {
            if ns.typ() == LinuxNamespaceType::Pid {
                LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).path(pid_ns.as_str()).build().unwrap()
            } else {
                ns
            }
        })
        .collect();
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Time).build().unwrap());
    linux.set_namespaces(Some(namespaces));
    let offset = oci_spec::runtime::LinuxTimeOffsetBuilder::default().secs(5 * 86400i64).build().unwrap();
    linux.set_time_offsets(Some([("boottime".to_string(), offset)].into_iter().collect()));
    spec.set_linux(Some(linux));
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let host_uptime: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &second]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "sleep 1000", "pid 1 is the first container's init: {}", out.stdout);
    let uptime: f64 = lines[1].parse().unwrap();
    assert!(uptime >= host_uptime + 5.0 * 86400.0, "{uptime} vs host {host_uptime}");
    cli.ok(&["delete", "--force", &first]);
}

#[test]
fn a_new_user_namespace_joins_a_network_namespace_of_the_host() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    // The pod's network namespace, as a sandbox would hold it: owned by the host's user
    // namespace (here a plain container's).
    let sandbox = unique("sandbox");
    let bundle = make_bundle(&env, &sandbox, &["sleep", "1000"]);
    cli.ok(&["create", "--bundle", path_str(&bundle), &sandbox]);
    let pid = cli.state(&sandbox)["pid"].as_i64().expect("pid");
    let net_ns = format!("/proc/{pid}/ns/net");

    let id = unique("usernet-join");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "id -u; readlink /proc/self/ns/net; ls /sys/class/net"]);
    with_userns(&mut spec, None, true);
    let mut linux = spec.linux().clone().unwrap();
    let namespaces = linux.namespaces().clone().unwrap_or_default().into_iter().map(|ns| {
        if ns.typ() == LinuxNamespaceType::Network {
            LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(net_ns.as_str()).build().unwrap()
        } else {
            ns
        }
    });
    linux.set_namespaces(Some(namespaces.collect()));
    spec.set_linux(Some(linux));
    write_bundle(&bundle, &spec);
    prepare_for_userns(&env, &bundle);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{}", out.stdout);
    assert_eq!(lines[1], std::fs::read_link(&net_ns).unwrap().to_str().unwrap(), "the sandbox's netns");
    assert!(lines[2..].contains(&"lo"), "sysfs (bound from the host) lists interfaces: {}", out.stdout);
    cli.ok(&["delete", "--force", &sandbox]);
}
