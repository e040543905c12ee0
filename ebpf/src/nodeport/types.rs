//! What callers program for traffic entering the node, and what they read back.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use super::error::NodePortError;
use crate::types::{Backend, Protocol};

/// What one frontend (a NodePort on a node address, an externalIP or a LoadBalancer IP,
/// with its port and protocol) sends the packets entering the node to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePortService {
    /// Endpoints on this node: the pod sees the client's address. For
    /// `externalTrafficPolicy: Local`, the only backends (kube-proxy's local endpoints).
    /// Order does not matter; duplicates count once. No backends at all (local or
    /// remote): the frontend's packets are dropped.
    pub backends: Vec<Backend>,
    /// Endpoints on other nodes (`externalTrafficPolicy: Cluster`): packets reach them
    /// with the node's address as source (SNAT, a port of [`SNAT_PORTS`](crate::SNAT_PORTS))
    /// and leave again by the interface the FIB picks; their replies come back through
    /// the node. An endpoint listed in both lists is local.
    pub remote_backends: Vec<Backend>,
    /// `loadBalancerSourceRanges`: when not empty, packets from other sources are dropped.
    pub source_ranges: Vec<SourceRange>,
}

/// An IPv4 prefix of client addresses (`10.0.0.0/8`), host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRange {
    address: Ipv4Addr,
    prefix_len: u8,
}

impl SourceRange {
    /// The prefix of `address` of `prefix_len` bits (at most 32); host bits are cleared,
    /// as kube-proxy's CIDR parsing does.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Result<SourceRange, NodePortError> {
        if prefix_len > 32 {
            return Err(NodePortError::SourceRange {
                range: format!("{address}/{prefix_len}"),
                reason: "prefix length over 32",
            });
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        Ok(SourceRange { address: Ipv4Addr::from(u32::from(address) & mask), prefix_len })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl FromStr for SourceRange {
    type Err = NodePortError;

    /// `a.b.c.d/len`, surrounding spaces allowed (Kubernetes trims them too).
    fn from_str(text: &str) -> Result<SourceRange, NodePortError> {
        let invalid = |reason| NodePortError::SourceRange { range: text.to_owned(), reason };
        let (address, prefix_len) = text.trim().split_once('/').ok_or_else(|| invalid("not an ipv4 cidr"))?;
        let address = address.parse::<Ipv4Addr>().map_err(|_| invalid("not an ipv4 address"))?;
        let prefix_len = prefix_len.parse::<u8>().map_err(|_| invalid("not a prefix length"))?;
        SourceRange::new(address, prefix_len)
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// One flow the ingress program load-balanced: `client` sent to `frontend` and is served
/// by `backend`; replies leave the node from `frontend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConntrackEntry {
    pub protocol: Protocol,
    pub client: SocketAddrV4,
    pub frontend: SocketAddrV4,
    pub backend: SocketAddrV4,
    /// The node's address and port the flow was SNATed to (a remote backend).
    pub snat: Option<SocketAddrV4>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_parse_and_clear_host_bits() {
        let range: SourceRange = " 10.1.2.3/8".parse().unwrap();
        assert_eq!((range.address(), range.prefix_len()), (Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(range.to_string(), "10.0.0.0/8");
        assert_eq!("0.0.0.0/0".parse::<SourceRange>().unwrap().prefix_len(), 0);
        assert_eq!("192.0.2.7/32".parse::<SourceRange>().unwrap().address(), Ipv4Addr::new(192, 0, 2, 7));
    }

    #[test]
    fn bad_source_ranges_name_what_is_wrong() {
        for (text, reason) in [
            ("10.0.0.0", "not an ipv4 cidr"),
            ("fd00::/8", "not an ipv4 address"),
            ("10.0.0.0/x", "not a prefix length"),
            ("10.0.0.0/33", "prefix length over 32"),
        ] {
            let error = text.parse::<SourceRange>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
