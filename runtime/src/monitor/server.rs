//! The monitor process: one thread, one poll loop over the listening socket, a signalfd for
//! SIGCHLD, client connections and the pidfds of adopted containers. No async runtime: the
//! monitor forks container processes, which is only sound while single-threaded.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::containers::{reap_children, Containers};
use super::protocol::{ErrorKind, Line, Request, Response};
use super::store;
use super::{RuntimeError, PID_FILE_NAME, SOCKET_NAME};
use crate::error_chain;

const LOCK_FILE_NAME: &str = "monitor.lock";
/// A client that sends more than this without a newline is dropped.
const MAX_REQUEST_BYTES: usize = 1 << 20;
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connected clients, and the number of the last change sent to watchers.
struct Clients {
    list: Vec<Client>,
    seq: u64,
}

struct Client {
    stream: UnixStream,
    pending: Vec<u8>,
    /// Sent `watch`: gets every change pushed to it.
    watching: bool,
    /// Done or broken: removed at the end of the poll round (indices stay valid until then).
    closed: bool,
}

/// The monitor's main loop; the `nodelet monitor --root DIR` subcommand calls it. Never
/// returns Ok while serving; single-threaded (it forks).
pub fn run_monitor(root: &Path) -> Result<(), RuntimeError> {
    let setup_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Setup { what, path, source }
    };
    std::fs::create_dir_all(store::containers_dir(root)).map_err(setup_err("create runtime root", root))?;
    let _lock = take_lock(root)?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|source| RuntimeError::Sys { what: "become child subreaper", source })?;
    let signals = block_sigchld()?;
    let listener = bind_socket(root)?;
    let pid_path = root.join(PID_FILE_NAME);
    std::fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(setup_err("write pid file", &pid_path))?;
    let mut containers = Containers::load(root)?;
    tracing::info!(root = %root.display(), pid = std::process::id(), "container monitor serving");
    serve(&listener, &signals, &mut containers)
}

/// One monitor per root: the flock is released by the kernel when the monitor dies.
fn take_lock(root: &Path) -> Result<Flock<std::fs::File>, RuntimeError> {
    let path = root.join(LOCK_FILE_NAME);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RuntimeError::Setup { what: "open lock file", path: path.clone(), source })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| RuntimeError::AlreadyRunning { path })
}

fn block_sigchld() -> Result<SignalFd, RuntimeError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|source| RuntimeError::Sys { what: "block SIGCHLD", source })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|source| RuntimeError::Sys { what: "create signalfd", source })
}

/// Bind `<root>/monitor.sock` (root-only). We hold the lock, so an existing socket file is
/// a dead monitor's leftover.
fn bind_socket(root: &Path) -> Result<UnixListener, RuntimeError> {
    let path = root.join(SOCKET_NAME);
    let bind_err = |what: &'static str| {
        let path = path.clone();
        move |source| RuntimeError::Setup { what, path, source }
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err("remove stale socket")(e)),
    }
    let listener = UnixListener::bind(&path).map_err(bind_err("bind socket"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err("restrict socket"))?;
    listener.set_nonblocking(true).map_err(bind_err("make socket non-blocking"))?;
    Ok(listener)
}

/// What became ready in one poll round.
#[derive(Default)]
struct Ready {
    listener: bool,
    signals: bool,
    clients: Vec<usize>,
    adopted_exits: Vec<String>,
}

fn serve(listener: &UnixListener, signals: &SignalFd, containers: &mut Containers) -> Result<(), RuntimeError> {
    // Change numbers start at the clock, so a restarted monitor's numbers are higher than
    // any its predecessor gave out and a client waiting for an old number is not stuck.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut clients = Clients { list: Vec::new(), seq: u64::try_from(start.as_micros()).unwrap_or(0) };
    loop {
        let ready = wait_ready(listener, signals, &clients.list, containers)?;
        if ready.signals {
            drain_signals(signals);
            for (pid, code, killed) in reap_children() {
                containers.child_exited(pid, code, killed);
            }
        }
        for id in &ready.adopted_exits {
            containers.adopted_exited(id);
        }
        broadcast(&mut clients, containers);
        for index in ready.clients {
            serve_client(index, &mut clients, containers);
        }
        clients.list.retain(|client| !client.closed);
        if ready.listener {
            accept_clients(listener, &mut clients.list);
        }
    }
}

fn wait_ready(
    listener: &UnixListener,
    signals: &SignalFd,
    clients: &[Client],
    containers: &Containers,
) -> Result<Ready, RuntimeError> {
    let adopted = containers.pidfds();
    let mut fds =
        vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    fds.extend(clients.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
    fds.extend(adopted.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
        Err(source) => return Err(RuntimeError::Sys { what: "poll", source }),
    }
    let is_ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    let clients_start = 2;
    let adopted_start = clients_start + clients.len();
    Ok(Ready {
        listener: is_ready(&fds[0]),
        signals: is_ready(&fds[1]),
        clients: (0..clients.len()).filter(|i| is_ready(&fds[clients_start + i])).collect(),
        adopted_exits: adopted
            .iter()
            .enumerate()
            .filter(|(i, _)| is_ready(&fds[adopted_start + i]))
            .map(|(_, (id, _))| id.clone())
            .collect(),
    })
}

fn drain_signals(signals: &SignalFd) {
    while let Ok(Some(_)) = signals.read_signal() {}
}

fn accept_clients(listener: &UnixListener, clients: &mut Vec<Client>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // Reads happen only after poll says readable; writes may block briefly.
                if stream.set_nonblocking(false).is_err()
                    || stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT)).is_err()
                {
                    continue;
                }
                clients.push(Client { stream, pending: Vec::new(), watching: false, closed: false });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept on monitor socket failed");
                return;
            }
        }
    }
}

/// Read what client `index` sent and answer each complete line; marks it closed when it is
/// done or misbehaves.
fn serve_client(index: usize, clients: &mut Clients, containers: &mut Containers) {
    let Some(lines) = read_lines(&mut clients.list[index]) else {
        clients.list[index].closed = true;
        return;
    };
    for line in lines {
        let (response, watch) = answer(&line, containers);
        // Watchers hear of a change before the client that made it hears the answer.
        broadcast(clients, containers);
        let answer = Line { response, seq: clients.seq };
        let client = &mut clients.list[index];
        if !send(&mut client.stream, &answer) {
            client.closed = true;
            return;
        }
        client.watching |= watch;
    }
}

/// The complete lines the client has sent so far; None when it closed the connection or
/// sent an overlong line.
fn read_lines(client: &mut Client) -> Option<Vec<Vec<u8>>> {
    let mut buf = [0u8; 8192];
    let n = match client.stream.read(&mut buf) {
        Ok(0) => return None,
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Some(Vec::new()),
        Err(_) => return None,
    };
    client.pending.extend_from_slice(&buf[..n]);
    let mut lines = Vec::new();
    while let Some(end) = client.pending.iter().position(|b| *b == b'\n') {
        lines.push(client.pending.drain(..=end).collect());
    }
    (client.pending.len() <= MAX_REQUEST_BYTES).then_some(lines)
}

fn send(stream: &mut UnixStream, line: &Line) -> bool {
    let Ok(mut json) = serde_json::to_vec(line) else {
        return false;
    };
    json.push(b'\n');
    stream.write_all(&json).is_ok()
}

/// Send every change since the last broadcast to the watchers: the container's new state,
/// or `Deleted` when it is gone. A watcher that cannot take it is dropped (it re-lists when
/// it reconnects).
fn broadcast(clients: &mut Clients, containers: &mut Containers) {
    let changes = containers.take_changes();
    let watched = clients.list.iter().any(|c| c.watching && !c.closed);
    for id in changes {
        clients.seq += 1;
        if !watched {
            continue;
        }
        let response = match containers.state(&id) {
            Ok(state) => Response::Changed { state: Box::new(state) },
            Err(_) => Response::Deleted { id },
        };
        let line = Line { response, seq: clients.seq };
        for client in clients.list.iter_mut().filter(|c| c.watching && !c.closed) {
            if !send(&mut client.stream, &line) {
                tracing::warn!("dropping a watcher that does not read its events");
                client.closed = true;
            }
        }
    }
}

/// The answer to one request line, and whether the client now watches.
fn answer(line: &[u8], containers: &mut Containers) -> (Response, bool) {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => {
            return (Response::Error { kind: ErrorKind::Failed, message: format!("malformed request: {e}") }, false)
        }
    };
    let watch = matches!(request, Request::Watch);
    tracing::debug!(?request, "request");
    let result = match request {
        Request::Ping => Ok(Response::Ok),
        Request::Create { id, bundle, log_path } => {
            containers.create(&id, &bundle, &log_path).map(|state| Response::State { state: Box::new(state) })
        }
        Request::Start { id } => containers.start(&id).map(|()| Response::Ok),
        Request::State { id } => containers.state(&id).map(|state| Response::State { state: Box::new(state) }),
        // A watch starts with the whole list; the changes follow.
        Request::List | Request::Watch => Ok(Response::List { states: containers.list() }),
        Request::Kill { id, signal } => containers.kill(&id, signal).map(|()| Response::Ok),
        Request::Delete { id, force } => containers.delete(&id, force).map(|()| Response::Ok),
    };
    let response = result.unwrap_or_else(|error| {
        let kind = match &error {
            RuntimeError::NotFound { .. } => ErrorKind::NotFound,
            RuntimeError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            RuntimeError::InvalidState { .. } => ErrorKind::InvalidState,
            _ => ErrorKind::Failed,
        };
        let message = error_chain(&error);
        tracing::warn!(%message, "request failed");
        Response::Error { kind, message }
    });
    (response, watch)
}
