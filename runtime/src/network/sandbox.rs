//! Setup and teardown of one sandbox's network, with rollback of a half-done setup.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::InfoKind;

use super::address;
use super::error::NetworkError;
use super::netlink::{kind_of, Netlink};
use super::netns;
use super::veth::{self, host_veth_name, POD_INTERFACE};
use super::{PodNetwork, SandboxNetwork};

/// Sandbox ids become file names and interface-name hashes: keep them to a safe alphabet.
const MAX_ID_LEN: usize = 200;

fn validate_id(id: &str) -> Result<(), NetworkError> {
    let invalid = |reason| Err(NetworkError::InvalidSandboxId { id: id.to_string(), reason });
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return invalid("must have 1 to 200 bytes");
    }
    if id.starts_with('.') {
        return invalid("must not start with '.'");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return invalid("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// What a setup did so far, undone in reverse order if a later step fails.
enum Done {
    Allocated(Ipv4Addr),
    CreatedNetns(PathBuf),
    CreatedVeth(String),
}

impl PodNetwork {
    /// Create (or find, when it exists) the sandbox: netns file `<netns_dir>/<id>` (a
    /// bind-mounted nsfs, no pause process), lo up, a veth pair with the host end on the
    /// bridge and `eth0` inside, an IPv4 address from the pod CIDR, a default route via the
    /// gateway. On failure, whatever this call created is removed again.
    ///
    /// If the future is dropped midway, the parts made so far stay; the next `setup` or
    /// `teardown` of the same id clears them (every part is found from the id alone, and the
    /// address record, made first and removed last, keeps the sandbox in `list`).
    pub async fn setup(&self, id: &str) -> Result<SandboxNetwork, NetworkError> {
        validate_id(id)?;
        let _busy = self.busy.lock().await;
        let bridge_index = self.ensure_bridge().await?;
        if let Some(existing) = self.find_complete(id, bridge_index).await? {
            tracing::debug!(sandbox = id, ip = %existing.ip, "sandbox network already set up");
            return Ok(existing);
        }
        self.clear_leftovers(id).await?;

        let mut done = Vec::new();
        match self.build(id, bridge_index, &mut done).await {
            Ok(sandbox) => {
                tracing::info!(sandbox = id, ip = %sandbox.ip, veth = %sandbox.host_veth, "sandbox network set up");
                Ok(sandbox)
            }
            Err(e) => {
                tracing::warn!(sandbox = id, error = %e, "sandbox network setup failed, rolling back");
                self.roll_back(id, done).await;
                Err(e)
            }
        }
    }

    /// Delete the veth, unmount and remove the netns file, release the IP. Idempotent and
    /// tolerant of half-done state: every step is tried, the first error is returned.
    pub async fn teardown(&self, id: &str) -> Result<(), NetworkError> {
        validate_id(id)?;
        let _busy = self.busy.lock().await;
        let veth = self.delete_sandbox_veth(id).await;
        let netns = netns::remove(&self.netns_path(id));
        let ip = self.pool.release(id);
        let result = veth.and(netns).and(ip.map(|_| ()));
        if result.is_ok() {
            tracing::info!(sandbox = id, "sandbox network torn down");
        }
        result
    }

    async fn build(&self, id: &str, bridge_index: u32, done: &mut Vec<Done>) -> Result<SandboxNetwork, NetworkError> {
        let ip = self.pool.allocate(id)?;
        done.push(Done::Allocated(ip));

        let netns_path = self.netns_path(id);
        netns::create(&netns_path).await?;
        done.push(Done::CreatedNetns(netns_path.clone()));

        let host_veth = host_veth_name(id);
        let netns_file = File::open(&netns_path).map_err(|e| NetworkError::netns("open", &netns_path, e))?;
        veth::create_pair(&self.host, &host_veth, bridge_index, &netns_file, self.cfg.mtu).await?;
        done.push(Done::CreatedVeth(host_veth));

        let inside = Netlink::connect_in(&netns_path).await?;
        let sandbox = self.sandbox(id, ip);
        configure_inside(&inside, sandbox.ip, sandbox.prefix_len, sandbox.gateway).await?;
        Ok(sandbox)
    }

    async fn roll_back(&self, id: &str, done: Vec<Done>) {
        for step in done.into_iter().rev() {
            let undone = match &step {
                Done::CreatedVeth(name) => self.host.delete_link(name).await.map(|_| ()),
                Done::CreatedNetns(path) => netns::remove(path).map(|_| ()),
                Done::Allocated(ip) => self.pool.release_address(*ip, id).map(|_| ()),
            };
            if let Err(e) = undone {
                tracing::error!(sandbox = id, error = %e, "rollback of failed sandbox setup incomplete");
            }
        }
    }

    /// The sandbox if all its parts are in place: address record, bound netns, and host
    /// veth on our bridge.
    async fn find_complete(&self, id: &str, bridge_index: u32) -> Result<Option<SandboxNetwork>, NetworkError> {
        let Some(ip) = self.pool.find(id)? else {
            return Ok(None);
        };
        if !netns::is_bound(&self.netns_path(id)) {
            return Ok(None);
        }
        match self.host.find_link(&host_veth_name(id)).await? {
            Some(link) if veth::is_sandbox_veth(&link, bridge_index) => Ok(Some(self.sandbox(id, ip))),
            _ => Ok(None),
        }
    }

    /// Remove what an interrupted earlier setup of `id` left behind, so it can start over.
    async fn clear_leftovers(&self, id: &str) -> Result<(), NetworkError> {
        let veth = self.delete_sandbox_veth(id).await?;
        let netns = netns::remove(&self.netns_path(id))?;
        let ips = self.pool.release(id)?;
        if veth || netns || ips > 0 {
            tracing::warn!(sandbox = id, veth, netns, ips, "cleared leftovers of an incomplete sandbox setup");
        }
        Ok(())
    }

    /// Delete the sandbox's host veth (its peer goes with it). A link of that name that is
    /// not a veth is not ours: leave it (setup will then fail, naming it).
    async fn delete_sandbox_veth(&self, id: &str) -> Result<bool, NetworkError> {
        let name = host_veth_name(id);
        match self.host.find_link(&name).await? {
            Some(link) if kind_of(&link) == Some(&InfoKind::Veth) => self.host.delete_link(&name).await,
            Some(_) => {
                tracing::warn!(sandbox = id, link = %name, "link with the sandbox's veth name is not a veth; leaving it");
                Ok(false)
            }
            None => Ok(false),
        }
    }
}

/// Inside the sandbox: lo up, eth0 with its address and up, default route via the gateway.
async fn configure_inside(nl: &Netlink, ip: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<(), NetworkError> {
    let lo = nl.link_index("lo").await?;
    nl.set_up(lo, "lo").await?;

    let eth0 = nl.link_index(POD_INTERFACE).await?;
    let address = Ipv4Net::new(ip, prefix_len)
        .map_err(|e| NetworkError::InvalidConfig { reason: format!("address {ip}/{prefix_len}: {e}") })?;
    address::ensure(nl, eth0, POD_INTERFACE, address).await?;
    // Up before the route: the kernel only accepts a gateway it can reach on a live link.
    nl.set_up(eth0, POD_INTERFACE).await?;
    address::add_default_route(nl, eth0, POD_INTERFACE, gateway).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_are_checked() {
        assert!(validate_id("pod-1_a.b").is_ok());
        assert!(validate_id("3f1c2a7e-8b4d-4e0f-9a51-0c2d6e7f8a9b").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "a\nb", &"x".repeat(201)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
