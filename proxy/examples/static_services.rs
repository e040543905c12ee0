//! Benchmark helper for scripts/bench-proxy-datapath.sh (not a test): program the Services
//! and EndpointSlices of a manifest file into nodelet's eBPF datapath, attached to the given
//! cgroup2 directory (never the root: the script creates one), until SIGINT or SIGTERM.
//!
//!   static_services MANIFEST.yaml CGROUP2_DIR

use anyhow::Context as _;
use nodelet_proxy::{parse_service_objects, run_static, ProxyConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, manifest, cgroup] = args.as_slice() else {
        anyhow::bail!("usage: static_services MANIFEST.yaml CGROUP2_DIR");
    };
    let text = std::fs::read_to_string(manifest).with_context(|| format!("read {manifest}"))?;
    let objects = parse_service_objects(&text, manifest)?;
    let cfg = ProxyConfig { attach_cgroup: cgroup.into(), pin_dir: None, ..ProxyConfig::default() };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    });
    eprintln!("static_services: {} services on {cgroup}", objects.services.len());
    run_static(objects.services, objects.slices, cfg, shutdown).await?;
    Ok(())
}
