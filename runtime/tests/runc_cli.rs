//! nodelet-runc end to end, driven through the binary as runc's callers drive runc: busybox
//! bundles, a state root and cgroup parent per test, and everything removed on drop.

mod container_support;
mod runc_support;

use std::path::Path;

use container_support::*;
use runc_support::*;
use serde_json::Value;

#[test]
fn lifecycle_create_start_kill_delete() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("life");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    let pid_file = env.dir.path().join("life.pid");
    cli.ok(&["create", "--bundle", path_str(&bundle), "--pid-file", path_str(&pid_file), &id]);

    let state = cli.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], path_str(&bundle.canonicalize().unwrap()));
    assert_eq!(state["annotations"]["org.example.test"], id.as_str());
    let pid = state["pid"].as_i64().expect("pid");
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());

    cli.ok(&["start", &id]);
    assert_eq!(cli.state(&id)["status"], "running");
    let ps: Vec<i64> = serde_json::from_str(&cli.ok(&["ps", "--format", "json", &id])).expect("ps json");
    assert_eq!(ps, vec![pid]);

    let again = cli.run(&["start", &id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("cannot start an already running container"), "{}", again.stderr);
    let busy = cli.run(&["delete", &id]);
    assert_eq!(busy.code, 1);
    assert!(busy.stderr.contains("that is not stopped: running"), "{}", busy.stderr);

    cli.ok(&["kill", &id, "KILL"]);
    let state = cli.wait_status(&id, "stopped");
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["pid"], 0);
    let dead = cli.run(&["kill", &id, "TERM"]);
    assert_eq!(dead.code, 1);
    assert!(dead.stderr.contains("container not running"), "{}", dead.stderr);

    cli.ok(&["delete", &id]);
    assert!(!cli.root.join(&id).exists(), "state dir left behind");
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(&id).exists()), "cgroup left behind");
    let gone = cli.run(&["state", &id]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("container does not exist"), "{}", gone.stderr);
}

#[test]
fn run_propagates_exit_code_and_cleans_up() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("exit7");
    let bundle = make_bundle(&env, &id, &["sh", "-c", "echo out; exit 7"]);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 7, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "out\n", "the container writes to the caller's stdout");
    assert!(!cli.root.join(&id).exists(), "run leaves no state behind");

    let detached = unique("detached");
    let bundle = make_bundle(&env, &detached, &["sleep", "1000"]);
    cli.ok(&["run", "-d", "--bundle", path_str(&bundle), &detached]);
    assert_eq!(cli.state(&detached)["status"], "running");
    cli.ok(&["delete", "--force", &detached]);
    assert_eq!(cli.run(&["state", &detached]).code, 1);
}

#[test]
fn list_shows_runc_table_and_json() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    assert_eq!(cli.ok(&["list"]), "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n");
    assert_eq!(cli.ok(&["list", "--format", "json"]).trim(), "null");
    let ids = [unique("list-a"), unique("list-b")];
    for id in &ids {
        let bundle = make_bundle(&env, id, &["sleep", "1000"]);
        cli.ok(&["create", "--bundle", path_str(&bundle), id]);
    }
    cli.ok(&["start", &ids[1]]);

    let table = cli.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID ") && lines[0].ends_with("OWNER"), "{table}");
    let mut sorted = ids.clone();
    sorted.sort();
    for (line, id) in lines[1..].iter().zip(&sorted) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], id.as_str());
        assert_eq!(cols[2], if *id == ids[1] { "running" } else { "created" });
        assert_eq!(cols[5], "root");
    }
    let quiet = cli.ok(&["list", "-q"]);
    assert_eq!(quiet.lines().collect::<Vec<_>>(), sorted.iter().map(String::as_str).collect::<Vec<_>>());
    let json: Vec<Value> = serde_json::from_str(&cli.ok(&["list", "--format", "json"])).expect("list json");
    assert_eq!(json.len(), 2);
    assert!(json.iter().all(|c| c["owner"] == "root" && c["pid"].as_i64().unwrap_or(0) > 0));
    for id in &ids {
        cli.ok(&["delete", "--force", id]);
    }
    assert_eq!(cli.ok(&["list", "-q"]), "");
}

#[test]
fn spec_and_features_documents() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let dir = env.dir.path().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    cli.ok(&["spec", "--bundle", path_str(&dir)]);
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json")).expect("spec parses as an OCI spec");
    assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap(), &["sh".to_string()]);
    assert_eq!(cli.run(&["spec", "--bundle", path_str(&dir)]).code, 1, "an existing config.json is kept");
    let rootless = cli.run(&["spec", "--rootless", "--bundle", path_str(&dir)]);
    assert_eq!(rootless.code, 1);
    assert!(rootless.stderr.contains("not supported"), "{}", rootless.stderr);

    let features: Value = serde_json::from_str(&cli.ok(&["features"])).expect("features JSON");
    assert_eq!(features["ociVersionMax"], "1.2.0");
    let hooks = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];
    assert_eq!(features["hooks"], Value::from(hooks.to_vec()));
    let seccomp = &features["linux"]["seccomp"];
    assert_eq!(seccomp["enabled"], true);
    let listed = |key: &str| seccomp[key].as_array().unwrap_or_else(|| panic!("seccomp.{key}")).clone();
    assert!(listed("actions").contains(&Value::from("SCMP_ACT_ERRNO")));
    assert!(!listed("actions").contains(&Value::from("SCMP_ACT_NOTIFY")), "no seccomp agent support: say so");
    assert_eq!(listed("operators").len(), 7);
    assert!(listed("archs").contains(&Value::from("SCMP_ARCH_X86_64")));
    assert!(listed("knownFlags").contains(&Value::from("SECCOMP_FILTER_FLAG_LOG")));
    assert!(listed("supportedFlags").contains(&Value::from("SECCOMP_FILTER_FLAG_TSYNC")));
    assert!(features["annotations"]["io.github.seccomp.libseccomp.version"].as_str().is_some_and(|v| !v.is_empty()));
    let namespaces = features["linux"]["namespaces"].as_array().expect("namespaces");
    for kind in ["pid", "user", "time"] {
        assert!(namespaces.contains(&Value::from(kind)), "{kind}: {namespaces:?}");
    }
    assert_eq!(features["linux"]["mountExtensions"]["idmap"]["enabled"], true);
}

#[test]
fn errors_are_runcs_and_leave_nothing() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    for args in [&["state", "nope"][..], &["start", "nope"], &["kill", "nope"], &["delete", "nope"], &["ps", "nope"]] {
        let out = cli.run(args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains("container does not exist"), "{args:?}: {}", out.stderr);
    }
    assert_eq!(cli.run(&["delete", "--force", "nope"]).code, 0, "runc: delete --force of nothing succeeds");

    let id = unique("twice");
    let bundle_dir = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["create", "--bundle", path_str(&bundle_dir), &id]);
    let twice = cli.run(&["create", "--bundle", path_str(&bundle_dir), &id]);
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.contains(&format!("container with id exists: {id}")), "{}", twice.stderr);
    assert_eq!(cli.state(&id)["status"], "created", "the failed create did not touch the first");
    let kill_bad = cli.run(&["kill", &id, "NOSUCHSIG"]);
    assert_eq!(kill_bad.code, 1);
    cli.ok(&["delete", &id]); // a created container is deleted without --force, as runc does

    // A config.json with a field of the wrong type: an error naming it, nothing left behind.
    let bad = unique("bad");
    let bad_bundle = make_bundle(&env, &bad, &["true"]);
    let mut config: Value = serde_json::from_slice(&std::fs::read(bad_bundle.join("config.json")).unwrap()).unwrap();
    config["process"]["args"] = Value::from("not-a-list");
    std::fs::write(bad_bundle.join("config.json"), config.to_string()).unwrap();
    let out = cli.run(&["create", "--bundle", path_str(&bad_bundle), &bad]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("config.json") && out.stderr.contains("args"), "{}", out.stderr);
    assert!(!cli.root.join(&bad).exists());

    // A missing executable fails create, and the cgroup and state go with it.
    let missing = unique("missing");
    let missing_bundle = make_bundle(&env, &missing, &["/no/such/program"]);
    let out = cli.run(&["create", "--bundle", path_str(&missing_bundle), &missing]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/no/such/program"), "{}", out.stderr);
    assert!(!cli.root.join(&missing).exists());
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(&missing).exists()));

    // terminal: true needs a console socket, and one that answers; runc's messages.
    let tty = unique("tty");
    let (tty_bundle, mut spec) = env.bundle(&tty, &["sh"]);
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    write_bundle(&tty_bundle, &spec);
    let out = cli.run(&["create", "--bundle", path_str(&tty_bundle), &tty]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot allocate tty if runc will detach without setting console socket"),
        "{}",
        out.stderr
    );
    let nowhere = env.dir.path().join("nobody-listens.sock");
    let out = cli.run(&["create", "--bundle", path_str(&tty_bundle), "--console-socket", path_str(&nowhere), &tty]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot connect to console socket"), "{}", out.stderr);
    assert!(env.leftover_cgroups().iter().all(|c| !c.join("pod").join(&tty).exists()));
    let plain =
        cli.run(&["create", "--bundle", path_str(&missing_bundle), "--console-socket", path_str(&nowhere), &tty]);
    assert_eq!(plain.code, 1);
    assert!(
        plain.stderr.contains("cannot use console socket if runc will not detach or allocate tty"),
        "{}",
        plain.stderr
    );
    assert!(!cli.root.join(&tty).exists());
}

#[test]
fn state_has_the_same_keys_as_debian_runc() {
    assert!(Path::new(DEBIAN_RUNC).exists(), "{DEBIAN_RUNC} is missing: apt-get install -y runc");
    let env = TestEnv::new();
    let ours = Cli::new(&env, NODELET_RUNC, "nodelet");
    let theirs = Cli::new(&env, DEBIAN_RUNC, "runc");
    let mut keys = Vec::new();
    for cli in [&ours, &theirs] {
        let id = unique("keys");
        let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
        cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
        let created = cli.state(&id);
        assert_eq!(created["status"], "created", "{}", cli.exe.display());
        cli.ok(&["start", &id]);
        let running = cli.state(&id);
        assert_eq!(running["status"], "running", "{}", cli.exe.display());
        let mut k: Vec<String> = running.as_object().expect("object").keys().cloned().collect();
        k.sort();
        keys.push(k);
        cli.ok(&["delete", "--force", &id]);
    }
    assert_eq!(keys[0], keys[1], "nodelet-runc vs runc state keys");
}
