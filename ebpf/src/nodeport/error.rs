//! Errors of loading, attaching and programming the load-balancer of traffic entering the
//! node.

use aya::maps::MapError;
use aya::programs::ProgramError;

use crate::types::{Backend, Frontend};

/// Causes from aya are boxed: they are large and errors travel by value.
#[derive(Debug, thiserror::Error)]
pub enum NodePortError {
    #[error("the bpf object was not built (NODELET_SKIP_BPF_BUILD=1 at build time): rebuild nodelet-ebpf without it")]
    ObjectNotBuilt,
    #[error("load the bpf object nodeport_lb")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("bpf program {name} is missing from the object")]
    ProgramMissing { name: &'static str },
    #[error("bpf map {name} is missing from the object")]
    MapMissing { name: &'static str },
    #[error("load bpf program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("no {side} interface given to attach to")]
    NoInterfaces { side: &'static str },
    #[error("attach bpf program {name} to the ingress of interface {interface}")]
    Attach {
        name: &'static str,
        interface: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("detach bpf program {name} from interface {interface}")]
    Detach {
        name: &'static str,
        interface: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("bpf map {name}: {operation} for {what}")]
    Map {
        name: &'static str,
        operation: &'static str,
        what: String,
        #[source]
        source: Box<MapError>,
    },
    #[error("{frontend}: only ipv4 frontends enter through this datapath")]
    NotIpv4Frontend { frontend: Frontend },
    #[error("{frontend}: backend {backend} is not an ipv4 address")]
    NotIpv4Backend { frontend: Frontend, backend: Backend },
    #[error("{frontend}: only tcp and udp are load-balanced here")]
    UnsupportedProtocol { frontend: Frontend },
    #[error("{frontend} has {count} backends, more than the maximum of {max}")]
    TooManyBackends { frontend: Frontend, count: usize, max: usize },
    #[error("source range {range}: {reason}")]
    SourceRange { range: String, reason: &'static str },
    #[error("bpf map {name} holds an entry with protocol number {proto}, neither tcp nor udp")]
    UnknownProtocol { name: &'static str, proto: u8 },
}
