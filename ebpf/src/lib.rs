//! nodelet's BPF programs and typed access to their maps.
//!
//! The C programs live in `bpf/` (`lb.h` defines the map layouts), `build.rs`
//! compiles them with clang and this crate embeds the object. [`SockLb`] loads
//! the socket load-balancer (cgroup `connect4`, `sendmsg4`, `recvmsg4` and
//! `getpeername4`, and their IPv6 twins `connect6`, `sendmsg6`, `recvmsg6` and
//! `getpeername6`), attaches it to a cgroup2 directory and hands out [`LbMaps`], a
//! typed view of its maps: no raw bytes leave this crate. IPv4 and IPv6 frontends are
//! programmed alike (each family has its maps; a dual-stack IPv6 socket dialling an
//! IPv4-mapped address is served by the IPv4 frontend). Frontends may have session
//! affinity ([`SessionAffinity::ClientIp`]), remembered per client network namespace. Loaded with
//! [`SockLb::load_pinned`], maps and links are pinned in bpffs and outlive the process.
//!
//! [`NodePortLb`] loads the tc programs for traffic entering the node from other hosts
//! (NodePort, externalIPs, LoadBalancer IPs: IPv4, TCP and UDP), attaches them to the
//! node's external interfaces and pod bridge ([`TcAttachment`]), and programs each
//! frontend's backends (local, or remote with SNAT), Maglev table and source ranges.

mod attachment;
mod error;
mod layout;
mod loader;
mod maps;
mod nodeport;
mod object;
mod pin;
mod sys;
mod types;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use attachment::CgroupAttachment;
pub use error::EbpfError;
pub use loader::{MapSizes, SockLb};
pub use maps::LbMaps;
pub use nodeport::{
    ConntrackEntry, NodePortError, NodePortLb, NodePortMapSizes, NodePortService, SourceRange, TcAttachment,
    MAGLEV_TABLE_SIZE, SNAT_PORTS,
};
pub use pin::Unpinned;
pub use types::{
    AffinityEntry, Backend, Frontend, FrontendKind, Protocol, ReverseNat, ServiceEntry, ServiceList, SessionAffinity,
    MAX_BACKENDS,
};
