//! Errors of loading, attaching and programming the BPF load-balancer.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::MapError;
use aya::programs::ProgramError;

use crate::types::Frontend;

/// Causes from aya are boxed: they are large and errors travel by value.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("the bpf object was not built (NODELET_SKIP_BPF_BUILD=1 at build time): rebuild nodelet-ebpf without it")]
    ObjectNotBuilt,
    #[error("load the bpf object")]
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
    #[error("open cgroup2 directory {path}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attach bpf program {name} to cgroup {path}")]
    Attach {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attach and pin bpf program {name} to cgroup {path}")]
    AttachPinned {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pin directory {path}: {reason}")]
    PinDir { path: PathBuf, reason: String },
    #[error("{operation} the pinned bpf object {path}")]
    Pin {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("detach bpf program {name} from cgroup {path}")]
    Detach {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("bpf map {name}: {operation} for {frontend}")]
    Map {
        name: &'static str,
        operation: &'static str,
        frontend: String,
        #[source]
        source: Box<MapError>,
    },
    #[error("backend {backend} of {frontend} is not of the frontend's address family")]
    AddressFamilyMismatch { frontend: Frontend, backend: IpAddr },
    #[error("{frontend}: {address} is an ipv4-mapped ipv6 address: program its ipv4 address instead")]
    Ipv4MappedAddress { frontend: Frontend, address: IpAddr },
    #[error("{frontend} has {count} backends, more than the maximum of {max}")]
    TooManyBackends { frontend: Frontend, count: usize, max: usize },
    #[error("bpf map {name} holds an entry with unknown protocol number {proto}")]
    UnknownProtocol { name: &'static str, proto: u8 },
    #[error("{frontend}: session affinity needs a timeout of at least 1 second")]
    AffinityTimeout { frontend: Frontend },
    #[error("the pinned bpf map {path} has another layout than this nodelet's ({reason}): start the agent or proxy to recreate it")]
    PinnedMapLayout { path: PathBuf, reason: String },
}
