//! `nodelet monitor`: the node's container monitor process (see docs/architecture.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// The runtime's state directory (the agent passes <root-dir>/runtime).
    #[arg(long)]
    root: PathBuf,
}

pub fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    nodelet_runtime::monitor::run_monitor(&args.root)
        .with_context(|| format!("container monitor for {}", args.root.display()))?;
    Ok(ExitCode::SUCCESS)
}
