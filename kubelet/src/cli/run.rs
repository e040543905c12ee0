//! `nodelet run DIR`: standalone mode, static pods and Services from manifests.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ipnet::Ipv4Net;
use nodelet_kubelet::kubelet_config::KubeletConfigFile;
use nodelet_kubelet::local::LocalConfig;
use nodelet_kubelet::pod::dns::{default_host_resolv_conf, DnsSettings};
use nodelet_kubelet::serve;
use nodelet_proxy::NodePortAddresses;

/// Settings shared by `agent` and `run`: where state lives and how pods are wired on this host.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// The agent's state directory (images, container state, pod directories).
    #[arg(long, default_value = "/var/lib/nodelet")]
    root_dir: PathBuf,
    /// Registry hosts as containerd's config_path: <dir>/<host>/hosts.toml (mirrors, plain
    /// HTTP, CA certificates, skip_verify) or Docker's ca.crt/client.cert files.
    #[arg(long, default_value = nodelet_runtime::image::DEFAULT_REGISTRY_CONFIG_DIR)]
    registry_config_dir: PathBuf,
    /// The cgroup under which pods' cgroups are created (kubelet's --cgroup-root; default /).
    #[arg(long)]
    cgroup_root: Option<String>,
    /// The pod CIDR to take pod IPs from (default: the Node's spec.podCIDR in agent mode).
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// The bridge pods' veths are attached to.
    #[arg(long, default_value = "nodelet0")]
    bridge: String,
    /// Where pods' network namespaces are bind-mounted.
    #[arg(long, default_value = "/run/nodelet/netns")]
    netns_dir: PathBuf,
    /// The cgroup2 directory the eBPF socket hooks (connect, sendmsg, recvmsg, getpeername)
    /// attach to (default: the cgroup2 root, so every process of the node reaches Services).
    #[arg(long)]
    proxy_attach_cgroup: Option<PathBuf>,
    /// The bpffs directory the eBPF Service datapath is pinned in, so that Services keep
    /// working while nodelet restarts. `agent`: default /sys/fs/bpf/nodelet, "" disables.
    /// `run` never pins (it releases everything on exit) and accepts only "".
    #[arg(long, value_name = "DIR", value_parser = parse_path_allowing_empty)]
    proxy_pin_dir: Option<PathBuf>,
    /// NodePorts are served on the node's addresses within these CIDRs, IPv4 and IPv6,
    /// comma-separated, or on its primary address of each family with "primary"
    /// (kube-proxy's flag; a family none of the CIDRs is of keeps all its addresses;
    /// 127.0.0.1 when an IPv4 CIDR holds it, never ::1; default: all the Node's addresses and
    /// 127.0.0.1). `run` has no Node: 127.0.0.1 at most.
    #[arg(long, value_name = "CIDR,...|primary")]
    nodeport_addresses: Option<NodePortAddresses>,
    /// The node's external interfaces, comma-separated (cilium's --devices): NodePort,
    /// externalIP and LoadBalancer traffic entering through them (IPv4, TCP and UDP) is
    /// load-balanced by a tc program, to this node's pods with the client's address kept
    /// and, for externalTrafficPolicy Cluster, to other nodes' pods behind the node's
    /// address. Default: none, that datapath off (attaching to the node's interfaces is an
    /// explicit choice). Not pinned: after a restart its connection tracking starts empty.
    #[arg(long, value_delimiter = ',', value_name = "IFACE,...")]
    nodeport_devices: Vec<String>,
    /// Masquerade pod traffic that leaves the cluster behind the node's address and turn IPv4
    /// forwarding on, as the bridge CNI plugin's ipMasq does (false: leave the host's
    /// firewall and forwarding alone; pods then reach only the node and each other).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    masquerade: bool,
    /// Pod traffic to this CIDR is not masqueraded (kube-proxy's --cluster-cidr; default: the
    /// pod CIDR).
    #[arg(long)]
    cluster_cidr: Option<Ipv4Net>,
    /// Where to serve /healthz and /metrics (ip:port; "" or "0" serves nothing; default
    /// 127.0.0.1:10248, kubelet's).
    #[arg(long, value_parser = parse_bind_address)]
    healthz_bind_address: Option<BindAddress>,
    /// The cluster's DNS service IPs, comma-separated: the nameservers of ClusterFirst pods
    /// (kubelet's --cluster-dns; without it they fall back to the host's resolver).
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    cluster_dns: Vec<IpAddr>,
    /// The cluster's domain, as cluster.local: ClusterFirst pods search
    /// <namespace>.svc.<domain>, svc.<domain> and <domain> (kubelet's --cluster-domain).
    #[arg(long)]
    cluster_domain: Option<String>,
    /// The host resolver file pods with dnsPolicy Default use; "" gives them none (kubelet's
    /// --resolv-conf; default /etc/resolv.conf, or systemd-resolved's upstream file when
    /// /etc/resolv.conf names only its local stub).
    #[arg(long, value_parser = parse_path_allowing_empty, value_name = "FILE")]
    resolv_conf: Option<PathBuf>,
}

/// `path` with its longest existing prefix resolved (symlinks followed), the rest appended
/// as written: the path a directory created there later has in /proc/self/mountinfo.
fn resolve_existing_prefix(path: &Path) -> std::io::Result<PathBuf> {
    if !path.is_absolute() {
        // Refused by validation, with a message that says so.
        return Ok(path.to_path_buf());
    }
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        match std::fs::canonicalize(existing) {
            Ok(resolved) => return Ok(missing.iter().rev().fold(resolved, |p, part| p.join(part))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(error);
                };
                missing.push(name.to_os_string());
                existing = parent;
            }
            Err(error) => return Err(error),
        }
    }
}

/// `--healthz-bind-address`, wrapped so that clap does not read `Option` as "flag optional".
#[derive(Clone, Debug)]
pub(super) struct BindAddress(pub(super) Option<SocketAddr>);

pub(super) fn parse_bind_address(text: &str) -> Result<BindAddress, std::net::AddrParseError> {
    serve::parse_bind_address(text).map(BindAddress)
}

/// A path flag that accepts "" ("none"), which clap's own PathBuf parser refuses.
pub(super) fn parse_path_allowing_empty(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(text))
}

/// How `--proxy-pin-dir` is read by the subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinPolicy {
    /// `agent`: pin, by default in [`nodelet_proxy::DEFAULT_PIN_DIR`]; "" disables.
    PinByDefault,
    /// `run`: never pin; a non-empty directory is an error, not silently ignored.
    NeverPin,
}

/// `--proxy-pin-dir` as given (`None`: not given) to the directory to pin in.
pub fn resolve_pin_dir(flag: Option<PathBuf>, policy: PinPolicy) -> anyhow::Result<Option<PathBuf>> {
    // Not given and given as "" differ: only the first means the default.
    let pin_by_default = flag.is_none() && policy == PinPolicy::PinByDefault;
    if pin_by_default {
        return Ok(Some(PathBuf::from(nodelet_proxy::DEFAULT_PIN_DIR)));
    }
    match (policy, flag.filter(|dir| !dir.as_os_str().is_empty())) {
        (PinPolicy::PinByDefault, None) => Ok(None),
        (PinPolicy::PinByDefault, Some(dir)) if dir.is_absolute() => Ok(Some(dir)),
        (PinPolicy::PinByDefault, Some(dir)) => {
            anyhow::bail!("--proxy-pin-dir {} must be an absolute path", dir.display())
        }
        (PinPolicy::NeverPin, None) => Ok(None),
        (PinPolicy::NeverPin, Some(dir)) => anyhow::bail!(
            "--proxy-pin-dir {}: `nodelet run` never pins the Service datapath (it releases everything on exit); \
             leave the flag out or pass \"\"",
            dir.display()
        ),
    }
}

impl LocalArgs {
    /// The settings, from the flags and, where a flag is not given, from a KubeletConfiguration
    /// file.
    pub fn into_config(
        self,
        node_name: &str,
        pin: PinPolicy,
        file: Option<&KubeletConfigFile>,
    ) -> anyhow::Result<LocalConfig> {
        let self_exe = std::env::current_exe().context("finding the nodelet executable (for the container monitor)")?;
        let healthz_bind_address = match (self.healthz_bind_address, file.and_then(|f| f.healthz_bind_address)) {
            (Some(flag), _) => flag.0,
            (None, Some(from_file)) => from_file,
            (None, None) => parse_bind_address(serve::DEFAULT_BIND_ADDRESS)?.0,
        };
        // Resolved once: mounts are found by their path in /proc/self/mountinfo, which is
        // resolved, so a root under a symlink must be too. Nothing is created here.
        let root_dir = resolve_existing_prefix(&self.root_dir)
            .with_context(|| format!("resolving --root-dir {}", self.root_dir.display()))?;
        Ok(LocalConfig {
            node_name: node_name.to_string(),
            root_dir,
            registry_config_dir: self.registry_config_dir,
            cgroup_root: self
                .cgroup_root
                .or_else(|| file.and_then(|f| f.cgroup_root.clone()))
                .unwrap_or_else(|| "/".to_string()),
            pod_cidr: self.pod_cidr.or_else(|| file.and_then(|f| f.pod_cidr)),
            bridge: self.bridge,
            netns_dir: self.netns_dir,
            masquerade: self.masquerade,
            cluster_cidr: self.cluster_cidr,
            proxy_attach_cgroup: self.proxy_attach_cgroup,
            proxy_pin_dir: resolve_pin_dir(self.proxy_pin_dir, pin)?,
            nodeport_addresses: self.nodeport_addresses.unwrap_or_default(),
            nodeport_devices: self.nodeport_devices,
            self_exe,
            healthz_bind_address,
            dns: DnsSettings {
                cluster_dns: match (self.cluster_dns, file.and_then(|f| f.cluster_dns.clone())) {
                    (flag, _) if !flag.is_empty() => flag,
                    (_, from_file) => from_file.unwrap_or_default(),
                },
                cluster_domain: self
                    .cluster_domain
                    .map(|domain| domain.trim_end_matches('.').to_string())
                    .or_else(|| file.and_then(|f| f.cluster_domain.clone())),
                resolv_conf: match self.resolv_conf.or_else(|| file.and_then(|f| f.resolv_conf.clone())) {
                    Some(path) if path.as_os_str().is_empty() => None,
                    Some(path) => Some(path),
                    None => Some(default_host_resolv_conf()),
                },
            },
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Directory of manifests (YAML): Pods, Services and EndpointSlices.
    manifest_dir: PathBuf,
    /// The node name static pods are suffixed with (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    #[command(flatten)]
    local: LocalArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let node_name = match args.node_name {
        Some(name) => name,
        None => nodelet_kubelet::local::default_node_name().context("reading the host name for --node-name")?,
    };
    let mut local = args.local.into_config(&node_name, PinPolicy::NeverPin, None)?;
    if local.pod_cidr.is_none() {
        local.pod_cidr = Some(nodelet_kubelet::local::DEFAULT_STANDALONE_POD_CIDR.parse()?);
    }
    local.validate()?;
    let runtime = super::tokio_runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        super::cancel_on_signals(shutdown.clone());
        nodelet_kubelet::standalone::run_standalone(&args.manifest_dir, local, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeport_devices_and_the_bridge_reach_the_proxy_config() {
        use clap::Parser;
        let root = tempfile::tempdir().expect("root dir");
        let root = root.path().display().to_string();
        let parse = |extra: &[&str]| {
            let cli =
                super::super::Cli::try_parse_from([&["nodelet", "run", "/m", "--root-dir", &root], extra].concat())
                    .expect("parse");
            let super::super::Command::Run(args) = cli.command else { panic!("not run: {:?}", cli.command) };
            args.local.into_config("node-a", PinPolicy::NeverPin, None)
        };
        let proxy = nodelet_kubelet::host_runtime::proxy_config(&parse(&[]).expect("config"));
        assert!(proxy.nodeport_devices.is_empty(), "off by default");
        let local = parse(&["--nodeport-devices", "eth0,eth1", "--bridge", "br-pods"]).expect("config");
        local.validate().expect("valid");
        let proxy = nodelet_kubelet::host_runtime::proxy_config(&local);
        assert_eq!((proxy.nodeport_devices, proxy.pod_bridge), (vec!["eth0".into(), "eth1".into()], "br-pods".into()));
        let bad = parse(&["--nodeport-devices", "eth0,nodelet0"]).expect("config");
        let error = format!("{:#}", anyhow::Error::from(bad.validate().expect_err("the bridge is no device")));
        assert!(error.contains("the pod bridge is not an external device"), "{error}");
    }

    #[test]
    fn nodeport_addresses_reach_the_local_config() {
        use clap::Parser;
        let root = tempfile::tempdir().expect("root dir");
        let cli = super::super::Cli::try_parse_from([
            "nodelet",
            "run",
            "/manifests",
            "--root-dir",
            &root.path().display().to_string(),
            "--nodeport-addresses",
            "127.0.0.0/8,fd00::/64",
        ])
        .expect("parse");
        let super::super::Command::Run(args) = cli.command else { panic!("not run: {:?}", cli.command) };
        let local = args.local.into_config("node-a", PinPolicy::NeverPin, None).expect("config");
        let expected = NodePortAddresses::Cidrs(vec!["127.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()]);
        assert_eq!(local.nodeport_addresses, expected);
        assert_eq!(nodelet_kubelet::host_runtime::proxy_config(&local).nodeport_addresses, expected);
        assert_eq!(local.root_dir, std::fs::canonicalize(root.path()).expect("resolved"));
    }

    #[test]
    fn the_root_dir_is_resolved_through_symlinks_without_being_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = std::fs::canonicalize(dir.path()).expect("resolved").join("real");
        std::fs::create_dir(&real).expect("real dir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let resolved = resolve_existing_prefix(&dir.path().join("link/state/nodelet")).expect("resolve");
        assert_eq!(resolved, real.join("state/nodelet"));
        assert!(!real.join("state").exists(), "nothing created");
        assert_eq!(resolve_existing_prefix(Path::new("relative")).expect("kept"), PathBuf::from("relative"));
    }

    #[test]
    fn the_agent_pins_by_default_and_run_never_does() {
        let default = Some(PathBuf::from(nodelet_proxy::DEFAULT_PIN_DIR));
        assert_eq!(resolve_pin_dir(None, PinPolicy::PinByDefault).unwrap(), default);
        assert_eq!(resolve_pin_dir(Some("".into()), PinPolicy::PinByDefault).unwrap(), None);
        assert_eq!(resolve_pin_dir(Some("/x".into()), PinPolicy::PinByDefault).unwrap(), Some("/x".into()));
        assert!(resolve_pin_dir(Some("x".into()), PinPolicy::PinByDefault).is_err());
        assert_eq!(resolve_pin_dir(None, PinPolicy::NeverPin).unwrap(), None);
        assert_eq!(resolve_pin_dir(Some("".into()), PinPolicy::NeverPin).unwrap(), None);
        let error = resolve_pin_dir(Some("/x".into()), PinPolicy::NeverPin).unwrap_err();
        assert!(error.to_string().contains("never pins"), "{error}");
    }
}
