//! `events [--stats] [--interval D] ID`: runc's event stream, one JSON object per line
//! (`{"type":"stats","id":..,"data":{..}}` every interval, `{"type":"oom","id":..}` on
//! each OOM kill) until the container stops; `--stats` prints one stats event and exits.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollTimeout};
use serde::Serialize;

use super::container::{Container, RuncStatus};
use super::{io_err, RuncError};
use crate::cgroups::{ContainerCgroup, OomNews, OomWatch, Stats};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Time between two stats events (a Go duration: 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print the container's stats once and exit.
    #[arg(long)]
    pub stats: bool,
    pub id: String,
}

/// runc's `types.Event`.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Stats>,
}

pub(super) fn events(root: &Path, args: &EventsArgs) -> Result<(), RuncError> {
    let c = Container::load(root, &args.id)?;
    if c.status == RuncStatus::Stopped {
        return Err(RuncError::BadConfig(format!("container with id {} is not running", args.id)));
    }
    let cgroup = c.cgroup()?.ok_or(RuncError::NoCgroup)?;
    if args.stats {
        return emit(&stats_event(&c, &cgroup)?);
    }
    let path = c.rec.record.cgroups_path.clone().unwrap_or_default();
    let cgroup_err = |e| RuncError::Cgroup { path: path.clone(), source: Box::new(e) };
    let mut oom = cgroup.watch_oom().map_err(cgroup_err)?;
    // `None`: an interval too long to add up never comes due.
    let mut next_stats = Instant::now().checked_add(args.interval);
    loop {
        if wait_for_oom(&oom, next_stats)? {
            match oom.take().map_err(cgroup_err)? {
                OomNews::Gone => return Ok(()),
                OomNews::Ooms(n) => {
                    for _ in 0..n {
                        emit(&Event { kind: "oom", id: &args.id, data: None })?;
                    }
                }
            }
        }
        if let Some(due) = next_stats.filter(|due| Instant::now() >= *due) {
            next_stats = due.checked_add(args.interval);
            let Ok(c) = Container::load(root, &args.id) else { return Ok(()) };
            if c.status == RuncStatus::Stopped {
                return Ok(());
            }
            emit(&stats_event(&c, &cgroup)?)?;
        }
    }
}

/// Wait for an OOM notification until `deadline`; true when one came.
fn wait_for_oom(oom: &OomWatch, deadline: Option<Instant>) -> Result<bool, RuncError> {
    let (fd, flags) = oom.poll_fd();
    let mut fds = [PollFd::new(fd, flags)];
    let timeout = match deadline {
        Some(deadline) => {
            PollTimeout::try_from(deadline.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX)
        }
        None => PollTimeout::NONE,
    };
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(source) => Err(RuncError::Sys { what: "cannot wait for oom events", source }),
    }
}

fn stats_event<'a>(c: &'a Container, cgroup: &ContainerCgroup) -> Result<Event<'a>, RuncError> {
    let path = c.rec.record.cgroups_path.clone().unwrap_or_default();
    let stats = cgroup.stats().map_err(|e| RuncError::Cgroup { path, source: Box::new(e) })?;
    Ok(Event { kind: "stats", id: c.id(), data: Some(stats) })
}

/// One compact JSON line, flushed at once (the reader may be a pipe).
fn emit(event: &Event<'_>) -> Result<(), RuncError> {
    let line = serde_json::to_string(event).map_err(|source| RuncError::Encode { what: "event", source })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(io_err("cannot write event to", "stdout"))
}

/// `--interval`: a Go duration, more than zero.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    match crate::go_duration::parse_go_duration(raw)? {
        Duration::ZERO => Err(format!("duration must be greater than 0: {raw:?}")),
        interval => Ok(interval),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }
}
