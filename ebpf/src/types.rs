//! The typed service table entries callers read and write.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Most backends one frontend can have (`LB_MAX_BACKENDS` of `bpf/lb.h`).
pub const MAX_BACKENDS: usize = crate::layout::c::LB_MAX_BACKENDS;

/// Transport protocol of a frontend, as the socket reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IPPROTO_* number the BPF program compares with.
    pub(crate) fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub(crate) fn from_ip_proto(number: u8) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// A service address clients dial (ClusterIP, port, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.protocol),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.protocol),
        }
    }
}

/// An endpoint a frontend's connections are sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// How a frontend spreads the connections of one client over its backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionAffinity {
    /// Each connection (each UDP socket) picks a backend of its own.
    #[default]
    None,
    /// `sessionAffinity: ClientIP`: a client (a network namespace: a pod, or the node's
    /// host-network processes) keeps the backend it was given while it used it less than
    /// `timeout_seconds` ago and the backend is still one of the frontend's.
    ClientIp { timeout_seconds: u32 },
}

impl fmt::Display for SessionAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionAffinity::None => f.write_str("none"),
            SessionAffinity::ClientIp { timeout_seconds } => write!(f, "ClientIP {timeout_seconds}s"),
        }
    }
}

/// What makes a frontend, as `cilium service list` names the types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    #[default]
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

impl FrontendKind {
    /// Its number in a master's flags (`LB_KIND_*` of lb.h).
    pub(crate) fn number(self) -> u16 {
        match self {
            FrontendKind::ClusterIp => 0,
            FrontendKind::ExternalIp => 1,
            FrontendKind::LoadBalancer => 2,
            FrontendKind::NodePort => 3,
        }
    }

    pub(crate) fn from_number(number: u16) -> FrontendKind {
        match number {
            1 => FrontendKind::ExternalIp,
            2 => FrontendKind::LoadBalancer,
            3 => FrontendKind::NodePort,
            _ => FrontendKind::ClusterIp,
        }
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::NodePort => "NodePort",
        })
    }
}

/// What one frontend load-balances to: its backends, in slot order, how a client's
/// connections are spread over them, and the kind of frontend it is (shown, not acted on).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceEntry {
    pub backends: Vec<Backend>,
    pub affinity: SessionAffinity,
    pub kind: FrontendKind,
}

impl ServiceEntry {
    /// `backends` of a ClusterIP without session affinity.
    pub fn new(backends: Vec<Backend>) -> ServiceEntry {
        ServiceEntry { backends, affinity: SessionAffinity::None, kind: FrontendKind::ClusterIp }
    }

    /// `backends` of a ClusterIP with `affinity`.
    pub fn with_affinity(backends: Vec<Backend>, affinity: SessionAffinity) -> ServiceEntry {
        ServiceEntry { backends, affinity, kind: FrontendKind::ClusterIp }
    }

    /// The same, for a frontend of `kind`.
    pub fn of_kind(self, kind: FrontendKind) -> ServiceEntry {
        ServiceEntry { kind, ..self }
    }
}

/// Frontends with their entries, as read from the maps.
pub type ServiceList = Vec<(Frontend, ServiceEntry)>;

/// One entry of the reverse translation: what socket `socket_cookie` receives from
/// `backend` (and what `getpeername()` reports when connected to it) is shown as coming
/// from `frontend`, the Service address it dialled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReverseNat {
    pub socket_cookie: u64,
    pub backend: SocketAddr,
    pub frontend: SocketAddr,
}

/// One entry of the session-affinity map: the client in network namespace `client_netns`
/// (its netns cookie) was last given `backend` for `frontend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityEntry {
    pub client_netns: u64,
    pub frontend: Frontend,
    pub backend: SocketAddr,
}
