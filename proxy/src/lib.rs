//! nodelet's kube-proxy replacement: Services and EndpointSlices to the eBPF
//! socket load-balancer of `nodelet-ebpf`.
//!
//! `table` computes the desired frontends (ClusterIPs, NodePorts, externalIPs and
//! LoadBalancer IPs, IPv4 and IPv6 as kube-proxy's dual-stack meta-proxier) and backends
//! (pure, with kube-proxy's endpoint selection and session affinity; a frontend's backends
//! are of its own family), `datapath` writes them through the [`datapath::Datapath`] trait, `sync` keeps
//! doing so as objects change, fed by `watch` (API server, and this proxy's Node for its
//! zone and addresses) or by fixed objects; `service_health` serves the health checks of
//! LoadBalancer Services with `externalTrafficPolicy: Local`. A change rebuilds and writes
//! only the Services it touches ([`Reconciler::apply_changes`]); the whole table is rebuilt
//! at start, after a relist, on a new zone or new NodePort addresses, and hourly.
//!
//! With `ProxyConfig::nodeport_devices`, traffic entering the node through those interfaces
//! is load-balanced too: the table's ingress half (IPv4 NodePort, externalIP and
//! LoadBalancer frontends, this node's and other nodes' endpoints apart) goes to the tc
//! programs of `nodelet-ebpf` through [`datapath::IngressDatapath`], synced the same way.
#![forbid(unsafe_code)]

mod config;
pub mod datapath;
mod error;
mod manifest;
mod metrics;
mod service_health;
pub mod sync;
pub mod table;
mod watch;

pub use config::{cgroup2_root_under, ProxyConfig, DEFAULT_PIN_DIR, DEFAULT_POD_BRIDGE};
pub use error::ProxyError;
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use manifest::{parse_service_objects, ServiceObjects};
pub use metrics::register_metrics;
pub use nodelet_ebpf::{
    Backend, Frontend, MapSizes, NodePortService, Protocol, ServiceEntry, SessionAffinity, SockLb, SourceRange,
    Unpinned,
};
pub use service_health::HealthServers;
pub use sync::{Reconciler, SyncTiming};
pub use table::{
    build_table, BuiltTable, Changes, Delta, FrontendKind, HealthCheck, HealthChecks, IngressDelta, IngressTable,
    IpFamily, NodePortAddresses, NodePortAddressesError, NodeTopology, Problem, ServiceTable, TableDelta,
};

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use datapath::{Datapath, EbpfDatapath, EbpfIngress, IngressDatapath};
use sync::{reconcile_loop, ChangeTracker, StaticSource};

/// Watch Services and EndpointSlices (and the Node `cfg.node_name`, for its zone and
/// NodePort addresses) through the API and keep the datapath and the Services' health
/// check servers in line, until `shutdown`. Fails only when the datapath cannot be set up;
/// the load-balancer is detached when this returns, unless `cfg.pin_dir` pins it. With
/// `cfg.nodeport_devices`, the ingress datapath is attached to them (and `cfg.pod_bridge`)
/// first, and detached when this returns (it is never pinned).
pub async fn run(client: kube::Client, cfg: ProxyConfig, shutdown: CancellationToken) -> Result<(), ProxyError> {
    let datapath = EbpfDatapath::new(&cfg)?;
    let ingress = EbpfIngress::from_config(&cfg)?;
    watch_and_sync(client, datapath, ingress, &cfg, SyncTiming::default(), shutdown).await;
    Ok(())
}

/// [`run`] over any datapath, for the node of `cfg` (its name, NodePort address filter and
/// health check bind address; the datapath settings are not read), without an ingress
/// datapath.
pub async fn run_with_datapath<D: Datapath>(
    client: kube::Client,
    datapath: D,
    cfg: &ProxyConfig,
    timing: SyncTiming,
    shutdown: CancellationToken,
) {
    watch_and_sync(client, datapath, None::<EbpfIngress>, cfg, timing, shutdown).await;
}

async fn watch_and_sync<D: Datapath, I: IngressDatapath + 'static>(
    client: kube::Client,
    datapath: D,
    ingress: Option<I>,
    cfg: &ProxyConfig,
    timing: SyncTiming,
    shutdown: CancellationToken,
) {
    let tracker = Arc::new(ChangeTracker::default());
    let (node_name, filter) = (cfg.node_name.clone(), cfg.nodeport_addresses.clone());
    let (source, feed) = watch::watch_objects(client, node_name, filter, tracker, shutdown.clone());
    let reconcile = async {
        if !source.wait_until_ready(&shutdown).await {
            return;
        }
        let mut reconciler = with_ingress(with_health_servers(Reconciler::new(datapath), cfg), ingress);
        reconcile_loop(&mut reconciler, &source, timing, &shutdown).await;
    };
    tokio::join!(feed, reconcile);
}

/// The reconciler, writing the ingress table to `ingress` when there is one.
fn with_ingress<D: Datapath, I: IngressDatapath + 'static>(
    reconciler: Reconciler<D>,
    ingress: Option<I>,
) -> Reconciler<D> {
    match ingress {
        Some(ingress) => reconciler.with_ingress(ingress),
        None => reconciler,
    }
}

/// The reconciler, serving health checks on `cfg.health_check_bind_address` (always the
/// case within a tokio runtime, where the run functions are).
fn with_health_servers<D: Datapath>(reconciler: Reconciler<D>, cfg: &ProxyConfig) -> Reconciler<D> {
    match HealthServers::new(cfg.health_check_bind_address) {
        Some(servers) => reconciler.with_health_servers(servers),
        None => reconciler,
    }
}

/// Standalone mode: the same from a fixed set of objects (manifests), until
/// shutdown. There is no Node object: endpoints are local by `cfg.node_name`, no topology
/// hint applies, and NodePorts are served on 127.0.0.1 only (when
/// `cfg.nodeport_addresses` allows it), so the ingress datapath of `cfg.nodeport_devices`
/// serves externalIPs and LoadBalancer IPs only.
pub async fn run_static(
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    cfg: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let datapath = EbpfDatapath::new(&cfg)?;
    let ingress = EbpfIngress::from_config(&cfg)?;
    let node = NodeTopology::without_node(cfg.node_name.clone(), &cfg.nodeport_addresses);
    let source = StaticSource::new(services, slices, node);
    let mut reconciler = with_ingress(with_health_servers(Reconciler::new(datapath), &cfg), ingress);
    reconcile_loop(&mut reconciler, &source, SyncTiming::default(), &shutdown).await;
    Ok(())
}

/// [`run_static`] over any datapath, for `node`, without health check servers: syncs once
/// (retrying failures) and holds the datapath until shutdown.
pub async fn run_static_with<D: Datapath>(
    datapath: D,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    node: NodeTopology,
    timing: SyncTiming,
    shutdown: CancellationToken,
) {
    let source = StaticSource::new(services, slices, node);
    let mut reconciler = Reconciler::new(datapath);
    reconcile_loop(&mut reconciler, &source, timing, &shutdown).await;
}
