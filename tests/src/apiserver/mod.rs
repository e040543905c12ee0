//! A Kubernetes API server for tests, faithful to the API conventions: HTTPS on 127.0.0.1 with
//! a self-made CA, client-certificate and bearer-token authentication, Node-authorizer style
//! authorization, JSON objects with resourceVersions, list/watch with selectors and bookmarks,
//! the patch types, status subresources, graceful pod deletion, discovery (also aggregated)
//! and Table output for kubectl, an audit log, and fault injection.

mod audit;
mod authn;
mod authz;
mod discovery;
mod errors;
mod handlers;
mod kubeconfig;
mod openapi;
mod patch;
mod request_info;
mod resources;
mod selectors;
mod server;
mod state;
mod store;
mod strategy;
mod table;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use audit::AuditEntry;
pub use authz::KUBE_PROXY_USER;
pub use errors::ApiError;

use state::ServerState;
use store::{Store, Write};
use tls::CertificateAuthority;

/// Namespaces that exist from the start.
pub const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-node-lease", "kube-public"];

/// Events kept for watches to resume from; older resourceVersions are 410 Gone.
pub const DEFAULT_EVENT_HISTORY: usize = 1000;

/// Token of the admin kubeconfig (user "admin", group system:masters).
const ADMIN_USER: &str = "admin";

/// Options of [`TestApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free one. Loopback only.
    pub listen: SocketAddr,
    /// How many change events the watch history keeps.
    pub event_history: usize,
    /// How often watches with allowWatchBookmarks get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            event_history: DEFAULT_EVENT_HISTORY,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// A Kubernetes API server faithful to the API conventions, in-process, HTTPS on 127.0.0.1.
pub struct TestApiServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Certificates and kubeconfigs.
    pub dir: PathBuf,
    state: Arc<ServerState>,
    ca: CertificateAuthority,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApiServer {
    /// Start on 127.0.0.1 with a free port; writes `dir/ca.crt` and `dir/admin.kubeconfig`.
    pub async fn start(dir: &Path) -> anyhow::Result<TestApiServer> {
        Self::start_with(dir, Options::default()).await
    }

    pub async fn start_with(dir: &Path, options: Options) -> anyhow::Result<TestApiServer> {
        if !options.listen.ip().is_loopback() {
            anyhow::bail!("the test API server listens on loopback only, not {}", options.listen);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = CertificateAuthority::generate()?;
        let serving = ca.issue_serving()?;
        let acceptor = TlsAcceptor::from(ca.server_config(&serving)?);
        let listener =
            TcpListener::bind(options.listen).await.with_context(|| format!("binding {}", options.listen))?;
        let address = listener.local_addr().context("local address")?;
        let url = format!("https://{address}");

        let store = Arc::new(Store::new(options.event_history));
        let state = Arc::new(ServerState::new(store, address.to_string()));
        state.set_bookmark_interval(options.bookmark_interval);
        create_initial_namespaces(&state)?;

        std::fs::write(dir.join("ca.crt"), ca.certificate_pem())
            .with_context(|| format!("writing {}", dir.join("ca.crt").display()))?;
        let admin_token = random_token();
        state.tokens.add(&admin_token, ADMIN_USER, &[authn::GROUP_MASTERS.to_string()]);
        kubeconfig::write(
            &dir.join("admin.kubeconfig"),
            &url,
            &ca.certificate_pem(),
            ADMIN_USER,
            kubeconfig::Credentials::BearerToken(&admin_token),
        )?;

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, acceptor, state.clone(), shutdown.clone()));
        tracing::info!(%url, "test API server listening");
        Ok(TestApiServer { url, dir: dir.to_path_buf(), state, ca, shutdown, task: Some(task) })
    }

    /// Kubeconfig with a client certificate for `system:node:<node>` (group system:nodes),
    /// written to `dir/node-<node>.kubeconfig`.
    pub fn node_kubeconfig(&self, node: &str) -> anyhow::Result<PathBuf> {
        self.user_kubeconfig(
            &format!("{}{node}", authn::NODE_USER_PREFIX),
            Some(authn::GROUP_NODES),
            &self.dir.join(format!("node-{node}.kubeconfig")),
        )
    }

    /// Kubeconfig with a client certificate for any user (CN) and group (O), at `path`.
    pub fn user_kubeconfig(&self, user: &str, group: Option<&str>, path: &Path) -> anyhow::Result<PathBuf> {
        let issued = self.ca.issue_client(user, group)?;
        kubeconfig::write(
            path,
            &self.url,
            &self.ca.certificate_pem(),
            user,
            kubeconfig::Credentials::ClientCertificate {
                certificate_pem: &issued.certificate_pem,
                key_pem: &issued.key_pem,
            },
        )?;
        Ok(path.to_path_buf())
    }

    /// Kubeconfig for an admin (group system:masters), bearer-token kind.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A kube client from a kubeconfig file.
    pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
        let config = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", kubeconfig.display()))?;
        kube::Client::try_from(config).context("building a kube client")
    }

    /// A kube client for the admin (system:masters).
    pub async fn admin_client(&self) -> anyhow::Result<kube::Client> {
        Self::client_from(&self.admin_kubeconfig()).await
    }

    /// A kube client for `system:node:<node>` (writes its kubeconfig first).
    pub async fn node_client(&self, node: &str) -> anyhow::Result<kube::Client> {
        Self::client_from(&self.node_kubeconfig(node)?).await
    }

    /// PEM of the CA every certificate of this server chains to.
    pub fn ca_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    /// Every request so far, in order.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.state.audit.entries()
    }

    pub fn clear_audit(&self) {
        self.state.audit.clear()
    }

    /// Simulate a dead API server: every request gets 503 and open watches end.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.set_unavailable(unavailable)
    }

    /// End every open watch (clients must re-watch).
    pub fn close_watches(&self) {
        self.state.close_watches()
    }

    /// Forget the event history (like an etcd compaction): watches from any older
    /// resourceVersion get a 410 Gone ERROR event.
    pub fn compact(&self) {
        self.state.store.compact()
    }

    /// Change how many events the history keeps.
    pub fn set_event_history(&self, events: usize) {
        self.state.store.set_history_limit(events)
    }

    /// Change how often watches with allowWatchBookmarks get a BOOKMARK (new watches).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.state.set_bookmark_interval(interval)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_resource_version()
    }

    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.state.close_watches();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.state.close_watches();
    }
}

fn create_initial_namespaces(state: &ServerState) -> anyhow::Result<()> {
    for name in INITIAL_NAMESPACES {
        let object = strategy::prepare_create(
            &resources::NAMESPACES,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            "",
            &mut String::new,
        )
        .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e}"))?;
        state
            .store
            .write(&resources::NAMESPACES, &(String::new(), name.to_string()), |_| {
                Ok::<_, ApiError>(Write::Put(object))
            })
            .map_err(|e| anyhow::anyhow!("storing namespace {name}: {e}"))?;
    }
    Ok(())
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
