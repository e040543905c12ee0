//! Services and EndpointSlices from the API server, through reflector stores.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sync::{error_chain, signal_change, ObjectSource, Snapshot};
use crate::table::SERVICE_NAME_LABEL;

/// Services that another proxy implementation handles carry this label;
/// kube-proxy skips them, so do we.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The reflector stores, read by the reconcile loop.
pub(crate) struct StoreSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl ObjectSource for StoreSource {
    fn snapshot(&self) -> Snapshot {
        Snapshot { services: self.services.state(), slices: self.slices.state() }
    }
}

impl StoreSource {
    /// Wait until both stores hold a full list, so the first sync does not
    /// remove services that are merely not listed yet. False on shutdown.
    pub(crate) async fn wait_until_ready(&self, shutdown: &CancellationToken) -> bool {
        let ready =
            async { self.services.wait_until_ready().await.is_ok() && self.slices.wait_until_ready().await.is_ok() };
        tokio::select! {
            () = shutdown.cancelled() => false,
            ready = ready => ready,
        }
    }
}

/// Start watching: returns the stores and the future that feeds them,
/// signalling `changes` on every change, until `shutdown`.
pub(crate) fn watch_objects(
    client: Client,
    changes: mpsc::Sender<()>,
    shutdown: CancellationToken,
) -> (StoreSource, impl std::future::Future<Output = ()>) {
    let (services, services_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let services_config = watcher::Config::default().labels(&format!("!{SERVICE_PROXY_NAME_LABEL}"));
    let slices_config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
    let feed = {
        let services_api: Api<Service> = Api::all(client.clone());
        let slices_api: Api<EndpointSlice> = Api::all(client);
        let changes_for_slices = changes.clone();
        let shutdown_for_slices = shutdown.clone();
        async move {
            tokio::join!(
                feed_store(services_api, services_config, services_writer, changes, shutdown),
                feed_store(slices_api, slices_config, slices_writer, changes_for_slices, shutdown_for_slices),
            );
        }
    };
    (StoreSource { services, slices }, feed)
}

/// Run one watcher into its store; watch errors are logged and retried with
/// backoff by the watcher itself.
async fn feed_store<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    changes: mpsc::Sender<()>,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(event)) => {
                if changes_objects(&event) {
                    signal_change(&changes);
                }
            }
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

/// Whether the store's content changed in a way worth a sync: a relist is
/// only complete at InitDone.
fn changes_objects<K>(event: &Event<K>) -> bool {
    matches!(event, Event::Apply(_) | Event::Delete(_) | Event::InitDone)
}
