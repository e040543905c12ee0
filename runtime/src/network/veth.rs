//! The veth pair joining a sandbox to the bridge.

use std::fs::File;
use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use rtnetlink::{LinkUnspec, LinkVeth};
use sha2::{Digest, Sha256};

use super::error::NetworkError;
use super::netlink::{controller_of, kind_of, Netlink};

/// The sandbox's end of the pair, as its processes see it.
pub(crate) const POD_INTERFACE: &str = "eth0";

/// Host-side name of a sandbox's veth: deterministic, so teardown needs no state, and 13
/// characters, within the kernel's 15 (IFNAMSIZ - 1).
pub fn host_veth_name(sandbox_id: &str) -> String {
    let digest = Sha256::digest(sandbox_id.as_bytes());
    format!("nlt{}", &hex::encode(digest)[..10])
}

/// Create the pair in one request: the host end `host_name` attached to the bridge and up,
/// the peer created directly inside `netns` as `eth0` (`ip link add H master BR up type veth
/// peer name eth0 netns NS`), both with `mtu`. Creating the peer in place means it never
/// shows up in the host namespace, where `eth0` may well exist.
pub(crate) async fn create_pair(
    nl: &Netlink,
    host_name: &str,
    bridge_index: u32,
    netns: &File,
    mtu: u32,
) -> Result<(), NetworkError> {
    let peer = LinkUnspec::new_with_name(POD_INTERFACE).mtu(mtu).setns_by_fd(netns.as_raw_fd()).build();
    let pair = LinkVeth::new(host_name, POD_INTERFACE)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(mtu)
        .controller(bridge_index)
        .up()
        .build();
    nl.handle.link().add(pair).execute().await.map_err(|e| {
        NetworkError::link("create veth pair (peer eth0 in the sandbox netns) with host end", host_name, e)
    })
}

/// Whether `link` looks like a sandbox veth this module made: a veth on our bridge.
pub(crate) fn is_sandbox_veth(link: &LinkMessage, bridge_index: u32) -> bool {
    kind_of(link) == Some(&InfoKind::Veth) && controller_of(link) == Some(bridge_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_name_is_stable_short_and_distinct() {
        let a = host_veth_name("pod-a");
        assert_eq!(a, host_veth_name("pod-a"));
        assert_ne!(a, host_veth_name("pod-b"));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("nlt") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
