//! The agent's async client of the monitor: a new connection per request, one JSON line each
//! way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{ErrorKind, Request, Response};
use super::{ContainerState, RuntimeError, LOG_FILE_NAME, PID_FILE_NAME, SOCKET_NAME};

/// How long a freshly spawned monitor may take to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(15);
const SPAWN_POLL: Duration = Duration::from_millis(50);

/// Client of the node's container monitor (see docs/architecture.md).
#[derive(Clone, Debug)]
pub struct Runtime {
    root: PathBuf,
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
        let runtime = Runtime { root: root.to_path_buf() };
        match runtime.call(&Request::Ping).await? {
            Response::Ok => Ok(runtime),
            other => Err(unexpected(other)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        let io_err = |source| RuntimeError::Connect { path: path.clone(), source };
        let mut line =
            serde_json::to_vec(request).map_err(|source| RuntimeError::Encode { what: "request", source })?;
        line.push(b'\n');
        let stream = UnixStream::connect(&path).await.map_err(io_err)?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(&line).await.map_err(io_err)?;
        let mut answer = String::new();
        BufReader::new(reader).read_line(&mut answer).await.map_err(io_err)?;
        if answer.is_empty() {
            return Err(RuntimeError::NoAnswer { path });
        }
        serde_json::from_str(&answer).map_err(|source| RuntimeError::Decode { what: "monitor answer", source })
    }
}

fn request_id(request: &Request) -> Option<&str> {
    match request {
        Request::Create { id, .. }
        | Request::Start { id }
        | Request::State { id }
        | Request::Kill { id, .. }
        | Request::Delete { id, .. } => Some(id),
        Request::Ping | Request::List => None,
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
