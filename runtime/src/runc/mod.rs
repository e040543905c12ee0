//! `nodelet-runc`: a runc-compatible command line over nodelet's container code, for tools
//! that expect runc (containerd shims, podman, the OCI validation suite).
//!
//! No daemon: as with runc, `create` clones the container init (through the same
//! [`crate::container::spawn`] the monitor uses) and exits, so the init is re-parented to the
//! caller's subreaper. State lives in `<root>/<id>/state.json`, written by the monitor's
//! store code. One file per command, like youki's `commands/`.

mod container;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kill;
mod list;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod tty_relay;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use container::RuncStatus;

/// Where state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/nodelet-runc";

#[derive(Debug, Parser)]
#[command(name = "nodelet-runc", version, about = "nodelet's OCI runtime, with runc's command line")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalOptions {
    /// Directory for container state (a tmpfs is best).
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Write logs (and errors) to this file instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility: cgroups are always driven through cgroupfs.
    #[arg(long = "systemd-cgroup", global = true, hide = true)]
    pub systemd_cgroup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its init waits for `start`).
    Create(create::CreateArgs),
    /// Run the user process of a created container.
    Start(start::StartArgs),
    /// Print the state of a container as the runtime spec's JSON.
    State(state::StateArgs),
    /// Send a signal to the container's init (or, with --all, to every process).
    Kill(kill::KillArgs),
    /// Delete a container and everything it holds.
    Delete(delete::DeleteArgs),
    /// Create and start a container; without --detach, wait and exit with its code.
    Run(run::RunArgs),
    /// List containers.
    List(list::ListArgs),
    /// Freeze every process of a container.
    Pause(pause::PauseArgs),
    /// Thaw a paused container.
    Resume(pause::PauseArgs),
    /// Change the resource limits of a running container.
    Update(Box<update::UpdateArgs>),
    /// Print the container's stats, or stream stats and OOM events.
    Events(events::EventsArgs),
    /// Show the processes of a container.
    Ps(ps::PsArgs),
    /// Run one more process in a created or running container.
    Exec(Box<exec::ExecArgs>),
    /// Write a default config.json into the current directory.
    Spec(spec::SpecArgs),
    /// Print the runtime-spec features document of this implementation.
    Features,
}

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("container does not exist")]
    NotExist,
    #[error("container with id exists: {id}")]
    Exists { id: String },
    #[error("invalid id format: {id}")]
    InvalidId { id: String },
    #[error("cannot start an already running container")]
    AlreadyRunning,
    #[error("cannot start a container that has stopped")]
    StartStopped,
    #[error("cannot start a container in the {0} state")]
    StartInState(RuncStatus),
    #[error("container not paused")]
    NotPaused,
    #[error("container has no cgroup")]
    NoCgroup,
    #[error("cannot exec in a paused container")]
    ExecPaused,
    #[error("container not running")]
    NotRunning,
    #[error("cannot exec in a stopped container")]
    ExecStopped,
    /// Every error of `exec`, which runc reports with this prefix and exit code 255.
    #[error("exec failed")]
    ExecFailed(#[source] Box<RuncError>),
    #[error(transparent)]
    Exec(Box<crate::exec::ExecError>),
    #[error("invalid process file {path}: field {field}")]
    BadProcess {
        path: PathBuf,
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: RuncStatus },
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    #[error("cannot allocate tty if runc will detach without setting console socket")]
    Terminal,
    #[error("cannot use console socket if runc will not detach or allocate tty")]
    ConsoleWithoutTerminal,
    #[error("rootless containers are not supported yet")]
    Rootless,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("invalid config.json")]
    Spec(#[source] crate::container::SpecError),
    #[error("{0}")]
    BadConfig(String),
    #[error("rootfs ({path}) does not exist")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create container")]
    Spawn(#[source] Box<crate::container::ContainerError>),
    #[error("invalid hook in config.json")]
    Hook(#[source] Box<crate::container::hooks::HookError>),
    #[error("cannot start container: {0}")]
    StartHook(String),
    #[error("cgroup {path}")]
    Cgroup {
        path: String,
        #[source]
        source: Box<crate::cgroups::CgroupError>,
    },
    #[error("container state")]
    State(#[source] Box<crate::monitor::RuntimeError>),
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Run one command; returns the process exit code (`run` exits with the container's).
pub fn execute(cli: &Cli) -> Result<i32, RuncError> {
    let root = &cli.global.root;
    match &cli.command {
        Command::Create(args) => create::create(root, args).map(|_| 0),
        Command::Start(args) => start::start(root, &args.id).map(|()| 0),
        Command::State(args) => state::print_state(root, &args.id).map(|()| 0),
        Command::Kill(args) => kill::kill(root, args).map(|()| 0),
        Command::Delete(args) => delete::delete(root, &args.id, args.force).map(|()| 0),
        Command::Run(args) => run::run(root, args),
        Command::List(args) => list::list(root, args).map(|()| 0),
        Command::Pause(args) => pause::pause(root, &args.id).map(|()| 0),
        Command::Resume(args) => pause::resume(root, &args.id).map(|()| 0),
        Command::Update(args) => update::update(root, args).map(|()| 0),
        Command::Events(args) => events::events(root, args).map(|()| 0),
        Command::Ps(args) => ps::ps(root, args),
        Command::Exec(args) => exec::exec(root, args).map_err(|e| RuncError::ExecFailed(Box::new(e))),
        Command::Spec(args) => spec::write_spec(args).map(|()| 0),
        Command::Features => features::print_features().map(|()| 0),
    }
}

impl RuncError {
    /// The exit code runc uses for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuncError::ExecFailed(_) => 255,
            _ => 1,
        }
    }
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuncError {
    let path = path.into();
    move |source| RuncError::Io { what, path, source }
}

/// Print `value` as indented JSON on stdout, as runc does for `state`.
fn print_json(what: &'static str, value: &impl serde::Serialize) -> Result<(), RuncError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| RuncError::Encode { what, source })?;
    println!("{text}");
    Ok(())
}
