//! `nodelet image pull|ls|inspect|rm|prune` against a local docker-registry with the test
//! images, in a temp --root-dir. Needs root (the registry scripts install packages).

use std::path::Path;
use std::process::{Command, Output};

use nodelet_tests::harness::{nodelet_binary, require_root, TestRegistry};

fn nodelet(root: &Path, args: &[&str]) -> Output {
    Command::new(nodelet_binary())
        .arg("image")
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running nodelet image")
}

/// stdout of a command that must succeed.
fn ok(root: &Path, args: &[&str]) -> String {
    let out = nodelet(root, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nodelet image {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn pull_ls_inspect_rm_prune() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&work.path().join("registry"));
    let root = work.path().join("root");
    let busybox = format!("{}:1", registry.image("busybox"));
    let web = format!("{}:1", registry.image("web"));

    // pull: plain progress lines on a non-terminal stderr, the digest on stdout.
    let out = nodelet(&root, &["pull", &web]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pull failed: {stderr}");
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "pull printed {digest:?}");
    assert!(stderr.contains("downloading") && stderr.contains("done"), "no progress lines:\n{stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains("=>"), "no progress bars when stderr is not a TTY:\n{stderr}");
    ok(&root, &["pull", &busybox]);

    // ls: a crictl-like table.
    let table = ok(&root, &["ls"]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["IMAGE", "TAG", "IMAGE ID", "SIZE"], "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    let web_row: Vec<&str> =
        lines.iter().find(|l| l.starts_with(&registry.image("web"))).expect("web listed").split_whitespace().collect();
    assert_eq!(web_row[1], "1");
    assert_eq!(web_row[2].len(), 12, "IMAGE ID is 12 hex digits: {table}");
    assert!(web_row[2].chars().all(|c| c.is_ascii_hexdigit()));
    assert!(web_row[3].ends_with("kB") || web_row[3].ends_with("MB"), "human size: {table}");

    // inspect: JSON with the documented fields.
    let json: serde_json::Value = serde_json::from_str(&ok(&root, &["inspect", &web])).expect("inspect prints JSON");
    assert_eq!(json["reference"], web);
    assert_eq!(json["digest"], digest);
    assert_eq!(json["repoDigest"], format!("{}@{digest}", registry.image("web")));
    assert!(json["size"].as_u64().unwrap() > 100_000);
    assert_eq!(json["config"]["config"]["Cmd"][0], "httpd");
    assert!(json["id"].as_str().unwrap().contains(web_row[2]));
    let missing = nodelet(&root, &["inspect", &format!("{}:nope", registry.image("web"))]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("web:nope"));

    // rm web: busybox's shared layer stays; web's own layer, config and manifest go.
    let blobs = root.join("images/blobs/sha256");
    let layers = root.join("images/layers/sha256");
    assert_eq!((count(&blobs), count(&layers)), (6, 2), "2 manifests, 2 configs, 2 layer blobs");
    assert!(ok(&root, &["rm", &web]).contains("Deleted"));
    assert_eq!((count(&blobs), count(&layers)), (3, 1));
    assert!(!ok(&root, &["ls"]).contains("/web"));
    let again = nodelet(&root, &["rm", &web]);
    assert!(!again.status.success(), "removing an absent image fails");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no such image"));

    // prune: nothing is mounted, so busybox goes and the store is empty.
    let pruned = ok(&root, &["prune"]);
    assert!(pruned.contains(&busybox), "{pruned}");
    assert_eq!((count(&blobs), count(&layers)), (0, 0));
    assert_eq!(ok(&root, &["ls"]).lines().count(), 1, "only the header is left");
}
