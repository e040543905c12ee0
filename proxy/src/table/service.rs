//! What a Service asks of the proxy, checked: its IPv4 virtual IP, ports, session affinity
//! and traffic policy. A Service with anything invalid is refused whole (the message says
//! what), so that none of its frontends is programmed from a half-understood object.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use nodelet_ebpf::{Frontend, Protocol, SessionAffinity};

use super::select::TrafficPolicy;
use super::SERVICE_PROXY_NAME_LABEL;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (the API server's default).
pub(super) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The largest timeout the API server accepts (one day).
const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// A Service the table programs.
#[derive(Debug)]
pub(super) struct ProxiedService<'a> {
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<PortSpec<'a>>,
    pub affinity: SessionAffinity,
    pub traffic_policy: TrafficPolicy,
    /// `publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready: bool,
}

impl ProxiedService<'_> {
    /// The frontend of `port` on the cluster IP.
    pub(super) fn frontend(&self, port: &PortSpec<'_>) -> Frontend {
        Frontend { ip: IpAddr::V4(self.cluster_ip), port: port.port, protocol: port.protocol }
    }
}

/// One port of a Service, matched to the slice port of the same name and protocol.
#[derive(Debug)]
pub(super) struct PortSpec<'a> {
    pub name: &'a str,
    pub port: u16,
    pub protocol: Protocol,
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
    let Some(cluster_ip) = cluster_ipv4(spec)? else {
        return Ok(ServiceKind::Skipped("headless, or no IPv4 cluster IP"));
    };
    let ports = spec.ports.iter().flatten().map(|port| {
        let name = port.name.as_deref().unwrap_or("");
        let number = u16::try_from(port.port).ok().filter(|n| *n != 0);
        let number = number.ok_or_else(|| format!("port {name:?} has invalid number {}: skipped", port.port))?;
        let protocol = protocol_of(port.protocol.as_deref()).ok_or_else(|| {
            format!("port {name:?} has unknown protocol {:?}: skipped", port.protocol.as_deref().unwrap_or(""))
        })?;
        Ok(PortSpec { name, port: number, protocol })
    });
    Ok(ServiceKind::Proxied(ProxiedService {
        cluster_ip,
        ports: ports.collect::<Result<_, String>>()?,
        affinity: affinity(spec)?,
        traffic_policy: traffic_policy(spec)?,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }))
}

/// The Service's IPv4 cluster IP (`clusterIPs`, or `clusterIP` when that is empty; the
/// first IPv4 one, as kube-proxy's IPv4 proxier takes); `None` for a headless Service or
/// one with IPv6 only.
fn cluster_ipv4(spec: &ServiceSpec) -> Result<Option<Ipv4Addr>, String> {
    let listed: Vec<&str> = match spec.cluster_ips.as_deref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips.iter().map(String::as_str).collect(),
        None => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if listed.first().is_none_or(|ip| ip.is_empty() || *ip == "None") {
        return Ok(None);
    }
    let mut first = None;
    for ip in listed {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                first = first.or(Some(v4));
            }
            Ok(IpAddr::V6(_)) => {}
            Err(_) => return Err(format!("clusterIP {ip:?} is not an IP address: skipped")),
        }
    }
    Ok(first)
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
