//! Files the pod directory provides to its containers: /etc/hosts, /etc/resolv.conf and
//! /etc/hostname, written once per pod and bind-mounted into every container.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::dns::{pod_dns, render, DnsSettings, DnsWarnings, ReadResolvConfError};

#[derive(Debug, thiserror::Error)]
pub enum PodFilesError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read the host's {path} for a host-network pod")]
    ReadHostFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ReadResolvConf(#[from] ReadResolvConfError),
    #[error(transparent)]
    Hostname(#[from] HostnameError),
}

/// kubelet's GetNodenameForKernel: the FQDN must fit the kernel's 64-byte nodename.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
    fqdn.len()
)]
pub struct HostnameError {
    pub fqdn: String,
}

/// The longest FQDN the kernel's nodename holds.
const FQDN_MAX_LEN: usize = 64;

/// The host's files a host-network pod sees.
const HOST_HOSTS: &str = "/etc/hosts";
const HOST_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// Where the pod's shared files live on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

impl PodFiles {
    pub fn in_dir(pod_dir: &Path) -> PodFiles {
        PodFiles {
            hosts: pod_dir.join("etc-hosts"),
            resolv_conf: pod_dir.join("resolv.conf"),
            hostname: pod_dir.join("hostname"),
        }
    }
}

/// The hostname a pod's containers see: `spec.hostname` or the pod name, at most 63 chars.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut truncated: String = name.chars().take(63).collect();
    while truncated.ends_with(['-', '.']) {
        truncated.pop();
    }
    truncated
}

/// `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>` when the pod has a subdomain
/// and the node a cluster domain.
fn pod_fqdn(pod: &Pod, cluster_domain: Option<&str>) -> Option<String> {
    let subdomain = pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty())?;
    let domain = cluster_domain.filter(|d| !d.is_empty())?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{}.{subdomain}.{namespace}.svc.{domain}", pod_hostname(pod)))
}

/// The UTS hostname of a pod with its own namespace: the FQDN with `setHostnameAsFQDN`,
/// else the hostname.
pub fn kernel_hostname(pod: &Pod, cluster_domain: Option<&str>) -> Result<String, HostnameError> {
    let as_fqdn = pod.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn) == Some(true);
    match pod_fqdn(pod, cluster_domain).filter(|_| as_fqdn) {
        Some(fqdn) if fqdn.len() > FQDN_MAX_LEN => Err(HostnameError { fqdn }),
        Some(fqdn) => Ok(fqdn),
        None => Ok(pod_hostname(pod)),
    }
}

/// Whether the pod uses the node's network namespace.
pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The content of /etc/hosts, in kubelet's format; with a subdomain and a cluster domain, the
/// pod's FQDN `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>` too.
pub fn hosts_file(pod: &Pod, pod_ip: IpAddr, cluster_domain: Option<&str>) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let hostname = pod_hostname(pod);
    match pod_fqdn(pod, cluster_domain) {
        Some(fqdn) => out.push_str(&format!("{pod_ip}\t{fqdn}\t{hostname}\n")),
        None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    out.push_str(&host_alias_entries(pod));
    out
}

/// kubelet's nodeHostsFileContent: a host-network pod sees the node's /etc/hosts under its
/// own header, with the pod's hostAliases after it.
pub fn host_network_hosts_file(pod: &Pod, node_hosts: &str) -> String {
    format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}{}", host_alias_entries(pod))
}

fn host_alias_entries(pod: &Pod) -> String {
    let mut out = String::new();
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    out
}

/// Write the pod's files. Returns the warnings kubelet records while forming the pod's
/// resolver configuration (reason, message).
pub fn write_pod_files(
    pod_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    dns: &DnsSettings,
) -> Result<(PodFiles, DnsWarnings), PodFilesError> {
    let files = PodFiles::in_dir(pod_dir);
    std::fs::create_dir_all(pod_dir).map_err(|source| PodFilesError::Write { path: pod_dir.to_path_buf(), source })?;
    let resolver = pod_dns(pod, dns, dns.host_config()?);
    let (hosts, hostname) = if is_host_network(pod) {
        let hostname = read_host_file(Path::new(HOST_HOSTNAME))?.trim().to_string();
        (host_network_hosts_file(pod, &read_host_file(Path::new(HOST_HOSTS))?), hostname)
    } else {
        (hosts_file(pod, pod_ip, dns.cluster_domain.as_deref()), kernel_hostname(pod, dns.cluster_domain.as_deref())?)
    };
    write(&files.hosts, hosts.as_bytes())?;
    write(&files.resolv_conf, render(&resolver.config).as_bytes())?;
    write(&files.hostname, format!("{hostname}\n").as_bytes())?;
    Ok((files, resolver.warnings))
}

fn read_host_file(path: &Path) -> Result<String, PodFilesError> {
    std::fs::read_to_string(path).map_err(|source| PodFilesError::ReadHostFile { path: path.to_path_buf(), source })
}

fn write(path: &Path, content: &[u8]) -> Result<(), PodFilesError> {
    std::fs::write(path, content).map_err(|source| PodFilesError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let text = hosts_file(&pod("web"), "10.88.0.5".parse().expect("ip"), Some("cluster.local"));
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("fe00::2\tip6-allrouters\n10.88.0.5\tweb\n"), "{text}");
    }

    #[test]
    fn hosts_file_with_subdomain_and_aliases() {
        let mut p = pod("web");
        let spec = p.spec.as_mut().expect("spec");
        spec.subdomain = Some("svc".into());
        spec.host_aliases =
            Some(vec![HostAlias { ip: "1.2.3.4".into(), hostnames: Some(vec!["a".into(), "b".into()]) }]);
        let text = hosts_file(&p, "10.88.0.5".parse().expect("ip"), Some("cluster.local"));
        assert!(text.contains("10.88.0.5\tweb.svc.default.svc.cluster.local\tweb\n"));
        let no_domain = hosts_file(&p, "10.88.0.5".parse().expect("ip"), None);
        assert!(no_domain.contains("10.88.0.5\tweb\n"), "{no_domain}");
        assert!(text.ends_with("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn kernel_hostname_is_the_fqdn_when_asked() {
        let mut p = pod("web");
        let spec = p.spec.as_mut().expect("spec");
        spec.subdomain = Some("db".into());
        assert_eq!(kernel_hostname(&p, Some("cluster.local")), Ok("web".to_string()));
        p.spec.as_mut().expect("spec").set_hostname_as_fqdn = Some(true);
        assert_eq!(kernel_hostname(&p, Some("cluster.local")), Ok("web.db.default.svc.cluster.local".to_string()));
        assert_eq!(kernel_hostname(&p, None), Ok("web".to_string()));
        p.spec.as_mut().expect("spec").hostname = Some("h".repeat(40));
        let error = kernel_hostname(&p, Some("cluster.local")).expect_err("too long");
        assert_eq!(error.fqdn.len(), 69);
        assert!(error.to_string().ends_with("is too long (64 characters is the max, 69 characters requested)"));
    }

    #[test]
    fn host_network_hosts_file_is_the_nodes() {
        let mut p = pod("web");
        p.spec.as_mut().expect("spec").host_aliases =
            Some(vec![HostAlias { ip: "1.2.3.4".into(), hostnames: Some(vec!["a".into()]) }]);
        let text = host_network_hosts_file(&p, "127.0.0.1 localhost\n10.0.0.7 node1\n");
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.7 node1\n\n\
             # Entries added by HostAliases.\n1.2.3.4\ta\n"
        );
    }

    #[test]
    fn long_hostnames_are_truncated() {
        let name = format!("{}-x", "a".repeat(62));
        assert_eq!(pod_hostname(&pod(&name)), "a".repeat(62));
    }

    #[test]
    fn writes_all_three_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("host-resolv");
        std::fs::write(&resolv, "nameserver 9.9.9.9\n").expect("write");
        let dns = DnsSettings {
            cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
            cluster_domain: Some("cluster.local".into()),
            resolv_conf: Some(resolv),
        };
        let (files, warnings) =
            write_pod_files(&dir.path().join("pod"), &pod("web"), "10.0.0.2".parse().expect("ip"), &dns)
                .expect("files");
        assert!(warnings.is_empty());
        assert_eq!(std::fs::read_to_string(files.hostname).expect("read"), "web\n");
        assert_eq!(
            std::fs::read_to_string(files.resolv_conf).expect("read"),
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let missing = DnsSettings { resolv_conf: Some(dir.path().join("none")), ..dns };
        let error = write_pod_files(&dir.path().join("pod"), &pod("web"), "10.0.0.2".parse().expect("ip"), &missing)
            .expect_err("no host file");
        assert!(error.to_string().contains("none"), "{error}");
    }
}
