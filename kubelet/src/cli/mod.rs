//! Command line of the `nodelet` binary, in the habits of kubelet, kube-proxy and runc.

pub mod logging;

mod agent;
mod doctor;
mod image;
mod monitor;
mod proxy;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "nodelet",
    version = nodelet_kubelet::VERSION,
    about = "A Kubernetes node agent: kubelet, a native container runtime and eBPF service load-balancing in one daemon"
)]
pub struct Cli {
    /// Log verbosity: -v for debug logs of nodelet, -vv for everything (RUST_LOG overrides).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbosity: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run as a cluster node: register the Node, heartbeat, run its pods, load-balance Services.
    Agent(agent::AgentArgs),
    /// Standalone mode: run the static pods and Services of a manifest directory, no API server.
    Run(run::RunArgs),
    /// The eBPF Service proxy alone, as kube-proxy runs (and `proxy list`, `proxy cleanup`).
    Proxy(proxy::ProxyArgs),
    /// Check whether this host can run pods, and print a report.
    Doctor(doctor::DoctorArgs),
    /// Manage the node's images: pull, ls, inspect, rm, prune.
    Image(image::ImageArgs),
    /// The node's container monitor (started by the agent; parents every container).
    #[command(hide = true)]
    Monitor(monitor::MonitorArgs),
}

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent(args) => agent::run(args),
        Command::Run(args) => run::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Image(args) => image::run(args),
        Command::Monitor(args) => monitor::run(args),
    }
}

/// A multi-threaded tokio runtime for the long-running subcommands. The monitor never uses
/// one: it forks.
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Cancels the token on SIGINT or SIGTERM.
fn cancel_on_signals(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers; stop nodelet with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
}
