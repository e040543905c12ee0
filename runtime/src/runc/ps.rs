//! `ps ID [ps options]`: the processes of the container's cgroup, as `ps` rows (runc's
//! table) or a JSON array of pids.

use std::collections::HashSet;
use std::path::Path;

use super::container::Container;
use super::{print_json, RuncError};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    /// Options passed to ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub(super) fn ps(root: &Path, args: &PsArgs) -> Result<i32, RuncError> {
    let c = Container::load(root, &args.id)?;
    let pids: Vec<i32> = match c.cgroup()? {
        Some(cgroup) => cgroup.pids().iter().map(|p| p.as_raw()).collect(),
        None => Vec::new(),
    };
    match args.format.as_str() {
        "json" => print_json("pids", &pids).map(|()| 0),
        "table" => print_table(&pids, &args.ps_args),
        other => Err(RuncError::BadConfig(format!("invalid format option: {other}"))),
    }
}

/// Run ps(1) and keep its header and the rows whose PID column is one of `pids`, as runc does.
fn print_table(pids: &[i32], ps_args: &[String]) -> Result<i32, RuncError> {
    let ps_args: Vec<String> = if ps_args.is_empty() { vec!["-ef".to_string()] } else { ps_args.to_vec() };
    let output = std::process::Command::new("ps").args(&ps_args).output().map_err(super::io_err("cannot run", "ps"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(1);
    };
    let Some(pid_column) = header.split_whitespace().position(|h| h == "PID") else {
        return Err(RuncError::BadConfig("couldn't find PID field in ps output".to_string()));
    };
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    println!("{header}");
    for line in lines {
        let pid = line.split_whitespace().nth(pid_column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(0)
}
