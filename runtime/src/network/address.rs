//! IPv4 addresses and routes on links.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::RouteMessageBuilder;

use super::error::{errno_of, NetworkError};
use super::netlink::Netlink;

/// Ensure link `index` (called `interface`) carries `address`; other addresses are left alone.
pub(crate) async fn ensure(nl: &Netlink, index: u32, interface: &str, address: Ipv4Net) -> Result<(), NetworkError> {
    let failed = |op, source| NetworkError::Address {
        op,
        address,
        interface: interface.to_string(),
        netns: nl.netns.clone(),
        errno: errno_of(&source),
        source: Box::new(source),
    };
    let mut present = nl.handle.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = present.try_next().await.map_err(|e| failed("list addresses to find", e))? {
        let same_address = msg
            .attributes
            .iter()
            .any(|attr| matches!(attr, AddressAttribute::Address(IpAddr::V4(ip)) if *ip == address.addr()));
        if same_address && msg.header.prefix_len == address.prefix_len() {
            return Ok(());
        }
    }
    match nl.handle.address().add(index, IpAddr::V4(address.addr()), address.prefix_len()).execute().await {
        Ok(()) => Ok(()),
        // Added concurrently by another caller.
        Err(e) if errno_of(&e) == Errno::EEXIST => Ok(()),
        Err(e) => Err(failed("add", e)),
    }
}

/// Add the default route via `gateway` out of link `index`, in the namespace of `nl`.
pub(crate) async fn add_default_route(
    nl: &Netlink,
    index: u32,
    interface: &str,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
    nl.handle.route().add(route).execute().await.map_err(|source| NetworkError::Route {
        gateway,
        interface: interface.to_string(),
        netns: nl.netns.clone().unwrap_or_else(|| PathBuf::from("host")),
        errno: errno_of(&source),
        source: Box::new(source),
    })
}
