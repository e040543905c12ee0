//! Machine facts the Node reports (what cAdvisor gives kubelet), read from files under roots
//! passed in so tests can build a fake host in a temp dir.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FactsError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no MemTotal line in {path}")]
    NoMemTotal { path: PathBuf },
    #[error("statvfs {path}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("list network interfaces")]
    Interfaces(#[source] nix::Error),
}

/// Where facts are read from.
#[derive(Clone, Debug)]
pub struct FactSources {
    /// Root of the host filesystem (`/`): `proc/`, `sys/` and `etc/` are read below it.
    pub host_root: PathBuf,
    /// The agent's root dir; ephemeral-storage capacity is the size of its filesystem.
    pub storage_dir: PathBuf,
    /// Read interface addresses from the live kernel (false in tests, which have no fake for it).
    pub probe_interfaces: bool,
}

impl FactSources {
    /// The real host, with ephemeral storage measured at `storage_dir`.
    pub fn host(storage_dir: impl Into<PathBuf>) -> Self {
        FactSources { host_root: PathBuf::from("/"), storage_dir: storage_dir.into(), probe_interfaces: true }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.host_root.join(relative)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// Lowercased, as kubelet reports it.
    pub hostname: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// Go's GOARCH naming (amd64, arm64), which Kubernetes labels use.
    pub architecture: String,
    /// First global IPv4 of the default-route interface; None when there is none.
    pub internal_ip: Option<IpAddr>,
    /// Pre-allocated huge pages per supported page size, smallest size first.
    pub hugepages: Vec<HugePages>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePages {
    pub page_size_bytes: u64,
    pub count: u64,
}

impl NodeFacts {
    pub fn gather(sources: &FactSources) -> Result<NodeFacts, FactsError> {
        let cpuinfo = read(&sources.path("proc/cpuinfo"))?;
        let meminfo_path = sources.path("proc/meminfo");
        let meminfo = read(&meminfo_path)?;
        let internal_ip = if sources.probe_interfaces {
            let routes = read_optional(&sources.path("proc/net/route"))?.unwrap_or_default();
            let addresses = live_ipv4_addresses()?;
            choose_internal_ipv4(default_route_interface(&routes).as_deref(), &addresses).map(IpAddr::V4)
        } else {
            None
        };
        Ok(NodeFacts {
            hostname: first_line(&read(&sources.path("proc/sys/kernel/hostname"))?).to_lowercase(),
            cpu_count: count_cpus(&cpuinfo),
            memory_bytes: mem_total_bytes(&meminfo).ok_or(FactsError::NoMemTotal { path: meminfo_path })?,
            ephemeral_storage_bytes: filesystem_capacity(&sources.storage_dir)?,
            kernel_version: first_line(&read(&sources.path("proc/sys/kernel/osrelease"))?),
            os_image: read_first_of(sources, &["etc/os-release", "usr/lib/os-release"])?
                .and_then(|text| os_release_pretty_name(&text))
                .unwrap_or_else(|| "Linux".to_string()),
            machine_id: read_first_of(sources, &["etc/machine-id", "var/lib/dbus/machine-id"])?
                .map(|s| first_line(&s))
                .unwrap_or_default(),
            system_uuid: read_first_of(sources, &["sys/class/dmi/id/product_uuid"])?
                .map(|s| first_line(&s))
                .unwrap_or_default(),
            boot_id: read_first_of(sources, &["proc/sys/kernel/random/boot_id"])?
                .map(|s| first_line(&s))
                .unwrap_or_default(),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            internal_ip,
            hugepages: hugepages(&sources.path("sys/kernel/mm/hugepages"))?,
        })
    }
}

/// Supported huge page sizes (`hugepages-<size>kB` dirs) and how many pages each has.
fn hugepages(dir: &Path) -> Result<Vec<HugePages>, FactsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FactsError::Read { path: dir.to_path_buf(), source }),
    };
    let mut pages = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(size_kib) = hugepage_size_kib(&name) else {
            continue;
        };
        let count_text = read(&entry.path().join("nr_hugepages"))?;
        pages.push(HugePages {
            page_size_bytes: size_kib.saturating_mul(1024),
            count: count_text.trim().parse().unwrap_or(0),
        });
    }
    pages.sort_by_key(|p| p.page_size_bytes);
    Ok(pages)
}

/// The size in KiB of a `hugepages-2048kB` directory name.
pub fn hugepage_size_kib(dir_name: &str) -> Option<u64> {
    dir_name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()
}

fn read(path: &Path) -> Result<String, FactsError> {
    fs::read_to_string(path).map_err(|source| FactsError::Read { path: path.to_path_buf(), source })
}

fn read_optional(path: &Path) -> Result<Option<String>, FactsError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FactsError::Read { path: path.to_path_buf(), source }),
    }
}

fn read_first_of(sources: &FactSources, candidates: &[&str]) -> Result<Option<String>, FactsError> {
    for candidate in candidates {
        if let Some(text) = read_optional(&sources.path(candidate))? {
            return Ok(Some(text));
        }
    }
    Ok(None)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Online CPUs as cAdvisor counts them: `processor` entries of /proc/cpuinfo. Falls back to
/// the scheduler's view when the file has none (some architectures).
pub fn count_cpus(cpuinfo: &str) -> u32 {
    let listed =
        cpuinfo.lines().filter(|line| line.split_once(':').is_some_and(|(key, _)| key.trim() == "processor")).count();
    if listed > 0 {
        return u32::try_from(listed).unwrap_or(u32::MAX);
    }
    std::thread::available_parallelism().map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX)).unwrap_or(1)
}

/// MemTotal of /proc/meminfo in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let multiplier = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(multiplier)
}

/// PRETTY_NAME of an os-release file, unquoted.
pub fn os_release_pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\"")).filter(|s| !s.is_empty())
    })
}

/// Kubernetes (Go) names for Rust's target architectures.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// Size in bytes of the filesystem holding `dir` (or its nearest existing ancestor, for a
/// first start before the agent's root dir exists).
fn filesystem_capacity(dir: &Path) -> Result<u64, FactsError> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let stats = nix::sys::statvfs::statvfs(existing)
        .map_err(|source| FactsError::Statvfs { path: existing.to_path_buf(), source })?;
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let capacity = u64::from(stats.blocks()).saturating_mul(u64::from(stats.fragment_size()));
    Ok(capacity)
}

/// The interface of the first default route in /proc/net/route (destination and mask 0, up).
pub fn default_route_interface(route_table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (iface, destination, flags, mask) = (fields.first()?, fields.get(1)?, fields.get(3)?, fields.get(7)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        (*destination == "00000000" && *mask == "00000000" && flags & RTF_UP != 0).then(|| iface.to_string())
    })
}

/// kubelet's choice: the first global unicast IPv4 of the default-route interface, else of any
/// interface.
pub fn choose_internal_ipv4(route_interface: Option<&str>, addresses: &[(String, Ipv4Addr)]) -> Option<Ipv4Addr> {
    let global = |ip: &Ipv4Addr| {
        !(ip.is_loopback() || ip.is_link_local() || ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast())
    };
    let on_route_interface =
        route_interface.and_then(|wanted| addresses.iter().find(|(iface, ip)| iface == wanted && global(ip)));
    on_route_interface.or_else(|| addresses.iter().find(|(_, ip)| global(ip))).map(|(_, ip)| *ip)
}

fn live_ipv4_addresses() -> Result<Vec<(String, Ipv4Addr)>, FactsError> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(FactsError::Interfaces)?;
    Ok(addresses
        .filter_map(|entry| {
            let ip = entry.address?.as_sockaddr_in()?.ip();
            Some((entry.interface_name, ip))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_processors() {
        let cpuinfo = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n";
        assert_eq!(count_cpus(cpuinfo), 2);
        assert!(count_cpus("Hardware: foo\n") >= 1);
    }

    #[test]
    fn parses_memtotal_in_bytes() {
        let meminfo = "MemTotal:        8148064 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(8_148_064 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn parses_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_release_pretty_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release_pretty_name("PRETTY_NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(os_release_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn parses_hugepage_dir_names() {
        assert_eq!(hugepage_size_kib("hugepages-2048kB"), Some(2048));
        assert_eq!(hugepage_size_kib("hugepages-1048576kB"), Some(1_048_576));
        assert_eq!(hugepage_size_kib("other"), None);
    }

    #[test]
    fn maps_architectures_to_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0002000C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth1"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn chooses_a_global_ipv4_preferring_the_route_interface() {
        let addresses = vec![
            ("lo".to_string(), Ipv4Addr::new(127, 0, 0, 1)),
            ("eth0".to_string(), Ipv4Addr::new(169, 254, 1, 1)),
            ("eth0".to_string(), Ipv4Addr::new(10, 0, 0, 5)),
            ("eth1".to_string(), Ipv4Addr::new(192, 168, 1, 9)),
        ];
        assert_eq!(choose_internal_ipv4(Some("eth1"), &addresses), Some(Ipv4Addr::new(192, 168, 1, 9)));
        assert_eq!(choose_internal_ipv4(Some("eth0"), &addresses), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(choose_internal_ipv4(None, &addresses), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(choose_internal_ipv4(None, &addresses[..1]), None);
    }
}
