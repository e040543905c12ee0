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

    // --registry-config-dir: a name that resolves nowhere, served by the registry that
    // hosts.toml names (plain HTTP); a malformed file is an error naming it.
    let certs_d = work.path().join("certs.d");
    std::fs::create_dir_all(certs_d.join("registry.invalid")).unwrap();
    let hosts = certs_d.join("registry.invalid/hosts.toml");
    std::fs::write(&hosts, format!("server = \"http://{}\"\n", registry.host)).unwrap();
    let renamed = "registry.invalid/nodelet/busybox:1";
    let config_dir = certs_d.to_str().unwrap();
    ok(&root, &["--registry-config-dir", config_dir, "pull", renamed]);
    assert!(ok(&root, &["ls"]).contains("registry.invalid/nodelet/busybox"));
    std::fs::write(&hosts, "server = 5\n").unwrap();
    let bad = nodelet(&root, &["--registry-config-dir", config_dir, "pull", renamed]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains(&hosts.display().to_string()) && stderr.contains("server"),
        "{stderr}"
    );
}

/// Every image the index lists has its manifest, config and layer blobs and its unpacked
/// layers; returns the listed references.
fn assert_store_complete(root: &Path) -> Vec<String> {
    let store = root.join("images");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).expect("index.json is JSON");
    let blob = |digest: &serde_json::Value| store.join("blobs/sha256").join(&digest.as_str().unwrap()[7..]);
    let mut listed = Vec::new();
    for (reference, record) in index["images"].as_object().unwrap() {
        assert!(blob(&record["digest"]).is_file(), "{reference}: manifest blob missing");
        assert!(blob(&record["config_digest"]).is_file(), "{reference}: config blob missing");
        for layer in record["layers"].as_array().unwrap() {
            assert!(blob(&layer["digest"]).is_file(), "{reference}: layer blob {} missing", layer["digest"]);
            let dir = store.join("layers/sha256").join(&layer["diff_id"].as_str().unwrap()[7..]);
            assert!(dir.is_dir(), "{reference}: unpacked layer {} missing", layer["diff_id"]);
        }
        listed.push(reference.clone());
    }
    listed
}

/// Start `nodelet image ARGS` without waiting.
fn spawn(root: &Path, args: &[&str]) -> (String, std::process::Child) {
    let child = Command::new(nodelet_binary())
        .arg("image")
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting nodelet image");
    (args.join(" "), child)
}

/// Wait for every process; returns (command, success, stderr).
fn wait_all(children: Vec<(String, std::process::Child)>) -> Vec<(String, bool, String)> {
    children
        .into_iter()
        .map(|(command, child)| {
            let out = child.wait_with_output().expect("waiting for nodelet image");
            (command, out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect()
}

#[test]
fn concurrent_processes_keep_the_store_consistent() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&work.path().join("registry"));
    let root = work.path().join("root");
    let busybox = format!("{}:1", registry.image("busybox"));
    let web = format!("{}:1", registry.image("web"));

    for round in 0..4 {
        // The same image twice at once, and an image sharing its base layer: nothing lost
        // from the index, nothing half there.
        let results = wait_all(vec![
            spawn(&root, &["pull", &web]),
            spawn(&root, &["pull", &web]),
            spawn(&root, &["pull", &busybox]),
        ]);
        for (command, success, stderr) in &results {
            assert!(success, "round {round}: {command} failed:\n{stderr}");
        }
        let mut listed = assert_store_complete(&root);
        listed.sort();
        assert_eq!(listed, [busybox.clone(), web.clone()], "round {round}: both pulls indexed");

        // Removal and collection racing pulls of the same content: the pulls succeed, and
        // whatever the index lists afterwards is complete.
        let results = wait_all(vec![
            spawn(&root, &["rm", &web]),
            spawn(&root, &["pull", &web]),
            spawn(&root, &["prune"]),
            spawn(&root, &["pull", &busybox]),
        ]);
        for (command, success, stderr) in &results {
            let lost_a_race = command.starts_with("rm") && stderr.contains("no such image");
            assert!(*success || lost_a_race, "round {round}: {command} failed:\n{stderr}");
        }
        assert_store_complete(&root);
        let images = ok(&root, &["ls"]);
        for reference in assert_store_complete(&root) {
            let (name, _) = reference.rsplit_once(':').unwrap();
            assert!(images.contains(name), "round {round}: ls shows {reference}:\n{images}");
        }

        // Back to empty, with no work left behind by any of the processes.
        ok(&root, &["prune"]);
        let blobs = root.join("images/blobs/sha256");
        let layers = root.join("images/layers/sha256");
        assert_eq!((count(&blobs), count(&layers)), (0, 0), "round {round}");
        let tmp = root.join("images/tmp");
        assert!(count(&tmp) <= 1, "only the last process's work directory, swept by the next opener");
    }
}
