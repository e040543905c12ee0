//! `list`: runc's table (ID PID STATUS BUNDLE CREATED OWNER), `-q` ids, or `--format json`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::container::{Container, StateDoc};
use super::RuncError;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Only the container ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub(super) fn list(root: &Path, args: &ListArgs) -> Result<(), RuncError> {
    let containers = Container::load_all(root);
    if args.quiet {
        for c in &containers {
            println!("{}", c.id());
        }
        return Ok(());
    }
    let docs: Vec<StateDoc> = containers
        .iter()
        .map(|c| {
            let mut doc = c.state_doc();
            doc.owner = owner(&c.dir);
            doc
        })
        .collect();
    match args.format.as_str() {
        // runc encodes a nil slice: "null" when there is no container.
        "json" if docs.is_empty() => {
            println!("null");
            Ok(())
        }
        "json" => print_compact(&docs),
        "table" => {
            print!("{}", table(&docs));
            Ok(())
        }
        other => Err(RuncError::BadConfig(format!("invalid format option: {other}"))),
    }
}

/// runc prints the list as one JSON line.
fn print_compact(docs: &[StateDoc]) -> Result<(), RuncError> {
    #[derive(Serialize)]
    struct Wrapper<'a>(&'a [StateDoc]);
    let text = serde_json::to_string(&Wrapper(docs)).map_err(|source| RuncError::Encode { what: "list", source })?;
    println!("{text}");
    Ok(())
}

/// The user owning the container's state directory, or "#uid" when it has no name.
fn owner(dir: &Path) -> String {
    let Ok(meta) = std::fs::metadata(dir) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
        Ok(Some(user)) => user.name,
        _ => format!("#{}", meta.uid()),
    }
}

/// Go's tabwriter as runc sets it up (minwidth 12, padding 3, spaces): every column but the
/// last is padded to max(widest cell + 3, 12).
fn table(docs: &[StateDoc]) -> String {
    let mut rows: Vec<[String; 6]> = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(str::to_string)];
    for d in docs {
        rows.push([
            d.id.clone(),
            d.pid.to_string(),
            d.status.to_string(),
            d.bundle.display().to_string(),
            d.created.clone(),
            d.owner.clone(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max((cell.chars().count() + 3).max(12));
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (cell, w) in row.iter().zip(widths.iter()) {
            out.push_str(&format!("{cell:<w$}"));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_runc_header() {
        assert_eq!(table(&[]), "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n");
    }
}
