//! The Service proxy in standalone mode: the Services and EndpointSlices of the manifest
//! directory, plus EndpointSlices derived from the static pods' current status, written to
//! the eBPF datapath whenever they change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet_proxy::datapath::{EbpfDatapath, EbpfIngress};
use nodelet_proxy::{parse_service_objects, NodeTopology, Reconciler, ServiceObjects};
use tokio_util::sync::CancellationToken;

use super::endpoints::slices_for_pods;
use crate::local::LocalConfig;
use crate::pod::{self, MemoryStatusSink};

/// How often pod status and manifests are looked at again: the status sink is in memory, so
/// a look is cheap, and endpoints follow readiness within this delay.
const RESYNC: Duration = Duration::from_millis(500);

pub async fn run(dir: &Path, cfg: &LocalConfig, statuses: Arc<MemoryStatusSink>, shutdown: CancellationToken) {
    let proxy_config = crate::host_runtime::proxy_config(cfg);
    // No Node object in standalone mode: endpoints are local by name, no zone.
    let node = NodeTopology::without_node(proxy_config.node_name.clone(), &proxy_config.nodeport_addresses);
    let datapath = match EbpfDatapath::new(&proxy_config) {
        Ok(datapath) => datapath,
        Err(err) => {
            tracing::error!(error = %nodelet_runtime::error_chain(&err), "the Service proxy cannot start; Services are not load-balanced");
            return;
        }
    };
    let mut reconciler = match EbpfIngress::from_config(&proxy_config) {
        Ok(Some(ingress)) => Reconciler::new(datapath).with_ingress(ingress),
        Ok(None) => Reconciler::new(datapath),
        Err(err) => {
            tracing::error!(error = %nodelet_runtime::error_chain(&err), "the Service proxy cannot start; Services are not load-balanced");
            return;
        }
    };
    let mut applied: Option<(Vec<Service>, Vec<EndpointSlice>)> = None;
    loop {
        let desired = desired_objects(dir, &cfg.node_name, &statuses);
        if applied.as_ref() != Some(&desired) {
            match reconciler.sync(&desired.0, &desired.1, &node) {
                Ok(stats) => {
                    tracing::debug!(?stats, "Service datapath synced");
                    applied = Some(desired);
                }
                Err(err) => {
                    tracing::warn!(error = %nodelet_runtime::error_chain(&err), "syncing the Service datapath; retrying")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// The Services and EndpointSlices as they should be programmed now.
fn desired_objects(dir: &Path, node_name: &str, statuses: &MemoryStatusSink) -> (Vec<Service>, Vec<EndpointSlice>) {
    let ServiceObjects { services, mut slices } = read_manifest_objects(dir);
    let pods = pods_with_status(dir, node_name, statuses);
    slices.extend(slices_for_pods(&services, &pods));
    (services, slices)
}

fn read_manifest_objects(dir: &Path) -> ServiceObjects {
    let mut objects = ServiceObjects::default();
    for path in pod::source::manifest_files(dir).unwrap_or_default() {
        let parsed = std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|text| {
            parse_service_objects(&text, &path.display().to_string()).map_err(|e| nodelet_runtime::error_chain(&e))
        });
        match parsed {
            Ok(mut found) => {
                for service in &mut found.services {
                    service.metadata.namespace.get_or_insert_with(|| "default".into());
                }
                for slice in &mut found.slices {
                    slice.metadata.namespace.get_or_insert_with(|| "default".into());
                }
                objects.services.append(&mut found.services);
                objects.slices.append(&mut found.slices);
            }
            Err(err) => tracing::warn!(file = %path.display(), error = %err, "skipping manifest"),
        }
    }
    objects
}

/// The static pods with the status their workers last reported.
fn pods_with_status(dir: &Path, node_name: &str, statuses: &MemoryStatusSink) -> Vec<Pod> {
    let Ok((pods, _errors)) = pod::source::load_static_pods(dir, node_name) else { return Vec::new() };
    let statuses = statuses.statuses();
    pods.into_iter()
        .map(|mut pod| {
            let key = (
                pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            pod.status = statuses.get(&key).cloned();
            pod
        })
        .collect()
}
