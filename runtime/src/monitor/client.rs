//! The agent's async client of the monitor: a new connection per request, one JSON line each
//! way; and [`Runtime::watch`], one long-lived connection on which the monitor pushes every
//! change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{ContainerEvent, ErrorKind, Line, Request, Response};
use super::{ContainerState, RuntimeError, LOG_FILE_NAME, PID_FILE_NAME, SOCKET_NAME};

/// How long a freshly spawned monitor may take to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(15);
const SPAWN_POLL: Duration = Duration::from_millis(50);

/// Client of the node's container monitor (see docs/architecture.md).
#[derive(Clone, Debug)]
pub struct Runtime {
    root: PathBuf,
    /// The highest change number on any answer this client (and its clones) got.
    answered_seq: Arc<AtomicU64>,
}

impl Runtime {
    /// Connect to `<root>/monitor.sock`; when no monitor answers, spawn `<exe> <args...>`
    /// detached (setsid, stdio to `<root>/monitor.log`) and wait until it answers.
    pub async fn connect_or_spawn(root: &Path, exe: &Path, args: &[OsString]) -> Result<Runtime, RuntimeError> {
        if let Ok(runtime) = Self::connect(root).await {
            return Ok(runtime);
        }
        spawn_monitor(root, exe, args)?;
        let deadline = tokio::time::Instant::now() + SPAWN_TIMEOUT;
        loop {
            match Self::connect(root).await {
                Ok(runtime) => return Ok(runtime),
                // Another spawner may win the monitor's lock: keep asking until one answers.
                Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(SPAWN_POLL).await,
                Err(_) => {
                    return Err(RuntimeError::MonitorTimeout {
                        path: root.join(SOCKET_NAME),
                        seconds: SPAWN_TIMEOUT.as_secs(),
                    })
                }
            }
        }
    }

    /// Connect to a running monitor without spawning one.
    pub async fn connect(root: &Path) -> Result<Runtime, RuntimeError> {
        let runtime = Runtime { root: root.to_path_buf(), answered_seq: Arc::default() };
        match runtime.call(&Request::Ping).await? {
            Response::Ok => Ok(runtime),
            other => Err(unexpected(other)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The number of the last change the monitor had pushed to its watchers when it wrote
    /// the newest answer this client got: a watcher that has read up to it has seen every
    /// change those answers reflect.
    pub fn answered_seq(&self) -> u64 {
        self.answered_seq.load(Ordering::Acquire)
    }

    /// The pid the running monitor wrote to `<root>/monitor.pid`.
    pub fn monitor_pid(&self) -> Result<i32, RuntimeError> {
        let path = self.root.join(PID_FILE_NAME);
        let text =
            std::fs::read_to_string(&path).map_err(|source| RuntimeError::Connect { path: path.clone(), source })?;
        text.trim().parse().map_err(|_| RuntimeError::UnexpectedAnswer {
            answer: format!("pid file {} holds {text:?}", path.display()),
        })
    }

    /// Fork the container process from the bundle's config.json, paused before exec of the
    /// user process (runc's `create`). stdout+stderr go to `log_path` (O_APPEND).
    pub async fn create(&self, id: &str, bundle: &Path, log_path: &Path) -> Result<ContainerState, RuntimeError> {
        let request =
            Request::Create { id: id.to_string(), bundle: bundle.to_path_buf(), log_path: log_path.to_path_buf() };
        self.call_for_state(&request).await
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call_for_ok(&Request::Start { id: id.to_string() }).await
    }

    /// [`RuntimeError::NotFound`] when the monitor does not know `id`.
    pub async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        self.call_for_state(&Request::State { id: id.to_string() }).await
    }

    pub async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        match self.call(&Request::List).await? {
            Response::List { states } => Ok(states),
            other => Err(into_error(other, None)),
        }
    }

    /// Every container now (as of change number `seq`), and a stream of the changes that
    /// follow, in the order the monitor made them. The monitor sends a change to its
    /// watchers before it answers the request that made it.
    pub async fn watch(&self) -> Result<WatchStart, RuntimeError> {
        let path = self.root.join(SOCKET_NAME);
        let (mut lines, writer) = self.send(&Request::Watch).await?;
        let io_err = |source| RuntimeError::Connect { path: path.clone(), source };
        let first =
            lines.next_line().await.map_err(io_err)?.ok_or_else(|| RuntimeError::NoAnswer { path: path.clone() })?;
        let line = decode(&first)?;
        match line.response {
            Response::List { states } => {
                Ok(WatchStart { states, seq: line.seq, events: ContainerEvents { lines, _writer: writer, path } })
            }
            other => Err(into_error(other, None)),
        }
    }

    /// Send `signal` to the container's init. A stopped container is not an error.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let request = Request::Kill { id: id.to_string(), signal };
        self.call_for_ok(&request).await
    }

    /// Remove state and cgroup; a running container needs `force` (SIGKILL first).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let request = Request::Delete { id: id.to_string(), force };
        self.call_for_ok(&request).await
    }

    async fn call_for_ok(&self, request: &Request) -> Result<(), RuntimeError> {
        match self.call(request).await? {
            Response::Ok => Ok(()),
            other => Err(into_error(other, request_id(request))),
        }
    }

    async fn call_for_state(&self, request: &Request) -> Result<ContainerState, RuntimeError> {
        match self.call(request).await? {
            Response::State { state } => Ok(*state),
            other => Err(into_error(other, request_id(request))),
        }
    }

    async fn call(&self, request: &Request) -> Result<Response, RuntimeError> {
        let path = self.root.join(SOCKET_NAME);
        let (mut lines, _writer) = self.send(request).await?;
        match lines.next_line().await {
            Ok(Some(answer)) => {
                let line = decode(&answer)?;
                self.answered_seq.fetch_max(line.seq, Ordering::AcqRel);
                Ok(line.response)
            }
            Ok(None) => Err(RuntimeError::NoAnswer { path }),
            Err(source) => Err(RuntimeError::Connect { path, source }),
        }
    }

    /// Connect and send one request; the answer lines are read from what is returned.
    async fn send(&self, request: &Request) -> Result<(Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf), RuntimeError> {
        let path = self.root.join(SOCKET_NAME);
        let io_err = |source| RuntimeError::Connect { path: path.clone(), source };
        let mut line =
            serde_json::to_vec(request).map_err(|source| RuntimeError::Encode { what: "request", source })?;
        line.push(b'\n');
        let stream = UnixStream::connect(&path).await.map_err(io_err)?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(&line).await.map_err(io_err)?;
        Ok((BufReader::new(reader).lines(), writer))
    }
}

/// What [`Runtime::watch`] starts with.
#[derive(Debug)]
pub struct WatchStart {
    pub states: Vec<ContainerState>,
    /// The change number `states` reflect.
    pub seq: u64,
    pub events: ContainerEvents,
}

/// The changes a [`Runtime::watch`] receives.
#[derive(Debug)]
pub struct ContainerEvents {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept open: the monitor drops a watcher whose connection closes.
    _writer: OwnedWriteHalf,
    path: PathBuf,
}

impl ContainerEvents {
    /// The next change; None when the monitor closed the connection (it stopped).
    pub async fn next(&mut self) -> Result<Option<ContainerEvent>, RuntimeError> {
        let line = match self.lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(source) => return Err(RuntimeError::Connect { path: self.path.clone(), source }),
        };
        let Line { response, seq } = decode(&line)?;
        match response {
            Response::Changed { state } => Ok(Some(ContainerEvent::Changed { state: *state, seq })),
            Response::Deleted { id } => Ok(Some(ContainerEvent::Deleted { id, seq })),
            other => Err(unexpected(other)),
        }
    }
}

fn decode(line: &str) -> Result<Line, RuntimeError> {
    serde_json::from_str(line).map_err(|source| RuntimeError::Decode { what: "monitor answer", source })
}

fn request_id(request: &Request) -> Option<&str> {
    match request {
        Request::Create { id, .. }
        | Request::Start { id }
        | Request::State { id }
        | Request::Kill { id, .. }
        | Request::Delete { id, .. } => Some(id),
        Request::Ping | Request::List | Request::Watch => None,
    }
}

fn into_error(response: Response, id: Option<&str>) -> RuntimeError {
    match response {
        Response::Error { kind, message } => match (kind, id) {
            (ErrorKind::NotFound, Some(id)) => RuntimeError::NotFound { id: id.to_string() },
            (ErrorKind::AlreadyExists, Some(id)) => RuntimeError::AlreadyExists { id: id.to_string() },
            _ => RuntimeError::Monitor { message },
        },
        other => unexpected(other),
    }
}

fn unexpected(response: Response) -> RuntimeError {
    RuntimeError::UnexpectedAnswer { answer: format!("{response:?}") }
}

/// Start `<exe> <args>` in its own session with stdio on the monitor log. A thread reaps it
/// if it exits while we live, so it never lingers as our zombie.
fn spawn_monitor(root: &Path, exe: &Path, args: &[OsString]) -> Result<(), RuntimeError> {
    let spawn_err = |source| RuntimeError::Spawn { exe: exe.to_path_buf(), source };
    std::fs::create_dir_all(root).map_err(spawn_err)?;
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(root.join(LOG_FILE_NAME)).map_err(spawn_err)?;
    let log_err = log.try_clone().map_err(spawn_err)?;
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null()).stdout(log).stderr(log_err).current_dir("/");
    let mut child = crate::sys::spawn_in_new_session(&mut command).map_err(spawn_err)?;
    tracing::info!(pid = child.id(), exe = %exe.display(), "spawned container monitor");
    std::thread::Builder::new()
        .name("monitor-reaper".to_string())
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(spawn_err)?;
    Ok(())
}
