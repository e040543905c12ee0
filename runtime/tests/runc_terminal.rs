//! `process.terminal` with `--console-socket` through nodelet-runc, as containerd and
//! podman use it: the test listens on the socket, receives the pty master (SCM_RIGHTS, named
//! "/dev/ptmx"), starts the container and reads what the process writes to its terminal.

mod container_support;
mod runc_support;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use container_support::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::BoxBuilder;
use runc_support::*;

/// One message from the console socket: its text and the fd it carried.
fn receive_master(listener: &UnixListener) -> (String, OwnedFd) {
    let (stream, _) = listener.accept().expect("the runtime connects");
    let (name, master) = nodelet_runtime::sys::test_support::receive_fd(stream.as_fd()).expect("a message with an fd");
    (String::from_utf8_lossy(&name).into_owned(), master)
}

/// Everything readable from the master until the slave side closes (EIO) or `timeout`.
fn read_all(master: &OwnedFd, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::try_from(left).unwrap()).unwrap_or(0) == 0 {
            break;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(_) => break, // EIO once the last slave fd is closed
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_process_runs_on_a_pty_sent_over_the_console_socket() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("tty");
    let script = "busybox tty; busybox stty size; echo hello; \
                  [ /dev/console -ef \"$(busybox tty)\" ] && echo console-is-the-pty";
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", script]);
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    process.set_console_size(Some(BoxBuilder::default().height(24u64).width(100u64).build().unwrap()));
    spec.set_process(Some(process));
    write_bundle(&bundle, &spec);

    let socket = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || receive_master(&listener));
    cli.ok(&["create", "--bundle", path_str(&bundle), "--console-socket", path_str(&socket), &id]);
    let (name, master) = receiver.join().expect("receiver");
    assert_eq!(name, "/dev/ptmx");
    cli.ok(&["start", &id]);
    let text = read_all(&master, Duration::from_secs(10));
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert_eq!(lines.first().copied(), Some("/dev/pts/0"), "the container's own devpts: {text:?}");
    assert!(lines.contains(&"24 100"), "consoleSize applied: {text:?}");
    assert!(lines.contains(&"hello"), "{text:?}");
    assert!(lines.contains(&"console-is-the-pty"), "{text:?}");
    cli.wait_status(&id, "stopped");
    cli.ok(&["delete", &id]);
}

/// A running container for the exec tests (no terminal of its own).
fn running_container(env: &TestEnv, cli: &Cli) -> String {
    let id = unique("exec-tty");
    let bundle = make_bundle(env, &id, &["sleep", "1000"]);
    cli.ok(&["create", "--bundle", path_str(&bundle), &id]);
    cli.ok(&["start", &id]);
    id
}

#[test]
fn exec_detached_with_a_tty_sends_the_master_over_the_console_socket() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running_container(&env, &cli);
    let socket = env.dir.path().join("exec-console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || receive_master(&listener));
    let pid_file = env.dir.path().join("exec.pid");
    cli.ok(&[
        "exec",
        "--detach",
        "--tty",
        "--console-socket",
        path_str(&socket),
        "--pid-file",
        path_str(&pid_file),
        &id,
        "sh",
        "-c",
        "busybox tty; echo from-exec; [ -t 0 ] && echo stdin-is-tty",
    ]);
    let (name, master) = receiver.join().expect("receiver");
    assert_eq!(name, "/dev/ptmx");
    let text = read_all(&master, Duration::from_secs(10));
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    // The init has no terminal: the exec's pty is the first of the container's devpts.
    assert_eq!(lines.first().copied(), Some("/dev/pts/0"), "{text:?}");
    assert!(lines.contains(&"from-exec"), "{text:?}");
    assert!(lines.contains(&"stdin-is-tty"), "{text:?}");
    assert!(std::fs::read_to_string(&pid_file).unwrap().parse::<i32>().unwrap() > 0);
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_with_a_tty_in_the_foreground_relays_it() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running_container(&env, &cli);
    let out = cli.run(&["exec", "-t", &id, "sh", "-c", "busybox tty; echo relayed; exit 3"]);
    assert_eq!(out.code, 3, "the exit code comes through: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    assert!(lines.first().is_some_and(|l| l.starts_with("/dev/pts/")), "{:?}", out.stdout);
    assert!(lines.contains(&"relayed"), "{:?}", out.stdout);
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_terminal_flags_follow_runcs_rules() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = running_container(&env, &cli);
    let socket = env.dir.path().join("unused.sock");
    let cases: [(&[&str], &str); 3] = [
        (&["-d", "-t"], "cannot allocate tty if runc will detach without setting console socket"),
        (&["-t", "--console-socket", path_str(&socket)], "cannot use console socket if runc will not detach"),
        (&["-d", "--console-socket", path_str(&socket)], "cannot use console socket if runc will not detach"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&id, "true"]);
        let out = cli.run(&args);
        assert_eq!(out.code, 255, "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    // Debian's runc says the same, with the same exit code.
    if std::path::Path::new(DEBIAN_RUNC).exists() {
        let runc = Cli::new(&env, DEBIAN_RUNC, "runc");
        let runc_id = unique("runc-tty");
        let bundle = make_bundle(&env, &runc_id, &["sleep", "1000"]);
        runc.ok(&["create", "--bundle", path_str(&bundle), &runc_id]);
        let out = runc.run(&["exec", "-d", "-t", &runc_id, "true"]);
        assert_eq!(out.code, 255, "{}", out.stderr);
        assert!(out.stderr.contains("cannot allocate tty if runc will detach without setting console socket"));
        runc.ok(&["delete", "--force", &runc_id]);
    }
    cli.ok(&["delete", "--force", &id]);
}

#[test]
fn run_in_the_foreground_relays_the_terminal() {
    let env = TestEnv::new();
    let cli = Cli::new(&env, NODELET_RUNC, "nodelet");
    let id = unique("run-tty");
    let (bundle, mut spec) = env.bundle(&id, &["sh", "-c", "busybox tty; echo on-the-pty; exit 7"]);
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    write_bundle(&bundle, &spec);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), &id]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    assert_eq!(lines.first().copied(), Some("/dev/pts/0"), "{:?}", out.stdout);
    assert!(lines.contains(&"on-the-pty"), "{:?}", out.stdout);
    assert!(!cli.root.join(&id).exists(), "deleted after the run");

    // A console socket is for detached runs only, as runc says.
    let socket = env.dir.path().join("run.sock");
    let id = unique("run-sock");
    let bundle = make_bundle(&env, &id, &["true"]);
    let out = cli.run(&["run", "--bundle", path_str(&bundle), "--console-socket", path_str(&socket), &id]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot use console socket if runc will not detach or allocate tty"), "{}", out.stderr);
}
