//! Files the pod directory provides to its containers: /etc/hosts, /etc/resolv.conf and
//! /etc/hostname, written once per pod and bind-mounted into every container.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, thiserror::Error)]
pub enum PodFilesError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read host resolv.conf {path}")]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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

/// The content of /etc/hosts, in kubelet's format.
pub fn hosts_file(pod: &Pod, pod_ip: IpAddr) -> String {
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
    let spec = pod.spec.as_ref();
    match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            out.push_str(&format!("{pod_ip}\t{hostname}.{subdomain}.{namespace}.svc.cluster.local\t{hostname}\n"));
        }
        None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    out
}

/// Write the pod's files; `host_resolv_conf` is copied as is.
pub fn write_pod_files(
    pod_dir: &Path,
    pod: &Pod,
    pod_ip: IpAddr,
    host_resolv_conf: &Path,
) -> Result<PodFiles, PodFilesError> {
    let files = PodFiles::in_dir(pod_dir);
    std::fs::create_dir_all(pod_dir).map_err(|source| PodFilesError::Write { path: pod_dir.to_path_buf(), source })?;
    let resolv = std::fs::read(host_resolv_conf)
        .map_err(|source| PodFilesError::ReadResolvConf { path: host_resolv_conf.to_path_buf(), source })?;
    write(&files.hosts, hosts_file(pod, pod_ip).as_bytes())?;
    write(&files.resolv_conf, &resolv)?;
    write(&files.hostname, format!("{}\n", pod_hostname(pod)).as_bytes())?;
    Ok(files)
}

fn write(path: &Path, content: &[u8]) -> Result<(), PodFilesError> {
    std::fs::write(path, content).map_err(|source| PodFilesError::Write { path: path.to_path_buf(), source })
}

/// The host's resolver file a pod should copy: systemd-resolved's upstream list when
/// /etc/resolv.conf only names the local stub (127.0.0.53 is unreachable from a pod netns).
pub fn default_host_resolv_conf() -> PathBuf {
    let etc = PathBuf::from("/etc/resolv.conf");
    let upstream = PathBuf::from("/run/systemd/resolve/resolv.conf");
    let only_local_stub = std::fs::read_to_string(&etc)
        .map(|text| {
            let servers: Vec<&str> =
                text.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).map(str::trim).collect();
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
        let text = hosts_file(&pod("web"), "10.88.0.5".parse().expect("ip"));
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
        let text = hosts_file(&p, "10.88.0.5".parse().expect("ip"));
        assert!(text.contains("10.88.0.5\tweb.svc.default.svc.cluster.local\tweb\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
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
        let files = write_pod_files(&dir.path().join("pod"), &pod("web"), "10.0.0.2".parse().expect("ip"), &resolv)
            .expect("files");
        assert_eq!(std::fs::read_to_string(files.hostname).expect("read"), "web\n");
        assert_eq!(std::fs::read_to_string(files.resolv_conf).expect("read"), "nameserver 9.9.9.9\n");
    }
}
