//! Runs the container monitor (`nodelet-monitor --root DIR`), the same loop the product's
//! `nodelet monitor --root DIR` subcommand runs; integration tests spawn this binary.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let root = match (args.next(), args.next()) {
        (Some(flag), Some(dir)) if flag == "--root" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: nodelet-monitor --root DIR");
            return ExitCode::from(2);
        }
    };
    match nodelet_runtime::monitor::run_monitor(&root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodelet-monitor: {}", nodelet_runtime::monitor::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
