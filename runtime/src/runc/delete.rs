//! `delete [--force] ID`: remove a stopped (or created) container; --force kills a running or
//! paused one.

use std::path::Path;

use super::container::{container_dir, validate_id, Container, RuncStatus};
use super::RuncError;

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is running.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub(super) fn delete(root: &Path, id: &str, force: bool) -> Result<(), RuncError> {
    let c = match Container::load(root, id) {
        Ok(c) => c,
        Err(RuncError::NotExist) if force && validate_id(id).is_ok() => {
            // As runc: an aborted create may leave a directory without state; --force
            // removes it and succeeds.
            let _ = std::fs::remove_dir_all(container_dir(root, id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match c.status {
        status @ (RuncStatus::Running | RuncStatus::Paused) if !force => {
            Err(RuncError::NotStopped { id: id.to_string(), status })
        }
        _ => c.destroy(),
    }
}
