//! `nodelet-runc exec` end to end: processes exec'd into running busybox containers, checked by
//! what they print and by what the host sees of them; one case against Debian's runc.

mod container_support;
mod runc_support;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use container_support::*;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use runc_support::*;

/// A running `sleep` container named `name-<random>` with hostname "exec-host"; `edit`
/// changes its spec first.
fn running(env: &TestEnv, cli: &Cli, name: &str, edit: impl FnOnce(&mut oci_spec::runtime::Spec)) -> String {
    let id = unique(name);
    let (bundle, mut spec) = env.bundle(&id, &["sleep", "1000"]);
    spec.set_hostname(Some("exec-host".to_string()));
    edit(&mut spec);
    write_bundle(&bundle, &spec);
    cli.ok(&["run", "--detach", "--bundle", path_str(&bundle), &id]);
    id
}

/// The helpers of `id` still alive (their argv[0] names the container).
fn helpers_of(id: &str) -> Vec<i32> {
    let tag = format!("{}:{id}", nodelet_runtime::exec::HELPER_ARG0);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).next().is_some_and(|arg0| arg0 == tag.as_bytes())
        })
        .collect()
}

/// Only the init is left in the container, and none of its exec helpers.
fn assert_only_init(cli: &Cli, id: &str) {
    let init = cli.state(id)["pid"].as_i64().expect("pid");
    let left = || serde_json::from_str::<Vec<i64>>(&cli.ok(&["ps", "--format", "json", id])).expect("ps json");
    wait_until(Duration::from_secs(5), || left() == vec![init]);
    assert_eq!(left(), vec![init], "processes left in container {id}");
    assert!(helpers_of(id).is_empty(), "exec helpers left for {id}: {:?}", helpers_of(id));
}

/// A field of the container init's /proc status, read on the host.
fn init_status(cli: &Cli, id: &str, key: &str) -> String {
    let init = cli.state(id)["pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("init status");
    status_field(&status, key).to_string()
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or_else(|| panic!("{key} in {status}"))
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroups() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running(&env, &cli, "ns", |_| {});
    assert_eq!(cli.ok(&["exec", &id, "hostname"]), "exec-host\n");

    // In the container's pid namespace (its /proc shows only that namespace's pid), with the
    // container's capabilities and no_new_privs.
    let status = cli.ok(&["exec", &id, "cat", "/proc/self/status"]);
    let nspid: Vec<i64> = status_field(&status, "NSpid:").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(nspid.len() == 1 && nspid[0] > 1, "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(status_field(&status, caps), init_status(&cli, &id, caps), "the container's {caps}");
    }
    // Same namespaces as the init, cgroup namespace included: its cgroup is the namespace root.
    let script = "for n in mnt pid net ipc uts cgroup; do \
                  [ \"$(readlink /proc/1/ns/$n)\" = \"$(readlink /proc/self/ns/$n)\" ] || echo differs $n; done; \
                  grep '^0::' /proc/self/cgroup";
    assert_eq!(cli.ok(&["exec", &id, "sh", "-c", script]), "0::/\n");

    // Seen from the host: in the container's cgroups, listed by ps, its pid in the pid file.
    let pid_file = env.dir.path().join("exec.pid");
    cli.ok(&["exec", "--detach", "--pid-file", path_str(&pid_file), &id, "sleep", "1000"]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().expect("pid file holds a pid");
    let host_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("exec'd process alive");
    let nspid: Vec<i64> = status_field(&host_status, "NSpid:").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(nspid.len() == 2 && nspid[0] == i64::from(pid) && nspid[1] > 1, "host pid, container pid: {nspid:?}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("exec'd process alive");
    let leaf = env.cgroups_path(&id);
    assert!(cgroups.lines().any(|l| l == format!("0::{leaf}")), "unified: {cgroups}");
    assert!(cgroups.lines().any(|l| l.ends_with(&format!(":memory:{leaf}"))), "memory: {cgroups}");
    let ps: Vec<i64> = serde_json::from_str(&cli.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&i64::from(pid)), "ps {ps:?} lacks {pid}");
    assert!(helpers_of(&id).is_empty(), "a detached exec leaves no helper");
    cli.ok(&["delete", "--force", &id]);
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists()));
}

#[test]
fn exec_applies_user_env_and_cwd() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running(&env, &cli, "user", |_| {});
    assert_eq!(cli.ok(&["exec", "--user", "1000", &id, "id", "-u"]), "1000\n");
    assert_eq!(cli.ok(&["exec", "--user", "1000:1001", &id, "id"]), "uid=1000 gid=1001\n");
    assert_eq!(cli.ok(&["exec", "-g", "10", "-g", "11", &id, "id", "-G"]), "0 10 11\n");
    let out = cli.ok(&[
        "exec",
        "--env",
        "A=b c",
        "--env",
        "TERM=dumb",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $A/$TERM/$PATH; pwd",
    ]);
    assert_eq!(out, "b c/dumb//bin\n/tmp\n", "--env appends to and overrides the container's env");
    // A process.json replaces the container's process; what it leaves out comes from it.
    let process = env.dir.path().join("process.json");
    let json = serde_json::json!({ "args": ["sh", "-c", "id; umask; cat /proc/self/status | grep CapEff"],
        "cwd": "/", "env": ["PATH=/bin"], "user": { "uid": 7, "gid": 8, "umask": 63 } });
    std::fs::write(&process, json.to_string()).unwrap();
    let out = cli.ok(&["exec", "--process", path_str(&process), &id]);
    assert!(out.starts_with("uid=7 gid=8\n0077\n"), "{out}");
    let caps = init_status(&cli, &id, "CapEff:");
    assert!(out.contains(&format!("CapEff:\t{caps}")), "the container's caps, as runc gives them: {out}");
    assert_only_init(&cli, &id);
}

#[test]
fn exit_codes_are_propagated() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running(&env, &cli, "exit", |_| {});
    assert_eq!(cli.run(&["exec", &id, "sh", "-c", "exit 3"]).code, 3);
    assert_eq!(cli.run(&["exec", &id, "sh", "-c", "kill -9 $$"]).code, 137, "128+SIGKILL");
    let out = cli.run(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 0"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, "out\n", "err\n"));
    assert_only_init(&cli, &id);
}

#[test]
fn preserved_fds_reach_the_process_and_nothing_else_does() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running(&env, &cli, "fds", |_| {});
    let file = env.dir.path().join("passed");
    std::fs::write(&file, "passed on\n").unwrap();
    // Inheritable (no O_CLOEXEC), at whatever number it gets: preserve up to it.
    let fd: OwnedFd = open(&file, OFlag::O_RDONLY, Mode::empty()).expect("open");
    let n = fd.as_raw_fd();
    let preserve = (n - 2).to_string();
    let script = format!("cat <&{n}; ls /proc/self/fd | sort -n | tr '\\n' ' '");
    let out = cli.ok(&["exec", "--preserve-fds", &preserve, &id, "sh", "-c", &script]);
    drop(fd);
    assert!(out.starts_with("passed on\n"), "{out}");
    let open_fds: Vec<i32> = out.lines().nth(1).unwrap_or("").split_whitespace().map(|f| f.parse().unwrap()).collect();
    // 0-2, the passed fd, and ls's own directory fd: nothing of the helper or the host.
    assert!(open_fds.len() <= 5 && open_fds.contains(&n), "open fds {open_fds:?}");
    let unlisted = cli.ok(&["exec", &id, "sh", "-c", "ls /proc/self/fd | wc -l"]);
    assert_eq!(unlisted.trim(), "4", "0-2 and ls's own fd only");
}

#[test]
fn exec_failures_are_runcs_and_leave_nothing() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let missing = cli.run(&["exec", "nope", "true"]);
    assert_eq!(missing.code, 255);
    assert!(missing.stderr.contains("exec failed: container does not exist"), "{}", missing.stderr);

    let id = running(&env, &cli, "fail", |_| {});
    let failed = |args: &[&str], wanted: &str| {
        let out = cli.run(args);
        assert_eq!(out.code, 255, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("exec failed: ") && out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
    };
    failed(&["exec", &id, "/no/such/program"], "/no/such/program");
    failed(&["exec", "--cwd", "/no/such/dir", &id, "true"], "/no/such/dir");
    failed(&["exec", "--cwd", "tmp", &id, "true"], "cwd must be an absolute path");
    failed(&["exec", &id], "process args cannot be empty");
    failed(
        &["exec", "-d", "--tty", &id, "sh"],
        "cannot allocate tty if runc will detach without setting console socket",
    );
    let bad = env.dir.path().join("bad-process.json");
    std::fs::write(&bad, r#"{"args": "id", "cwd": "/", "user": {"uid": 0, "gid": 0}}"#).unwrap();
    failed(&["exec", "--process", path_str(&bad), &id], &format!("{}: field args", bad.display()));
    failed(&["exec", "--process", "/no/such/process.json", &id], "/no/such/process.json");
    assert_only_init(&cli, &id);

    cli.ok(&["kill", &id, "KILL"]);
    cli.wait_status(&id, "stopped");
    failed(&["exec", &id, "true"], "cannot exec in a stopped container");
    assert!(helpers_of(&id).is_empty());
}

#[test]
fn signals_reach_the_process_and_killing_exec_kills_it() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running(&env, &cli, "sig", |_| {});
    for (signal, code) in [(nix::sys::signal::Signal::SIGTERM, 143), (nix::sys::signal::Signal::SIGKILL, -1)] {
        let mut exec = std::process::Command::new(NODELET_RUNC)
            .args(["--root", path_str(&cli.root), "exec", &id, "sleep", "1000"])
            .spawn()
            .expect("exec");
        let pid = nix::unistd::Pid::from_raw(exec.id() as i32);
        assert!(wait_until(Duration::from_secs(5), || cli.ok(&["ps", "--format", "json", &id]).contains(',')));
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = exec.wait().unwrap();
        // SIGTERM is passed on (the process dies of it); SIGKILL kills exec itself, and its
        // helper then kills the process rather than leave it behind.
        assert_eq!(status.code().unwrap_or(-1), code, "{signal}");
        assert_only_init(&cli, &id);
    }
}

#[test]
fn seccomp_profile_of_the_container_applies() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
    });
    for no_new_privileges in [true, false] {
        let id = running(&env, &cli, "seccomp", |spec| {
            let mut linux = spec.linux().clone().unwrap();
            linux.set_seccomp(Some(serde_json::from_value(profile.clone()).unwrap()));
            spec.set_linux(Some(linux));
            let mut process = spec.process().clone().unwrap();
            process.set_no_new_privileges(Some(no_new_privileges));
            spec.set_process(Some(process));
        });
        let out = cli.run(&["exec", &id, "sh", "-c", "mkdir /tmp/d && echo made; grep Seccomp: /proc/self/status"]);
        assert!(out.stderr.contains("can't create directory '/tmp/d': Operation not permitted"), "{}", out.stderr);
        assert_eq!(out.stdout, "Seccomp:\t2\n", "filtered, mkdir denied (nnp {no_new_privileges})");
        cli.ok(&["delete", "--force", &id]);
    }
}

#[test]
fn same_answers_as_debian_runc() {
    assert!(Path::new(DEBIAN_RUNC).exists(), "{DEBIAN_RUNC} is missing: apt-get install -y runc");
    let env = TestEnv::new();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--user", "1000:1000"], &["id"]),
        (&["--env", "TERM=dumb"], &["env"]),
        (&["--env", "A=1", "--cwd", "/tmp"], &["sh", "-c", "echo $A; pwd; exit 3"]),
        (&["--additional-gids", "5"], &["id", "-G"]),
        (&["--no-new-privs"], &["/no/such/program"]),
    ];
    let mut answers = Vec::new();
    for (exe, name) in [(NODELET_RUNC, "nodelet"), (DEBIAN_RUNC, "runc")] {
        let cli = Cli::new(&env, exe, name);
        let id = running(&env, &cli, name, |_| {});
        for (flags, command) in cases {
            let out = cli.run(&[&["exec"], flags, &[id.as_str()], command].concat());
            answers.push((format!("{flags:?} {command:?}"), out.code, out.stdout));
        }
        cli.ok(&["delete", "--force", &id]);
    }
    let (ours, theirs) = answers.split_at(cases.len());
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a, b, "nodelet-runc vs runc");
    }
}

#[test]
fn a_created_containers_init_hides_the_runtime_binary_from_exec() {
    // CVE-2019-5736: before `start`, the init is the runtime's binary; a process exec'd into
    // the container, root with the init's own capabilities, must not reach /proc/1/exe.
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("dumpable");
    let bundle = make_bundle(&env, &id, &["sleep", "1000"]);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    let out = cli.run(&["exec", &id, "sh", "-c", "readlink /proc/1/exe || echo refused"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "refused", "/proc/1/exe must stay closed: {}", out.stdout);
    cli.ok(&["delete", "--force", &id]);
}
