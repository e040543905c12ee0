//! `state`: the runtime spec's state JSON, with runc's keys.

use std::path::Path;

use super::container::Container;
use super::{print_json, RuncError};

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    pub id: String,
}

pub(super) fn print_state(root: &Path, id: &str) -> Result<(), RuncError> {
    let c = Container::load(root, id)?;
    print_json("state", &c.state_doc())
}
