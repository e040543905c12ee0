//! The `nodelet` binary: flags, environment and files in, plain config structs out, then a
//! call into the libraries. No logic of its own beyond that.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `nodelet exec-helper`: the process that joins a container's namespaces for an exec
    // (exec probes). Dispatched before anything starts threads: it must stay single-threaded.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == nodelet_runtime::exec::HELPER_COMMAND) {
        nodelet_runtime::exec::helper_main();
    }
    let args = cli::Cli::parse();
    cli::logging::init(args.verbosity);
    match cli::dispatch(args.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
