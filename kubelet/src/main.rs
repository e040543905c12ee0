//! The `nodelet` binary: flags, environment and files in, plain config structs out, then a
//! call into the libraries. No logic of its own beyond that.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
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
