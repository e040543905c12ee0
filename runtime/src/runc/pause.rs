//! `pause ID` and `resume ID`: freeze and thaw every process of the container through its
//! cgroup's freezer. The status shows "paused" while the cgroup is frozen.

use std::path::Path;

use super::container::{Container, RuncStatus};
use super::RuncError;

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    pub id: String,
}

/// As runc: a created or running container can be paused, nothing else.
pub(super) fn pause(root: &Path, id: &str) -> Result<(), RuncError> {
    let c = Container::load(root, id)?;
    match c.status {
        RuncStatus::Created | RuncStatus::Running => c.freeze(),
        _ => Err(RuncError::NotRunning),
    }
}

pub(super) fn resume(root: &Path, id: &str) -> Result<(), RuncError> {
    let c = Container::load(root, id)?;
    match c.status {
        RuncStatus::Paused => c.thaw(),
        _ => Err(RuncError::NotPaused),
    }
}
