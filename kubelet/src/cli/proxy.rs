//! `nodelet proxy`: the eBPF Service proxy alone, as kube-proxy runs; `nodelet proxy list`
//! prints the service table programmed in the pinned maps, as `cilium service list` does;
//! `nodelet proxy cleanup` detaches the pinned datapath and removes its pins.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use nodelet_kubelet::agent::proxy_only::{ProxyOnlyConfig, DEFAULT_PROXY_BIND_ADDRESS};
use nodelet_proxy::{
    Frontend, NodePortAddresses, ProxyConfig, ServiceEntry, SessionAffinity, SockLb, DEFAULT_PIN_DIR,
    DEFAULT_POD_BRIDGE,
};

use super::run::{parse_bind_address, parse_path_allowing_empty, resolve_pin_dir, BindAddress, PinPolicy};

#[derive(clap::Args, Debug)]
#[command(subcommand_negates_reqs = true)]
pub struct ProxyArgs {
    #[command(subcommand)]
    action: Option<ProxyAction>,
    /// Path to a kubeconfig file with kube-proxy's permissions (system:node-proxier).
    #[arg(long, env = "KUBECONFIG", required = true)]
    kubeconfig: Option<PathBuf>,
    /// The cgroup2 directory the eBPF socket hooks (connect, sendmsg, recvmsg, getpeername) attach to (default: the cgroup2 root).
    #[arg(long)]
    proxy_attach_cgroup: Option<PathBuf>,
    /// The bpffs directory the datapath is pinned in, so that Services keep working while the
    /// proxy restarts (default /sys/fs/bpf/nodelet; "" = not pinned, detached on exit).
    #[arg(long, value_name = "DIR", value_parser = parse_path_allowing_empty)]
    proxy_pin_dir: Option<PathBuf>,
    /// Where to serve /healthz, /livez and /metrics (ip:port; "" or "0" serves nothing).
    #[arg(long, default_value = DEFAULT_PROXY_BIND_ADDRESS, value_parser = parse_bind_address)]
    healthz_bind_address: BindAddress,
    /// The name of this node, as kube-proxy's flag (default: the host name): its endpoints
    /// serve `internalTrafficPolicy: Local`, and its Node's zone label picks topology hints.
    #[arg(long, value_name = "NAME")]
    hostname_override: Option<String>,
    /// NodePorts are served on this node's addresses within these CIDRs, IPv4 and IPv6,
    /// comma-separated, or on its primary address of each family with "primary", as
    /// kube-proxy's flag (a family none of the CIDRs is of keeps all its addresses; 127.0.0.1
    /// when an IPv4 CIDR holds it, never ::1; default: all the Node's InternalIP and
    /// ExternalIP addresses and 127.0.0.1).
    #[arg(long, value_name = "CIDR,...|primary")]
    nodeport_addresses: Option<NodePortAddresses>,
    /// The node's external interfaces, comma-separated (cilium's --devices): NodePort,
    /// externalIP and LoadBalancer traffic entering through them (IPv4, TCP and UDP) is
    /// load-balanced by a tc program. Default: none, that datapath off (attaching to the
    /// node's interfaces is an explicit choice). Not pinned: after a restart its connection
    /// tracking starts empty.
    #[arg(long, value_delimiter = ',', value_name = "IFACE,...")]
    nodeport_devices: Vec<String>,
    /// The pods' bridge (the agent's --bridge): replies of pods to traffic entering through
    /// --nodeport-devices are translated back there.
    #[arg(long, default_value = DEFAULT_POD_BRIDGE)]
    bridge: String,
}

#[derive(clap::Subcommand, Debug)]
enum ProxyAction {
    /// Print the service table programmed in the pinned maps (exit 1 when nothing is pinned).
    List(PinDirArgs),
    /// Detach the pinned datapath and remove its pins (Services stop being load-balanced).
    Cleanup(PinDirArgs),
}

#[derive(clap::Args, Debug)]
struct PinDirArgs {
    /// The bpffs directory the datapath is pinned in.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    proxy_pin_dir: PathBuf,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(ProxyAction::List(pin)) => list(&pin.proxy_pin_dir),
        Some(ProxyAction::Cleanup(pin)) => cleanup(&pin.proxy_pin_dir),
        None => serve(args),
    }
}

fn serve(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let kubeconfig = args.kubeconfig.context("--kubeconfig is required")?;
    let node_name = match args.hostname_override {
        Some(name) => name,
        None => nodelet_kubelet::local::default_node_name().context("reading the host name for --hostname-override")?,
    };
    let defaults = ProxyConfig::default();
    let proxy = ProxyConfig {
        attach_cgroup: args.proxy_attach_cgroup.unwrap_or(defaults.attach_cgroup),
        pin_dir: resolve_pin_dir(args.proxy_pin_dir, PinPolicy::PinByDefault)?,
        node_name: Some(node_name),
        nodeport_addresses: args.nodeport_addresses.unwrap_or_default(),
        nodeport_devices: args.nodeport_devices,
        pod_bridge: args.bridge,
        ..defaults
    };
    proxy.validate()?;
    proxy.validate_devices()?;
    let config = ProxyOnlyConfig { kubeconfig, proxy, healthz_bind_address: args.healthz_bind_address.0 };
    let runtime = super::tokio_runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        super::cancel_on_signals(shutdown.clone());
        nodelet_kubelet::agent::proxy_only::run_proxy_only(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn list(pin_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let services = SockLb::pinned_services(pin_dir)
        .with_context(|| format!("reading the service table pinned in {}", pin_dir.display()))?;
    let Some(services) = services else {
        eprintln!(
            "nothing is pinned in {}: no nodelet agent or proxy has run with --proxy-pin-dir {0} since boot",
            pin_dir.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    print!("{}", service_table(&services));
    Ok(ExitCode::SUCCESS)
}

fn cleanup(pin_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let unpinned = SockLb::unpin_and_detach(pin_dir)
        .with_context(|| format!("removing the datapath pinned in {}", pin_dir.display()))?;
    if unpinned.link || unpinned.maps > 0 {
        println!("detached and unpinned the Service datapath in {}", pin_dir.display());
    } else {
        println!("nothing was pinned in {}", pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `cilium service list`'s layout: one row per frontend (with its kind, kept in the maps),
/// one line per backend. IDs number the frontends in order (the maps keep no service ids).
/// A frontend with session affinity says so after its backends.
fn service_table(services: &[(Frontend, ServiceEntry)]) -> String {
    let rows: Vec<(String, String, String, Vec<String>)> = services
        .iter()
        .enumerate()
        .map(|(index, (frontend, entry))| {
            let protocol = frontend.protocol.to_string().to_uppercase();
            let mut lines: Vec<String> = if entry.backends.is_empty() {
                vec![String::from("(none: connections refused)")]
            } else {
                entry
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(slot, backend)| format!("{} => {backend}/{protocol} (active)", slot + 1))
                    .collect()
            };
            if let SessionAffinity::ClientIp { timeout_seconds } = entry.affinity {
                lines.push(format!("(session affinity: ClientIP, {timeout_seconds}s)"));
            }
            // The protocol in capitals, as cilium; IPv6 addresses stay in lower case.
            let address = std::net::SocketAddr::new(frontend.ip, frontend.port);
            ((index + 1).to_string(), format!("{address}/{protocol}"), entry.kind.to_string(), lines)
        })
        .collect();
    let id_width = rows.iter().map(|r| r.0.len()).chain(["ID".len()]).max().unwrap_or(2);
    let frontend_width = rows.iter().map(|r| r.1.len()).chain(["Frontend".len()]).max().unwrap_or(8);
    let type_width = rows.iter().map(|r| r.2.len()).chain(["Service Type".len()]).max().unwrap_or(12);
    let mut out = String::new();
    let _ =
        writeln!(out, "{:id_width$}   {:frontend_width$}   {:type_width$}   Backend", "ID", "Frontend", "Service Type");
    for (id, frontend, kind, lines) in rows {
        for (n, line) in lines.iter().enumerate() {
            let (id, frontend, kind) =
                if n == 0 { (id.as_str(), frontend.as_str(), kind.as_str()) } else { ("", "", "") };
            let _ = writeln!(out, "{id:id_width$}   {frontend:frontend_width$}   {kind:type_width$}   {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodelet_proxy::{Backend, FrontendKind, Protocol};
    use std::net::{IpAddr, Ipv4Addr};

    fn parse(args: &[&str]) -> Result<ProxyArgs, clap::Error> {
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from([&["nodelet", "proxy", "--kubeconfig", "/k"], args].concat())?;
        match cli.command {
            super::super::Command::Proxy(args) => Ok(args),
            other => panic!("not the proxy command: {other:?}"),
        }
    }

    #[test]
    fn nodeport_addresses_take_cidrs_of_both_families() {
        let args = parse(&["--nodeport-addresses", "192.168.0.0/16,fd00::/64"]).expect("valid CIDRs");
        let expected = NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()]);
        assert_eq!(args.nodeport_addresses, Some(expected));
        assert_eq!(parse(&[]).expect("no flag").nodeport_addresses, None);
        let primary = parse(&["--nodeport-addresses", "primary"]).expect("primary");
        assert_eq!(primary.nodeport_addresses, Some(NodePortAddresses::Primary));
        let error = parse(&["--nodeport-addresses", "192.168.0.0/16,10.1.2.3"]).expect_err("not a CIDR");
        assert!(error.to_string().contains("\"10.1.2.3\" is not a CIDR"), "{error}");
    }

    #[test]
    fn nodeport_devices_are_off_unless_listed() {
        let args = parse(&[]).expect("no flag");
        assert!(args.nodeport_devices.is_empty(), "no device by default: the ingress datapath is off");
        assert_eq!(args.bridge, "nodelet0");
        let args = parse(&["--nodeport-devices", "eth0,eth1", "--bridge", "cni0"]).expect("devices");
        assert_eq!((args.nodeport_devices, args.bridge), (vec!["eth0".to_owned(), "eth1".to_owned()], "cni0".into()));
    }

    #[test]
    fn lists_frontends_and_backends_as_cilium_does() {
        let frontend = |last, protocol| Frontend { ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, last)), port: 53, protocol };
        let backend = |last| Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, last)), port: 5353 };
        let sticky = SessionAffinity::ClientIp { timeout_seconds: 10_800 };
        let table = service_table(&[
            (frontend(10, Protocol::Udp), ServiceEntry::new(vec![backend(2), backend(3)])),
            (frontend(11, Protocol::Tcp), ServiceEntry::new(vec![]).of_kind(FrontendKind::NodePort)),
            (frontend(12, Protocol::Tcp), ServiceEntry::with_affinity(vec![backend(4)], sticky)),
            (
                Frontend { ip: "fd00:96::a".parse().unwrap(), port: 80, protocol: Protocol::Tcp },
                ServiceEntry::new(vec![Backend { ip: "fd00:244::1".parse().unwrap(), port: 8080 }]),
            ),
        ]);
        let expected = [
            "ID   Frontend              Service Type   Backend",
            "1    10.96.0.10:53/UDP     ClusterIP      1 => 10.244.0.2:5353/UDP (active)",
            "                                          2 => 10.244.0.3:5353/UDP (active)",
            "2    10.96.0.11:53/TCP     NodePort       (none: connections refused)",
            "3    10.96.0.12:53/TCP     ClusterIP      1 => 10.244.0.4:5353/TCP (active)",
            "                                          (session affinity: ClientIP, 10800s)",
            "4    [fd00:96::a]:80/TCP   ClusterIP      1 => [fd00:244::1]:8080/TCP (active)",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), expected);
    }
}
