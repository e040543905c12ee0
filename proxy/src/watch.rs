//! Services and EndpointSlices from the API server, through reflector stores, and the
//! topology of this proxy's Node (as kube-proxy's NodeTopologyConfig watches it).

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sync::{error_chain, ChangeTracker, ObjectSource, Snapshot};
use crate::table::{
    Changes, NodePortAddresses, NodeTopology, HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};

/// The reflector stores and the node's topology, read by the reconcile loop for full
/// syncs, and the changes the watch events recorded since the last sync.
pub(crate) struct StoreSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// `None` until the Node was listed.
    node: watch::Receiver<Option<NodeTopology>>,
    tracker: Arc<ChangeTracker>,
}

impl ObjectSource for StoreSource {
    fn snapshot(&self) -> Snapshot {
        let node = self.node.borrow().clone().unwrap_or_default();
        Snapshot { services: self.services.state(), slices: self.slices.state(), node }
    }

    fn tracker(&self) -> &ChangeTracker {
        &self.tracker
    }
}

impl StoreSource {
    /// Wait until both stores hold a full list and the Node was listed, so the first sync
    /// neither removes services that are merely not listed yet nor ignores the node's zone.
    /// False on shutdown.
    pub(crate) async fn wait_until_ready(&self, shutdown: &CancellationToken) -> bool {
        let mut node = self.node.clone();
        let ready = async {
            self.services.wait_until_ready().await.is_ok()
                && self.slices.wait_until_ready().await.is_ok()
                && node.wait_for(Option::is_some).await.is_ok()
        };
        tokio::select! {
            () = shutdown.cancelled() => false,
            ready = ready => ready,
        }
    }
}

/// Start watching: returns the stores and the future that feeds them, recording every
/// change in `tracker` (an object's new state, or a full rebuild after a relist or a new
/// zone or new NodePort addresses), until `shutdown`. With `node_name`, that Node is
/// watched for its zone label and its addresses (filtered by `nodeport_addresses`);
/// without, the table is built for no particular node, with NodePorts on 127.0.0.1 only.
pub(crate) fn watch_objects(
    client: Client,
    node_name: Option<String>,
    nodeport_addresses: NodePortAddresses,
    tracker: Arc<ChangeTracker>,
    shutdown: CancellationToken,
) -> (StoreSource, impl std::future::Future<Output = ()>) {
    let (services, services_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    // kube-proxy's selection: Services another proxy handles, and the slices of headless
    // Services (which the EndpointSlice controller labels), are not even listed. The
    // controller copies a Service's labels to its slices, so the first holds for both.
    let not_ours = format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}");
    let services_config = watcher::Config::default().labels(&not_ours);
    let slices_config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL},{not_ours}"));
    let (node_tx, node) = watch::channel(match &node_name {
        Some(_) => None,
        None => Some(NodeTopology::without_node(None, &nodeport_addresses)),
    });
    let feed = {
        let services_api: Api<Service> = Api::all(client.clone());
        let slices_api: Api<EndpointSlice> = Api::all(client.clone());
        let nodes_api: Api<Node> = Api::all(client);
        let (tracker_for_services, tracker_for_slices, tracker_for_node) =
            (tracker.clone(), tracker.clone(), tracker.clone());
        let (shutdown_for_slices, shutdown_for_node) = (shutdown.clone(), shutdown.clone());
        async move {
            let node_feed = async move {
                if let Some(name) = node_name {
                    let node = WatchedNode { name, nodeport_addresses };
                    feed_node(nodes_api, node, node_tx, tracker_for_node, shutdown_for_node).await;
                }
            };
            tokio::join!(
                feed_store(services_api, services_config, services_writer, tracker_for_services, shutdown),
                feed_store(slices_api, slices_config, slices_writer, tracker_for_slices, shutdown_for_slices),
                node_feed,
            );
        }
    };
    (StoreSource { services, slices, node, tracker }, feed)
}

/// The Node this proxy runs on, and the filter of its NodePort addresses.
struct WatchedNode {
    name: String,
    nodeport_addresses: NodePortAddresses,
}

impl WatchedNode {
    fn topology(&self, node: Option<&Node>) -> NodeTopology {
        match node {
            Some(node) => NodeTopology::from_node(node, &self.nodeport_addresses),
            None => NodeTopology::without_node(Some(self.name.clone()), &self.nodeport_addresses),
        }
    }
}

/// Keep `topology` on the Node's zone and NodePort addresses, asking `tracker` for a full
/// rebuild when they change (not on every status update of the Node), until `shutdown`.
/// Until the Node exists the table is built for the name alone.
async fn feed_node(
    api: Api<Node>,
    watched: WatchedNode,
    topology: watch::Sender<Option<NodeTopology>>,
    tracker: Arc<ChangeTracker>,
    shutdown: CancellationToken,
) {
    let name = watched.name.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = None;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        let seen = match next {
            Some(Ok(Event::Init)) => {
                listed = Some(watched.topology(None));
                continue;
            }
            Some(Ok(Event::InitApply(node))) => {
                listed = Some(watched.topology(Some(&node)));
                continue;
            }
            Some(Ok(Event::InitDone)) => listed.take().unwrap_or_else(|| watched.topology(None)),
            Some(Ok(Event::Apply(node))) => watched.topology(Some(&node)),
            Some(Ok(Event::Delete(_))) => watched.topology(None),
            Some(Err(error)) => {
                tracing::warn!(kind = "Node", node = %name, error = %error_chain(&error), "watch");
                continue;
            }
            None => {
                tracing::warn!(kind = "Node", node = %name, "watch stream ended");
                return;
            }
        };
        let changed = topology.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&seen);
            if changed {
                tracing::info!(
                    node = %name,
                    zone = seen.zone.as_deref().unwrap_or("(none)"),
                    nodeport_addresses = ?seen.node_port_addresses,
                    "node topology for the Service proxy"
                );
                *current = Some(seen);
            }
            changed
        });
        if changed {
            tracker.request_full();
        }
    }
}

/// How the events of a watched kind are recorded as changes.
trait Tracked: Sized {
    fn applied(changes: &mut Changes, object: Arc<Self>);
    fn deleted(changes: &mut Changes, object: &Self);
}

impl Tracked for Service {
    fn applied(changes: &mut Changes, object: Arc<Self>) {
        changes.service_applied(object);
    }

    fn deleted(changes: &mut Changes, object: &Self) {
        changes.service_deleted(object);
    }
}

impl Tracked for EndpointSlice {
    fn applied(changes: &mut Changes, object: Arc<Self>) {
        changes.slice_applied(object);
    }

    fn deleted(changes: &mut Changes, object: &Self) {
        changes.slice_deleted(object);
    }
}

/// Run one watcher into its store, recording each change in `tracker`; watch errors are
/// logged and retried with backoff by the watcher itself.
async fn feed_store<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    tracker: Arc<ChangeTracker>,
    shutdown: CancellationToken,
) where
    K: Resource + Tracked + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let store = writer.as_reader();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(event)) => record(&tracker, &store, event),
            Some(Err(error)) => {
                tracing::warn!(%kind, error = %error_chain(&error), "watch");
            }
            None => {
                tracing::warn!(%kind, "watch stream ended");
                return;
            }
        }
    }
}

/// One watch event into the tracker: an object's new state (the store's copy, which the
/// reflector wrote before it passed the event on), or, when a relist completes (objects may
/// have gone while the watch was down), a full rebuild.
fn record<K>(tracker: &ChangeTracker, store: &Store<K>, event: Event<K>)
where
    K: Resource + Tracked + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    match event {
        Event::Apply(object) => {
            let shared = store.get(&reflector::ObjectRef::from_obj(&object)).unwrap_or_else(|| Arc::new(object));
            tracker.record(|changes| K::applied(changes, shared));
        }
        Event::Delete(object) => tracker.record(|changes| K::deleted(changes, &object)),
        Event::InitDone => tracker.request_full(),
        Event::Init | Event::InitApply(_) => {}
    }
}
