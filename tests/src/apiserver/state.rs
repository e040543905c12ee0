//! The state shared by every connection of one server.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::audit::AuditLog;
use super::authn::TokenAuthenticator;
use super::store::Store;

pub struct ServerState {
    pub store: Arc<Store>,
    pub audit: AuditLog,
    pub tokens: TokenAuthenticator,
    unavailable: AtomicBool,
    /// Bumped to end every open watch.
    watches_closed: tokio::sync::watch::Sender<u64>,
    bookmark_interval: Mutex<Duration>,
    /// host:port, for the APIVersions document.
    pub server_address: String,
    next_service_ip: AtomicU32,
}

/// First address handed to Services (10.96.0.1 is left for the "kubernetes" Service).
const SERVICE_RANGE_START: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

impl ServerState {
    pub fn new(store: Arc<Store>, server_address: String) -> ServerState {
        let (watches_closed, _) = tokio::sync::watch::channel(0);
        ServerState {
            store,
            audit: AuditLog::default(),
            tokens: TokenAuthenticator::default(),
            unavailable: AtomicBool::new(false),
            watches_closed,
            bookmark_interval: Mutex::new(Duration::from_secs(5)),
            server_address,
            next_service_ip: AtomicU32::new(u32::from(SERVICE_RANGE_START)),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.close_watches();
        }
    }

    pub fn close_watches(&self) {
        self.watches_closed.send_modify(|generation| *generation += 1);
    }

    pub fn watch_closer(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watches_closed.subscribe()
    }

    pub fn bookmark_interval(&self) -> Duration {
        *self.bookmark_interval.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self.bookmark_interval.lock().unwrap_or_else(|p| p.into_inner()) = interval;
    }

    /// The next free ClusterIP.
    pub fn allocate_service_ip(&self) -> String {
        Ipv4Addr::from(self.next_service_ip.fetch_add(1, Ordering::SeqCst)).to_string()
    }
}
