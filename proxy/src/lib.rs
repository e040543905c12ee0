//! nodelet's kube-proxy replacement: Services and EndpointSlices to the eBPF
//! socket load-balancer of `nodelet-ebpf`.
//!
//! `table` computes the desired frontends and backends (pure), `datapath`
//! writes them through the [`datapath::Datapath`] trait, `sync` keeps doing so
//! as objects change, fed by `watch` (API server) or by fixed objects.
#![forbid(unsafe_code)]

mod config;
pub mod datapath;
mod error;
mod manifest;
mod metrics;
pub mod sync;
pub mod table;
mod watch;

pub use config::{cgroup2_root_under, ProxyConfig, DEFAULT_PIN_DIR};
pub use error::ProxyError;
pub use manifest::{parse_service_objects, ServiceObjects};
pub use metrics::register_metrics;
pub use nodelet_ebpf::{Backend, Frontend, MapSizes, Protocol, SockLb, Unpinned};
pub use sync::{Reconciler, SyncTiming};
pub use table::{build_table, ServiceTable};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use datapath::{Datapath, EbpfDatapath};
use sync::{reconcile_loop, StaticSource};

/// Watch Services and EndpointSlices through the API and keep the datapath in
/// line, until `shutdown`. Fails only when the datapath cannot be set up;
/// the load-balancer is detached when this returns, unless `cfg.pin_dir` pins it.
pub async fn run(client: kube::Client, cfg: ProxyConfig, shutdown: CancellationToken) -> Result<(), ProxyError> {
    let datapath = EbpfDatapath::new(&cfg)?;
    run_with_datapath(client, datapath, SyncTiming::default(), shutdown).await;
    Ok(())
}

/// [`run`] over any datapath.
pub async fn run_with_datapath<D: Datapath>(
    client: kube::Client,
    datapath: D,
    timing: SyncTiming,
    shutdown: CancellationToken,
) {
    let (changes_tx, changes) = mpsc::channel(1);
    let (source, feed) = watch::watch_objects(client, changes_tx, shutdown.clone());
    let reconcile = async {
        if !source.wait_until_ready(&shutdown).await {
            return;
        }
        let mut reconciler = Reconciler::new(datapath);
        reconcile_loop(&mut reconciler, &source, changes, timing, &shutdown).await;
    };
    tokio::join!(feed, reconcile);
}

/// Standalone mode: the same from a fixed set of objects (manifests), until
/// shutdown.
pub async fn run_static(
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    cfg: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let datapath = EbpfDatapath::new(&cfg)?;
    run_static_with(datapath, services, slices, SyncTiming::default(), shutdown).await;
    Ok(())
}

/// [`run_static`] over any datapath: syncs once (retrying failures) and
/// holds the datapath until shutdown.
pub async fn run_static_with<D: Datapath>(
    datapath: D,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    timing: SyncTiming,
    shutdown: CancellationToken,
) {
    let source = StaticSource::new(services, slices);
    // No sender: the objects never change.
    let (_, changes) = mpsc::channel(1);
    let mut reconciler = Reconciler::new(datapath);
    reconcile_loop(&mut reconciler, &source, changes, timing, &shutdown).await;
}
