//! The node's pod bridge: the host side of every sandbox's veth, holding the gateway address.

use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::LinkBridge;

use super::address;
use super::error::{errno_of, NetworkError};
use super::netlink::{kind_of, Netlink};

/// Ensure the bridge `name` exists, carries `gateway` (address with the pod CIDR's prefix)
/// and is up. Returns its index. Safe to call on every start and concurrently.
pub(crate) async fn ensure(nl: &Netlink, name: &str, gateway: Ipv4Net) -> Result<u32, NetworkError> {
    let link = match nl.find_link(name).await? {
        Some(link) => link,
        None => {
            match nl.handle.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => tracing::info!(bridge = name, "created pod bridge"),
                // Another agent instance created it meanwhile: fine, use it.
                Err(e) if errno_of(&e) == Errno::EEXIST => {}
                Err(e) => return Err(NetworkError::link("create bridge", name, e)),
            }
            nl.find_link(name)
                .await?
                .ok_or_else(|| NetworkError::LinkNotFound { name: name.to_string(), netns: None })?
        }
    };
    if kind_of(&link) != Some(&InfoKind::Bridge) {
        return Err(NetworkError::InvalidConfig { reason: format!("link {name} exists and is not a bridge") });
    }
    let index = link.header.index;
    address::ensure(nl, index, name, gateway).await?;
    nl.set_up(index, name).await?;
    Ok(index)
}

/// Delete the bridge; Ok(false) when it did not exist.
pub(crate) async fn remove(nl: &Netlink, name: &str) -> Result<bool, NetworkError> {
    match nl.find_link(name).await? {
        Some(link) if kind_of(&link) != Some(&InfoKind::Bridge) => {
            Err(NetworkError::InvalidConfig { reason: format!("refusing to delete link {name}: it is not a bridge") })
        }
        Some(_) => nl.delete_link(name).await,
        None => Ok(false),
    }
}
