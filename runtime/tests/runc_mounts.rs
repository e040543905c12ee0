//! Mount options of runtime-spec 1.1+ through nodelet-runc: the recursive attributes ("rro",
//! "rnoexec", ...) reach the submounts of an rbind, where the plain ones stop at its top.

mod container_support;
mod runc_support;

use std::path::{Path, PathBuf};

use container_support::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::MountBuilder;
use runc_support::*;

/// A host directory with a tmpfs mounted below it; unmounted on drop.
struct TreeWithSubmount {
    dir: PathBuf,
}

impl TreeWithSubmount {
    fn new(env: &TestEnv) -> TreeWithSubmount {
        let dir = env.dir.path().join("tree");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        mount(Some("tmpfs"), &dir.join("sub"), Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();
        TreeWithSubmount { dir }
    }
}

impl Drop for TreeWithSubmount {
    fn drop(&mut self) {
        let _ = umount2(&self.dir.join("sub"), MntFlags::MNT_DETACH);
    }
}

const PROBE: &str = "touch /data/top 2>&1; touch /data/sub/below 2>&1; echo done";

fn run_with_options(env: &TestEnv, cli: &Cli, source: &Path, options: &[&str]) -> Vec<String> {
    let id = unique("mounts");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", PROBE]);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    mounts.push(
        MountBuilder::default().destination("/data").typ("bind").source(source).options(options).build().unwrap(),
    );
    spec.set_mounts(Some(mounts));
    write_bundle(&bundle, &spec);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn rro_makes_the_submounts_read_only_too() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let tree = TreeWithSubmount::new(&env);
    let read_only = |line: &String| line.ends_with("Read-only file system");

    let plain = run_with_options(&env, &cli, &tree.dir, &["rbind", "ro"]);
    assert!(read_only(&plain[0]), "ro: the top is read-only: {plain:?}");
    assert_eq!(plain[1], "done", "ro: the submount stays writable: {plain:?}");
    assert!(tree.dir.join("sub/below").exists());

    let recursive = run_with_options(&env, &cli, &tree.dir, &["rbind", "rro"]);
    assert_eq!(recursive.len(), 3, "{recursive:?}");
    assert!(read_only(&recursive[0]) && read_only(&recursive[1]), "rro: both: {recursive:?}");
}
