//! rtnetlink connections: one to the host's namespace, and short-lived ones opened inside a
//! sandbox's namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use tokio::task::JoinHandle;

use super::error::{errno_of, NetworkError};

/// An rtnetlink handle with the task that drives its socket; the task stops on drop.
pub(crate) struct Netlink {
    pub handle: Handle,
    /// The namespace the socket lives in; `None` for the host's.
    pub netns: Option<PathBuf>,
    driver: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Netlink {
    /// Connect in the calling thread's (the agent's) network namespace.
    pub fn connect_host() -> Result<Netlink, NetworkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetworkError::NetlinkSocket { netns: None, source })?;
        Ok(Netlink { handle, netns: None, driver: tokio::spawn(connection) })
    }

    /// Connect inside the namespace bound at `netns_path`.
    ///
    /// A netlink socket belongs to the namespace it was created in, so a fresh thread joins
    /// the namespace, creates the socket (registered with this runtime's reactor) and exits.
    /// No thread of the runtime ever changes namespace.
    pub async fn connect_in(netns_path: &Path) -> Result<Netlink, NetworkError> {
        let netns_file = File::open(netns_path).map_err(|e| NetworkError::netns("open", netns_path, e))?;
        let runtime = tokio::runtime::Handle::current();
        let path = netns_path.to_path_buf();
        let opened = on_dedicated_thread("netlink socket in netns", move || {
            nix::sched::setns(&netns_file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::netns("enter", &path, e))?;
            let _reactor = runtime.enter();
            rtnetlink::new_connection()
                .map_err(|source| NetworkError::NetlinkSocket { netns: Some(path.clone()), source })
        })
        .await?;
        let (connection, handle, _) = opened?;
        Ok(Netlink { handle, netns: Some(netns_path.to_path_buf()), driver: tokio::spawn(connection) })
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn find_link(&self, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno_of(&e) == Errno::ENODEV => Ok(None),
            Err(e) => Err(NetworkError::link("look up", name, e)),
        }
    }

    /// The index of the link called `name`, which must exist.
    pub async fn link_index(&self, name: &str) -> Result<u32, NetworkError> {
        match self.find_link(name).await? {
            Some(link) => Ok(link.header.index),
            None => Err(NetworkError::LinkNotFound { name: name.to_string(), netns: self.netns.clone() }),
        }
    }

    /// Delete the link called `name`; Ok(false) when it was already gone.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetworkError> {
        let Some(link) = self.find_link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            // Gone between the lookup and the delete (e.g. its netns was just destroyed).
            Err(e) if errno_of(&e) == Errno::ENODEV => Ok(false),
            Err(e) => Err(NetworkError::link("delete", name, e)),
        }
    }

    /// Bring the link up (`ip link set dev NAME up`).
    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), NetworkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetworkError::link("set up", name, e))
    }
}

/// The kind of a link (`bridge`, `veth`, ...), if the kernel reported one.
pub(crate) fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// The `IFLA_MASTER` index of a link, if it has one.
pub(crate) fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// Run `work` on a new OS thread that ends with it, and await its result without blocking
/// the runtime. Used for work that changes the thread's namespaces: such a thread must never
/// be handed back to a pool (tokio's blocking pool reuses its threads).
pub(crate) async fn on_dedicated_thread<T, F>(what: &str, work: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nodelet-netns".to_string())
        .spawn(move || {
            // The receiver only goes away if the caller was cancelled; nothing to report then.
            let _ = tx.send(work());
        })
        .map_err(|e| NetworkError::HelperThread { what: what.to_string(), source: Some(e) })?;
    rx.await.map_err(|_| NetworkError::HelperThread { what: what.to_string(), source: None })
}
