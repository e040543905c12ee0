//! OOM notifications for one container's memory cgroup, as `runc events` reports them:
//! v1 registers an eventfd on memory.oom_control through cgroup.event_control (the kernel
//! also signals it when the cgroup is removed); v2 polls memory.events, which the kernel
//! flags on every change, and counts new oom_kill entries.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::poll::PollFlags;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{parse_oom_kill, write_file, CgroupError};

pub enum OomWatch {
    V1 {
        events: EventFd,
        /// Held open: the registration lives as long as this fd and the eventfd.
        _oom_control: File,
        event_control: PathBuf,
    },
    V2 {
        events: File,
        path: PathBuf,
        oom_kills: u64,
    },
}

/// What one wake-up brought.
#[derive(Debug, PartialEq, Eq)]
pub enum OomNews {
    /// This many OOM events since the last wake-up (possibly 0).
    Ooms(u64),
    /// The cgroup is gone: no more events will come.
    Gone,
}

impl OomWatch {
    /// Register on the v1 memory directory `dir`.
    pub(super) fn v1(dir: &Path) -> Result<OomWatch, CgroupError> {
        let oom_path = dir.join("memory.oom_control");
        let oom_control = File::open(&oom_path).map_err(|source| CgroupError::Read { path: oom_path, source })?;
        let events = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
            .map_err(|source| CgroupError::Read { path: dir.join("memory.oom_control"), source: source.into() })?;
        let event_control = dir.join("cgroup.event_control");
        let registration = format!("{} {}", events.as_fd().as_raw_fd(), oom_control.as_raw_fd());
        write_file(&event_control, &registration)?;
        Ok(OomWatch::V1 { events, _oom_control: oom_control, event_control })
    }

    /// Watch the cgroup2 directory `dir` (its memory.events).
    pub(super) fn v2(dir: &Path) -> Result<OomWatch, CgroupError> {
        let path = dir.join("memory.events");
        let mut events = File::open(&path).map_err(|source| CgroupError::Read { path: path.clone(), source })?;
        let oom_kills = read_oom_kills(&mut events, &path)?;
        Ok(OomWatch::V2 { events, path, oom_kills })
    }

    /// The fd to poll, and for what.
    pub fn poll_fd(&self) -> (BorrowedFd<'_>, PollFlags) {
        match self {
            OomWatch::V1 { events, .. } => (events.as_fd(), PollFlags::POLLIN),
            OomWatch::V2 { events, .. } => (events.as_fd(), PollFlags::POLLPRI),
        }
    }

    /// After the fd polled ready: what happened.
    pub fn take(&mut self) -> Result<OomNews, CgroupError> {
        match self {
            OomWatch::V1 { events, event_control, .. } => {
                let count = events
                    .read()
                    .map_err(|source| CgroupError::Read { path: event_control.clone(), source: source.into() })?;
                // The kernel signals the eventfd when the cgroup goes away, too.
                if !event_control.exists() {
                    return Ok(OomNews::Gone);
                }
                Ok(OomNews::Ooms(count))
            }
            OomWatch::V2 { events, path, oom_kills } => {
                if !path.exists() {
                    return Ok(OomNews::Gone);
                }
                let now = read_oom_kills(events, path)?;
                let new = now.saturating_sub(*oom_kills);
                *oom_kills = now;
                Ok(OomNews::Ooms(new))
            }
        }
    }
}

/// Re-read the whole file from the start (which also re-arms the kernel's poll).
fn read_oom_kills(file: &mut File, path: &Path) -> Result<u64, CgroupError> {
    let read_err = |source| CgroupError::Read { path: path.to_path_buf(), source };
    file.rewind().map_err(read_err)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok(parse_oom_kill(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_counts_new_oom_kills() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        let mut watch = OomWatch::v2(dir.path()).unwrap();
        assert_eq!(watch.take().unwrap(), OomNews::Ooms(0));
        std::fs::write(&events, "oom 3\noom_kill 3\n").unwrap();
        assert_eq!(watch.take().unwrap(), OomNews::Ooms(2));
        std::fs::remove_file(&events).unwrap();
        assert_eq!(watch.take().unwrap(), OomNews::Gone);
    }
}
