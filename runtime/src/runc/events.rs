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
    let mut next_stats = Instant::now() + args.interval;
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
        if Instant::now() >= next_stats {
            next_stats += args.interval;
            let Ok(c) = Container::load(root, &args.id) else { return Ok(()) };
            if c.status == RuncStatus::Stopped {
                return Ok(());
            }
            emit(&stats_event(&c, &cgroup)?)?;
        }
    }
}

/// Wait for an OOM notification until `deadline`; true when one came.
fn wait_for_oom(oom: &OomWatch, deadline: Instant) -> Result<bool, RuncError> {
    let (fd, flags) = oom.poll_fd();
    let mut fds = [PollFd::new(fd, flags)];
    let left = deadline.saturating_duration_since(Instant::now());
    match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
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

/// Go's time.ParseDuration for what a user types: a sequence of numbers with units
/// (ns, us, µs, ms, s, m, h), e.g. "5s", "1m30s", "1.5s", "500ms".
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {raw:?}");
    let mut rest = raw.trim();
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    if total <= 0.0 {
        return Err(format!("duration must be greater than 0: {raw:?}"));
    }
    Ok(Duration::from_secs_f64(total))
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
