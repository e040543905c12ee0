//! The one error type of the pod network module. Every variant names the object it was
//! working on (netns path, interface, address) so a log line is enough to find it on the host.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network config: {reason}")]
    InvalidConfig { reason: String },

    #[error("invalid sandbox id {id:?}: {reason}")]
    InvalidSandboxId { id: String, reason: &'static str },

    #[error("open netlink socket{}", netns_suffix(.netns))]
    NetlinkSocket {
        /// `None` for the host's namespace.
        netns: Option<PathBuf>,
        #[source]
        source: io::Error,
    },

    // rtnetlink's error holds a whole netlink message: boxed to keep results small.
    #[error("{op} link {name}: netlink error {errno}")]
    Link {
        op: &'static str,
        name: String,
        errno: Errno,
        #[source]
        source: Box<rtnetlink::Error>,
    },

    #[error("link {name} not found{}", netns_suffix(.netns))]
    LinkNotFound { name: String, netns: Option<PathBuf> },

    #[error("{op} address {address} on {interface}{}: netlink error {errno}", netns_suffix(.netns))]
    Address {
        op: &'static str,
        address: Ipv4Net,
        interface: String,
        netns: Option<PathBuf>,
        errno: Errno,
        #[source]
        source: Box<rtnetlink::Error>,
    },

    #[error("add default route via {gateway} dev {interface} in {netns}: netlink error {errno}")]
    Route {
        gateway: Ipv4Addr,
        interface: String,
        netns: PathBuf,
        errno: Errno,
        #[source]
        source: Box<rtnetlink::Error>,
    },

    #[error("{op} network namespace {path}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{op} {path}")]
    State {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no free address left in pod CIDR {cidr} (state in {state_dir})")]
    AddressesExhausted { cidr: Ipv4Net, state_dir: PathBuf },

    #[error("pod egress rules: `{command}` failed: {detail}")]
    Firewall { command: String, detail: String },

    #[error("helper thread for {what} failed")]
    HelperThread {
        what: String,
        /// `None` when the thread panicked instead of answering.
        #[source]
        source: Option<io::Error>,
    },
}

fn netns_suffix(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(path) => format!(" in netns {}", path.display()),
        None => String::new(),
    }
}

/// The errno the kernel answered with, or `UnknownErrno` when the failure was not a
/// kernel NACK (a decoding or socket problem).
pub(crate) fn errno_of(err: &rtnetlink::Error) -> Errno {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Errno::from_raw(-msg.raw_code()),
        _ => Errno::UnknownErrno,
    }
}

impl NetworkError {
    pub(crate) fn link(op: &'static str, name: &str, source: rtnetlink::Error) -> Self {
        NetworkError::Link { op, name: name.to_string(), errno: errno_of(&source), source: Box::new(source) }
    }

    pub(crate) fn netns(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        NetworkError::Netns { op, path: path.into(), source: source.into() }
    }

    pub(crate) fn state(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetworkError::State { op, path: path.into(), source }
    }
}
