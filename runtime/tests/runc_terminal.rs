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
    let (name, master) = nodelet_runtime::sys::receive_fd(stream.as_fd()).expect("a message with an fd");
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
