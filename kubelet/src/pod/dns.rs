//! A pod's /etc/resolv.conf, as kubelet forms it (pkg/kubelet/network/dns): the pod's
//! dnsPolicy picks the cluster's DNS service, the host's resolver or nothing, the pod's
//! dnsConfig is merged in, and the result is cut to what glibc reads (3 nameservers, 32
//! search domains of at most 2048 characters), with a warning naming what was dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// glibc's limits, which kubelet enforces.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_DOMAINS: usize = 32;
const MAX_SEARCH_LINE_CHARS: usize = 2048;
const MAX_DOMAIN_CHARS: usize = 253;

/// The node's DNS settings (kubelet's --cluster-dns, --cluster-domain and --resolv-conf).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// The cluster's DNS service; empty: ClusterFirst pods fall back to the host's resolver.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's domain, as "cluster.local"; `None`: no cluster search domains.
    pub cluster_domain: Option<String>,
    /// The host resolver file pods with dnsPolicy Default read; `None` (kubelet's
    /// `--resolv-conf=""`): no host DNS, the pod resolves through its own localhost.
    pub resolv_conf: Option<PathBuf>,
}

/// A resolver configuration: what /etc/resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// (reason, message) of the Warning events kubelet records while forming a pod's resolver
/// configuration.
pub type DnsWarnings = Vec<(&'static str, String)>;

/// A pod's resolver configuration and the warnings kubelet would record while forming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDns {
    pub config: ResolverConfig,
    pub warnings: DnsWarnings,
}

#[derive(Debug, thiserror::Error)]
#[error("read host resolver file {path}")]
pub struct ReadResolvConfError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl DnsSettings {
    /// The host's resolver configuration, read from `resolv_conf`.
    pub fn host_config(&self) -> Result<ResolverConfig, ReadResolvConfError> {
        match &self.resolv_conf {
            Some(path) => read_resolv_conf(path),
            None => Ok(ResolverConfig::default()),
        }
    }
}

fn read_resolv_conf(path: &Path) -> Result<ResolverConfig, ReadResolvConfError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ReadResolvConfError { path: path.to_path_buf(), source })?;
    Ok(parse_resolv_conf(&text))
}

/// Nameservers, search domains and options of a resolv.conf; as glibc, the last `search`
/// and `options` lines win. Trailing dots of search domains go (kubelet does the same).
pub fn parse_resolv_conf(text: &str) -> ResolverConfig {
    let mut config = ResolverConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => config.servers.extend(fields.next().map(str::to_string)),
            Some("search") => {
                config.searches = fields.filter(|s| *s != ".").map(|s| s.trim_end_matches('.').to_string()).collect();
            }
            Some("options") => config.options = fields.map(str::to_string).collect(),
            _ => {}
        }
    }
    config
}

/// How a pod resolves names, from its dnsPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodDnsType {
    Cluster,
    Host,
    None,
}

fn dns_type(pod: &Pod) -> PodDnsType {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec.and_then(|s| s.dns_policy.as_deref()) {
        Some("None") => PodDnsType::None,
        Some("ClusterFirstWithHostNet") => PodDnsType::Cluster,
        Some("Default") => PodDnsType::Host,
        // ClusterFirst, the default; a host-network pod falls back to the host's resolver.
        _ if host_network => PodDnsType::Host,
        _ => PodDnsType::Cluster,
    }
}

/// The pod's resolver configuration, given the host's (`host`) and the node's settings.
pub fn pod_dns(pod: &Pod, settings: &DnsSettings, host: ResolverConfig) -> PodDns {
    let mut warnings = Vec::new();
    let mut config = host;
    let mut kind = dns_type(pod);
    if kind == PodDnsType::Cluster && settings.cluster_dns.is_empty() {
        warnings.push((
            "MissingClusterDNS",
            "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. \
             Falling back to \"Default\" policy."
                .to_string(),
        ));
        kind = PodDnsType::Host;
    }
    match kind {
        PodDnsType::Cluster => {
            config.servers = settings.cluster_dns.iter().map(IpAddr::to_string).collect();
            config.searches = cluster_searches(pod, settings.cluster_domain.as_deref(), config.searches);
            config.options = vec!["ndots:5".to_string()];
        }
        PodDnsType::Host if settings.resolv_conf.is_none() => {
            // kubelet's answer to `--resolv-conf=""`: only the pod's own localhost.
            config = ResolverConfig {
                servers: vec!["127.0.0.1".to_string()],
                searches: vec![".".to_string()],
                options: Vec::new(),
            };
        }
        PodDnsType::Host => {}
        PodDnsType::None => config = ResolverConfig::default(),
    }
    if let Some(dns_config) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        merge_pod_dns_config(&mut config, dns_config);
    }
    fit_limits(&mut config, &mut warnings);
    PodDns { config, warnings }
}

/// `<namespace>.svc.<domain> svc.<domain> <domain>`, then the host's search domains.
fn cluster_searches(pod: &Pod, cluster_domain: Option<&str>, host: Vec<String>) -> Vec<String> {
    let Some(domain) = cluster_domain.filter(|d| !d.is_empty()) else {
        return host;
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut searches = vec![format!("{namespace}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
    searches.extend(host);
    dedup(&mut searches);
    searches
}

/// The pod's dnsConfig on top: nameservers and searches appended without repeats, options
/// replaced by name.
fn merge_pod_dns_config(config: &mut ResolverConfig, pod: &k8s_openapi::api::core::v1::PodDNSConfig) {
    config.servers.extend(pod.nameservers.iter().flatten().cloned());
    dedup(&mut config.servers);
    config.searches.extend(pod.searches.iter().flatten().cloned());
    dedup(&mut config.searches);
    for option in pod.options.iter().flatten() {
        let Some(option_name) = option.name.as_deref() else { continue };
        let rendered = match &option.value {
            Some(value) => format!("{option_name}:{value}"),
            None => option_name.to_string(),
        };
        let name_of = |text: &str| text.split(':').next().unwrap_or_default().to_string();
        let name = name_of(&rendered);
        match config.options.iter_mut().find(|existing| name_of(existing) == name) {
            Some(existing) => *existing = rendered,
            None => config.options.push(rendered),
        }
    }
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// Cut to glibc's limits, as kubelet does, warning with the line that was applied.
fn fit_limits(config: &mut ResolverConfig, warnings: &mut DnsWarnings) {
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        warnings.push((
            "DNSConfigForming",
            format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                config.servers.join(" ")
            ),
        ));
    }
    let mut cut = false;
    if config.searches.len() > MAX_SEARCH_DOMAINS {
        config.searches.truncate(MAX_SEARCH_DOMAINS);
        cut = true;
    }
    // Some resolvers (glibc 2.28) abort on a search domain longer than a DNS name can be.
    let before = config.searches.len();
    config.searches.retain(|domain| domain.len() <= MAX_DOMAIN_CHARS);
    cut |= config.searches.len() != before;
    while config.searches.join(" ").len() > MAX_SEARCH_LINE_CHARS {
        config.searches.pop();
        cut = true;
    }
    if cut {
        warnings.push((
            "DNSConfigForming",
            format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                config.searches.join(" ")
            ),
        ));
    }
}

/// The file's text, as container runtimes write it: search, nameservers, options.
pub fn render(config: &ResolverConfig) -> String {
    let mut out = String::new();
    if !config.searches.is_empty() {
        out.push_str(&format!("search {}\n", config.searches.join(" ")));
    }
    for server in &config.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !config.options.is_empty() {
        out.push_str(&format!("options {}\n", config.options.join(" ")));
    }
    out
}

/// The host's resolver file by default: systemd-resolved's upstream list when
/// /etc/resolv.conf only names the local stub (127.0.0.53 is unreachable from a pod netns).
pub fn default_host_resolv_conf() -> PathBuf {
    let etc = PathBuf::from("/etc/resolv.conf");
    let upstream = PathBuf::from("/run/systemd/resolve/resolv.conf");
    let only_local_stub = std::fs::read_to_string(&etc)
        .map(|text| {
            let servers = parse_resolv_conf(&text).servers;
            !servers.is_empty() && servers.iter().all(|s| s.starts_with("127."))
        })
        .unwrap_or(false);
    if only_local_stub && upstream.exists() {
        upstream
    } else {
        etc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(policy: Option<&str>, host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("shop".into()), ..Default::default() },
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_network),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn cluster() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: Some("cluster.local".into()),
            resolv_conf: Some("/etc/resolv.conf".into()),
        }
    }

    fn host() -> ResolverConfig {
        parse_resolv_conf("# comment\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example. lab.example\noptions edns0 rotate\n")
    }

    #[test]
    fn parses_a_host_file() {
        let config = host();
        assert_eq!(config.servers, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(config.searches, ["corp.example", "lab.example"]);
        assert_eq!(config.options, ["edns0", "rotate"]);
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_search_path() {
        let dns = pod_dns(&pod(None, false), &cluster(), host());
        assert_eq!(
            render(&dns.config),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert!(dns.warnings.is_empty());
    }

    #[test]
    fn cluster_search_domains_are_not_repeated_and_overlong_ones_are_dropped() {
        let mut host = host();
        host.searches = vec!["cluster.local".into(), "a".repeat(254), "corp.example".into()];
        let dns = pod_dns(&pod(None, false), &cluster(), host);
        assert_eq!(
            dns.config.searches,
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
        );
        assert_eq!(dns.warnings.len(), 1);
        assert!(dns.warnings[0].1.starts_with("Search Line limits were exceeded"), "{:?}", dns.warnings);
    }

    #[test]
    fn host_network_pods_use_the_host_resolver_unless_asked() {
        let dns = pod_dns(&pod(Some("ClusterFirst"), true), &cluster(), host());
        assert_eq!(dns.config, host());
        let dns = pod_dns(&pod(Some("ClusterFirstWithHostNet"), true), &cluster(), host());
        assert_eq!(dns.config.servers, ["10.96.0.10"]);
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_with_a_warning() {
        let dns =
            pod_dns(&pod(None, false), &DnsSettings { resolv_conf: Some("/x".into()), ..Default::default() }, host());
        assert_eq!(dns.config, host());
        assert_eq!(dns.warnings[0].0, "MissingClusterDNS");
    }

    #[test]
    fn default_without_a_host_file_resolves_through_localhost() {
        let settings = DnsSettings { resolv_conf: None, ..cluster() };
        let dns = pod_dns(&pod(Some("Default"), false), &settings, ResolverConfig::default());
        assert_eq!(render(&dns.config), "search .\nnameserver 127.0.0.1\n");
    }

    #[test]
    fn none_takes_only_the_pods_dns_config_and_merges_options_by_name() {
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "1.1.1.1".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("2".into()) },
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("3".into()) },
                PodDNSConfigOption { name: Some("edns0".into()), value: None },
            ]),
        });
        let dns = pod_dns(&p, &cluster(), host());
        assert_eq!(render(&dns.config), "search a.example\nnameserver 1.1.1.1\noptions ndots:3 edns0\n");
    }

    #[test]
    fn limits_are_enforced_with_a_warning() {
        let mut p = pod(Some("ClusterFirst"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "1.1.1.2".into(), "1.1.1.3".into()]),
            searches: Some((0..40).map(|i| format!("d{i}.example")).collect()),
            options: None,
        });
        let dns = pod_dns(&p, &cluster(), host());
        assert_eq!(dns.config.servers, ["10.96.0.10", "1.1.1.1", "1.1.1.2"]);
        assert_eq!(dns.config.searches.len(), MAX_SEARCH_DOMAINS);
        let reasons: Vec<_> = dns.warnings.iter().map(|w| w.0).collect();
        assert_eq!(reasons, ["DNSConfigForming", "DNSConfigForming"]);
        assert!(dns.warnings[0].1.ends_with("10.96.0.10 1.1.1.1 1.1.1.2"), "{}", dns.warnings[0].1);
    }
}
