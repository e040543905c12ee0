//! What the caller and its exec helper say to each other on their socket pair: one JSON
//! document per line. The caller sends one [`Request`]; the helper answers `Started` or
//! `Failed`, then (unless detached) `Exited`. The caller closing its end asks the helper to
//! kill the process.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Process};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The environment variable that tells the helper the number of its end of the socket pair.
pub(super) const CONTROL_FD_ENV: &str = "_NODELET_EXEC_CONTROL_FD";

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    /// The container's id, for error messages.
    pub id: String,
    pub init_pid: i32,
    pub init_start_time: Option<u64>,
    pub cgroup_procs: Vec<PathBuf>,
    /// The process to run, its defaults already taken from the container's.
    pub process: Process,
    /// The container's profile: it applies to exec'd processes too.
    pub seccomp: Option<LinuxSeccomp>,
    pub preserve_fds: u32,
    /// Report the pid and exit, leaving the process to the caller's subreaper.
    pub detach: bool,
    /// With `process.terminal`: the number of the inherited, connected console socket to
    /// send the pty's master to.
    #[serde(default)]
    pub console_fd: Option<i32>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub(super) enum Report {
    /// The process exec'd; its pid on the host.
    Started { pid: i32 },
    /// Nothing runs: the error, as text.
    Failed { message: String },
    /// The process is gone: its exit code, or 128+N when killed by signal N.
    Exited { code: i32 },
}

/// One end of the socket pair, with line framing.
#[derive(Debug)]
pub(super) struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    pub fn new(stream: UnixStream) -> std::io::Result<Channel> {
        let writer = stream.try_clone()?;
        Ok(Channel { reader: BufReader::new(stream), writer })
    }

    pub fn send(&mut self, message: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    /// The next message; None when the other end has closed (or shut down) its side.
    pub fn recv<T: DeserializeOwned>(&mut self) -> std::io::Result<Option<T>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Whether a message (or part of one) was already read from the socket: poll would not
    /// wake up for it.
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Tell the other side we are done: it reads EOF, while we can still read its messages.
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_as_lines_and_eof_ends_them() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        a.send(&Report::Started { pid: 42 }).unwrap();
        a.send(&Report::Exited { code: 137 }).unwrap();
        assert_eq!(b.recv::<Report>().unwrap(), Some(Report::Started { pid: 42 }));
        assert!(b.has_buffered(), "both lines came in one read");
        assert_eq!(b.recv::<Report>().unwrap(), Some(Report::Exited { code: 137 }));
        a.shutdown_write();
        assert_eq!(b.recv::<Report>().unwrap(), None);
        b.send(&Report::Failed { message: "still open this way".to_string() }).unwrap();
        assert!(matches!(a.recv::<Report>().unwrap(), Some(Report::Failed { .. })));
    }

    #[test]
    fn reports_have_a_stable_form() {
        let json = serde_json::to_string(&Report::Failed { message: "x".to_string() }).unwrap();
        assert_eq!(json, r#"{"report":"failed","message":"x"}"#);
    }
}
