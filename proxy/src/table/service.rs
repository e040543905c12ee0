//! What a Service asks of the proxy, checked: its cluster IPs (one per IP family, as
//! `clusterIPs`, `ipFamilies` and `ipFamilyPolicy` give them), ports (and their nodePorts),
//! externalIPs, LoadBalancer ingress IPs, session affinity, traffic policies and
//! healthCheckNodePort. A Service with anything invalid is refused whole (the message says
//! what), so that none of its frontends is programmed from a half-understood object.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use nodelet_ebpf::{Protocol, SessionAffinity, SourceRange};

use super::family::IpFamily;
use super::select::TrafficPolicy;
use super::SERVICE_PROXY_NAME_LABEL;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (the API server's default).
pub(super) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The largest timeout the API server accepts (one day).
const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// A Service the table programs.
#[derive(Debug)]
pub(super) struct ProxiedService<'a> {
    /// One cluster IP per IP family the Service has, its primary family first (at most
    /// two, never two of one family).
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortSpec<'a>>,
    /// `spec.externalIPs` of the Service's families, in the Service's order (as kube-proxy's
    /// per-family proxiers, an address of a family the Service has no cluster IP of is
    /// not served).
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` of a LoadBalancer Service (of the Service's
    /// families, not `ipMode: Proxy`).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` of a LoadBalancer Service that lists any: its IPv4 ones
    /// (kube-proxy's IPv4 proxier sees only those; none of them leaves the IPv4 frontends
    /// open, as there). `Some` keeps the ingress IPs out of the socket load-balancer.
    pub load_balancer_source_ranges: Option<Vec<SourceRange>>,
    pub affinity: SessionAffinity,
    /// `internalTrafficPolicy`: the endpoints of the ClusterIP frontends.
    pub traffic_policy: TrafficPolicy,
    /// `externalTrafficPolicy` is Local: the Service gets a health check, and with
    /// `internalTrafficPolicy` it decides [`ProxiedService::external_policy`].
    pub external_traffic_local: bool,
    /// `healthCheckNodePort` of a LoadBalancer Service with `externalTrafficPolicy: Local`.
    pub health_check_node_port: Option<u16>,
    /// `publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready: bool,
}

impl ProxiedService<'_> {
    /// The Service's IP families, its primary one first.
    pub(super) fn families(&self) -> impl Iterator<Item = IpFamily> + '_ {
        self.cluster_ips.iter().map(|ip| IpFamily::of(*ip))
    }

    /// Which endpoints NodePort, externalIP and LoadBalancer frontends use for the traffic
    /// they can see, which starts on this node. kube-proxy sends such traffic to the
    /// Service's cluster endpoints even with `externalTrafficPolicy: Local` (its "route
    /// LOCAL traffic to the cluster chain" rule: the client is not lost to SNAT, so there
    /// is no reason to keep it local), unless `internalTrafficPolicy` is Local too: then
    /// kube-proxy computes no cluster endpoints and uses this node's.
    pub(super) fn external_policy(&self) -> TrafficPolicy {
        match (self.external_traffic_local, self.traffic_policy) {
            (true, TrafficPolicy::Local) => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        }
    }
}

/// One port of a Service, matched to the slice port of the same name and protocol.
#[derive(Debug)]
pub(super) struct PortSpec<'a> {
    pub name: &'a str,
    pub port: u16,
    pub protocol: Protocol,
    /// Its `nodePort` (NodePort and LoadBalancer Services; unset or 0: none).
    pub node_port: Option<u16>,
}

#[derive(Debug)]
pub(super) enum ServiceKind<'a> {
    Proxied(ProxiedService<'a>),
    /// Not ours to program, and nothing wrong with it: why.
    Skipped(&'static str),
}

/// (namespace, name) of a Service; `None` for an object without a name.
pub(super) fn key(service: &Service) -> Option<(&str, &str)> {
    Some((service.metadata.namespace.as_deref()?, service.metadata.name.as_deref()?))
}

/// The Service as the proxy programs it; `Err` says what is invalid.
pub(super) fn parse(service: &Service) -> Result<ServiceKind<'_>, String> {
    let Some(spec) = &service.spec else {
        return Ok(ServiceKind::Skipped("no spec"));
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(ServiceKind::Skipped("ExternalName: no virtual IP"));
    }
    if service.metadata.labels.as_ref().is_some_and(|labels| labels.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return Ok(ServiceKind::Skipped("handled by another proxy (service-proxy-name)"));
    }
    let cluster_ips = cluster_ips(spec)?;
    if cluster_ips.is_empty() {
        return Ok(ServiceKind::Skipped("headless, or no cluster IP"));
    }
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let has_node_ports = matches!(service_type, "NodePort" | LOAD_BALANCER);
    let ports = spec.ports.iter().flatten().map(|port| {
        let name = port.name.as_deref().unwrap_or("");
        let number = u16::try_from(port.port).ok().filter(|n| *n != 0);
        let number = number.ok_or_else(|| format!("port {name:?} has invalid number {}: skipped", port.port))?;
        let protocol = protocol_of(port.protocol.as_deref()).ok_or_else(|| {
            format!("port {name:?} has unknown protocol {:?}: skipped", port.protocol.as_deref().unwrap_or(""))
        })?;
        let node_port = match port.node_port.filter(|_| has_node_ports) {
            None | Some(0) => None,
            Some(n) => Some(u16::try_from(n).map_err(|_| format!("port {name:?} has invalid nodePort {n}: skipped"))?),
        };
        Ok(PortSpec { name, port: number, protocol, node_port })
    });
    // kube-proxy's ExternalPolicyLocal: only NodePort and LoadBalancer Services have one
    // (a ClusterIP Service's externalIPs use its cluster endpoints, whatever it says).
    let external_traffic_local = external_traffic_local(spec)? && has_node_ports;
    let is_load_balancer = service_type == LOAD_BALANCER;
    let external_ips = ips(spec.external_ips.iter().flatten().map(String::as_str), "externalIP")?;
    let load_balancer_ips = if is_load_balancer { load_balancer_ips(service)? } else { Vec::new() };
    let load_balancer_source_ranges = if is_load_balancer { source_ranges(spec)? } else { None };
    let (external_ips, load_balancer_ips) =
        (of_families(external_ips, &cluster_ips), of_families(load_balancer_ips, &cluster_ips));
    Ok(ServiceKind::Proxied(ProxiedService {
        cluster_ips,
        ports: ports.collect::<Result<_, String>>()?,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        affinity: affinity(spec)?,
        traffic_policy: traffic_policy(spec)?,
        external_traffic_local,
        health_check_node_port: if is_load_balancer && external_traffic_local {
            health_check_node_port(spec)?
        } else {
            None
        },
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }))
}

/// The addresses of `ips` of a family one of `cluster_ips` has: kube-proxy's proxier of a
/// family sees only the Services with a cluster IP of that family.
fn of_families(ips: Vec<IpAddr>, cluster_ips: &[IpAddr]) -> Vec<IpAddr> {
    let served = |ip: &IpAddr| cluster_ips.iter().any(|cluster_ip| IpFamily::of(*cluster_ip) == IpFamily::of(*ip));
    ips.into_iter().filter(served).collect()
}

const LOAD_BALANCER: &str = "LoadBalancer";

/// `ips` parsed, of both families (`what` names the field in errors).
fn ips<'a>(ips: impl IntoIterator<Item = &'a str>, what: &str) -> Result<Vec<IpAddr>, String> {
    ips.into_iter().map(|ip| parse_ip(ip, what)).collect()
}

fn parse_ip(ip: &str, what: &str) -> Result<IpAddr, String> {
    ip.parse::<IpAddr>().map(canonical).map_err(|_| format!("{what} {ip:?} is not an IP address: skipped"))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is, as Go's net
/// package (and so kube-proxy) reads it; the datapath refuses mapped addresses.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The ingress IPs of a LoadBalancer Service's status that traffic reaches with their own
/// address as destination: `ipMode: Proxy` ones are not (the load-balancer proxies to the
/// nodes, so dialling the IP must reach it, as kube-proxy leaves them).
fn load_balancer_ips(service: &Service) -> Result<Vec<IpAddr>, String> {
    let ingress = service.status.as_ref().and_then(|status| status.load_balancer.as_ref());
    let ips = ingress
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|ingress| ingress.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ingress| ingress.ip.as_deref().filter(|ip| !ip.is_empty()));
    self::ips(ips, "status.loadBalancer.ingress ip")
}

/// `loadBalancerSourceRanges`, `None` when it lists none; else its IPv4 prefixes (host bits
/// cleared), the IPv6 ones checked and left to the IPv6 side, which has no ingress datapath.
fn source_ranges(spec: &ServiceSpec) -> Result<Option<Vec<SourceRange>>, String> {
    let listed = spec.load_balancer_source_ranges.as_deref().unwrap_or_default();
    if listed.is_empty() {
        return Ok(None);
    }
    let mut ranges = Vec::new();
    for text in listed {
        let net: IpNet = text
            .trim()
            .parse()
            .map_err(|_| format!("loadBalancerSourceRanges entry {text:?} is not a CIDR: skipped"))?;
        if let IpNet::V4(net) = net {
            let range = SourceRange::new(net.addr(), net.prefix_len())
                .map_err(|_| format!("loadBalancerSourceRanges entry {text:?} is not a CIDR: skipped"))?;
            ranges.push(range);
        }
    }
    ranges.sort();
    ranges.dedup();
    Ok(Some(ranges))
}

/// `externalTrafficPolicy` is Local.
fn external_traffic_local(spec: &ServiceSpec) -> Result<bool, String> {
    match spec.external_traffic_policy.as_deref().unwrap_or("Cluster") {
        "Cluster" | "" => Ok(false),
        "Local" => Ok(true),
        other => Err(format!("unknown externalTrafficPolicy {other:?}: skipped")),
    }
}

/// `healthCheckNodePort` (unset or 0: none).
fn health_check_node_port(spec: &ServiceSpec) -> Result<Option<u16>, String> {
    match spec.health_check_node_port {
        None | Some(0) => Ok(None),
        Some(n) => u16::try_from(n).map(Some).map_err(|_| format!("healthCheckNodePort {n} is invalid: skipped")),
    }
}

/// The Service's cluster IPs, one per family, its primary family first: `clusterIPs` (or
/// `clusterIP` when that is empty), checked against `ipFamilies` and `ipFamilyPolicy` as the
/// API server checks them (an object from a manifest was not). Empty for a headless Service
/// or one without a cluster IP.
fn cluster_ips(spec: &ServiceSpec) -> Result<Vec<IpAddr>, String> {
    let listed: Vec<&str> = match spec.cluster_ips.as_deref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips.iter().map(String::as_str).collect(),
        None => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if listed.first().is_none_or(|ip| ip.is_empty() || *ip == "None") {
        return Ok(Vec::new());
    }
    let ips = ips(listed, "clusterIP")?;
    if let [first, second, ..] = ips[..] {
        if ips.len() > 2 || IpFamily::of(first) == IpFamily::of(second) {
            return Err(format!("clusterIPs {ips:?} are not one per IP family: skipped"));
        }
    }
    check_families(spec, &ips)?;
    check_family_policy(spec, &ips)?;
    Ok(ips)
}

/// `ipFamilies[i]` is the family of `clusterIPs[i]`; a family without a cluster IP is not
/// served (as kube-proxy's `GetClusterIPByFamily`), a cluster IP without a family is wrong.
fn check_families(spec: &ServiceSpec, ips: &[IpAddr]) -> Result<(), String> {
    let Some(families) = spec.ip_families.as_deref().filter(|families| !families.is_empty()) else {
        return Ok(());
    };
    if ips.len() > families.len() {
        return Err(format!("clusterIPs {ips:?} list more addresses than ipFamilies {families:?}: skipped"));
    }
    for (index, name) in families.iter().enumerate() {
        let family = IpFamily::from_api(name).ok_or_else(|| format!("unknown ipFamilies entry {name:?}: skipped"))?;
        match ips.get(index) {
            Some(ip) if IpFamily::of(*ip) != family => {
                return Err(format!("clusterIPs[{index}] {ip} is not {family}, as ipFamilies[{index}] says: skipped"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `ipFamilyPolicy` against the number of cluster IPs (unset, as in a manifest: whatever
/// they are, as the API server would default it from them).
fn check_family_policy(spec: &ServiceSpec, ips: &[IpAddr]) -> Result<(), String> {
    match (spec.ip_family_policy.as_deref(), ips.len()) {
        (None | Some("PreferDualStack"), _) | (Some("SingleStack"), 1) | (Some("RequireDualStack"), 2) => Ok(()),
        (Some("SingleStack"), _) => {
            Err(format!("ipFamilyPolicy SingleStack allows one cluster IP, not {ips:?}: skipped"))
        }
        (Some("RequireDualStack"), _) => {
            Err(format!("ipFamilyPolicy RequireDualStack needs a cluster IP of each family, not {ips:?}: skipped"))
        }
        (Some(other), _) => Err(format!("unknown ipFamilyPolicy {other:?}: skipped")),
    }
}

/// `sessionAffinity` and its timeout, checked as the API server does.
fn affinity(spec: &ServiceSpec) -> Result<SessionAffinity, String> {
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => Ok(SessionAffinity::None),
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client_ip| client_ip.timeout_seconds);
            match timeout.map(u32::try_from) {
                None => Ok(SessionAffinity::ClientIp { timeout_seconds: DEFAULT_AFFINITY_TIMEOUT }),
                Some(Ok(seconds @ 1..=MAX_AFFINITY_TIMEOUT)) => {
                    Ok(SessionAffinity::ClientIp { timeout_seconds: seconds })
                }
                Some(_) => Err(format!(
                    "sessionAffinityConfig.clientIP.timeoutSeconds {} is not in 1..={MAX_AFFINITY_TIMEOUT}: skipped",
                    timeout.unwrap_or_default()
                )),
            }
        }
        other => Err(format!("unknown sessionAffinity {other:?}: skipped")),
    }
}

fn traffic_policy(spec: &ServiceSpec) -> Result<TrafficPolicy, String> {
    match spec.internal_traffic_policy.as_deref().unwrap_or("Cluster") {
        "Cluster" => Ok(TrafficPolicy::Cluster),
        "Local" => Ok(TrafficPolicy::Local),
        other => Err(format!("unknown internalTrafficPolicy {other:?}: skipped")),
    }
}

/// Kubernetes protocol name (default TCP) to ours; `None` for an unknown name.
pub(super) fn protocol_of(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}
