//! `nodelet-runc`: runc's command line over nodelet's runtime (see runtime/src/runc/). This
//! file only parses arguments, sets up logging and reports errors the way runc does.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use nodelet_runtime::runc::{execute, Cli, LogFormat};

fn main() -> ExitCode {
    // `exec` re-executes this binary as its helper: before anything else, with no thread started.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == nodelet_runtime::exec::HELPER_COMMAND) {
        nodelet_runtime::exec::helper_main();
    }
    let cli = Cli::parse();
    let log_file = match open_log(&cli) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cli, log_file.as_ref());
    match execute(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(e) => {
            let message = nodelet_runtime::error_chain(&e);
            report_error(&cli, log_file, &message);
            ExitCode::from(e.exit_code())
        }
    }
}

fn open_log(cli: &Cli) -> anyhow::Result<Option<File>> {
    let Some(path) = &cli.global.log else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))?;
    Ok(Some(file))
}

fn init_tracing(cli: &Cli, log_file: Option<&File>) {
    let level = if cli.global.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match (log_file.and_then(|f| f.try_clone().ok()), cli.global.log_format) {
        (Some(file), LogFormat::Json) => builder.json().with_writer(Mutex::new(file)).init(),
        (Some(file), LogFormat::Text) => builder.with_writer(Mutex::new(file)).init(),
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).init(),
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
    }
}

/// As runc: the error goes to the log (logrus format: text or JSON), and, when the log is a
/// file, also plainly to stderr, where callers such as containerd look for it.
fn report_error(cli: &Cli, log_file: Option<File>, message: &str) {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let line = match cli.global.log_format {
        LogFormat::Json => serde_json::json!({ "level": "error", "msg": message, "time": time }).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level=error msg={}", quote(message)),
    };
    match log_file {
        Some(mut file) => {
            let _ = writeln!(file, "{line}");
            eprintln!("{message}");
        }
        None => eprintln!("{line}"),
    }
}

/// logrus quotes a message as a Go string literal.
fn quote(message: &str) -> String {
    serde_json::to_string(message).unwrap_or_else(|_| format!("\"{message}\""))
}
