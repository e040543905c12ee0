//! Programming time of nodelet's eBPF Service load-balancer against kube-proxy's iptables
//! and IPVS modes for the same Services (issue 6, benchmark item 1). A benchmark, not a
//! test: run it through `scripts/bench-proxy.sh`, as root.
//!
//! For each size (ClusterIP Services of `ENDPOINTS` endpoints each, synthetic Service and
//! EndpointSlice objects), repeated `NODELET_BENCH_REPEAT` times, alternating:
//! - nodelet: a fresh `EbpfDatapath` (loaded and attached to a cgroup the bench creates,
//!   never the root cgroup; not pinned), then a full `Reconciler::sync_shared` from the
//!   objects to the maps (table build + map writes); then one endpoint changed in one slice,
//!   `NODELET_BENCH_CHANGES` times, two ways: the full rebuild the proxy did before partial
//!   syncs (`build_table` of all objects, then `Datapath::apply` of the whole table), and
//!   the partial sync it does now (the changed slice handed to `Reconciler::apply_changes`,
//!   until the map write returned: what one watch event costs);
//! - iptables: the kube-proxy-style nat ruleset (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*,
//!   statistic --mode random, DNAT) loaded with `iptables-restore` inside a fresh network
//!   namespace the bench creates for the round (`nodelet-bench-<id>-ipt`); then the
//!   one-endpoint change as kube-proxy's partial sync writes it (`--noflush`: KUBE-SERVICES
//!   plus the changed chains);
//! - IPVS: virtual services and real servers loaded with `ipvsadm -R` in the same netns
//!   (reported n/a when the kernel has no IPVS).
//!
//! Environment: `NODELET_BENCH_ID` (suffix of the cgroup and netns names, `nodelet-bench-<id>`;
//! random by default), `NODELET_BENCH_SIZES` (default `1000,5000,10000`),
//! `NODELET_BENCH_REPEAT` (default 3), `NODELET_BENCH_CHANGES` (endpoint changes timed per
//! nodelet repeat, default 20), `NODELET_BENCH_IPTABLES_TIMEOUT` (seconds an iptables-restore
//! may take before it is killed and counted as "more than that", default 60: with
//! iptables-nft, a `--noflush` restore into a nat table of tens of thousands of rules can take
//! many minutes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

use nodelet_proxy::datapath::{Datapath, EbpfDatapath};
use nodelet_proxy::table::SERVICE_NAME_LABEL;
use nodelet_proxy::{build_table, Changes, MapSizes, NodeTopology, ProxyConfig, Reconciler};

const ENDPOINTS: u32 = 10;
const NAMESPACE: &str = "bench";
const PORT_NAME: &str = "http";
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// The pod CIDR of kube-proxy's `! -s` masquerade rule.
const CLUSTER_CIDR: &str = "10.128.0.0/14";

type BenchResult<T> = Result<T, String>;

fn main() -> ExitCode {
    if !nix_is_root() {
        eprintln!(
            "skipped: the programming benchmark loads BPF and creates a netns; run scripts/bench-proxy.sh as root"
        );
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:").map(|ids| ids.split_whitespace().nth(1) == Some("0")))
        })
        .unwrap_or(false)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> BenchResult<T> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map_err(|_| format!("{name}={value}: not a number")),
        Err(_) => Ok(default),
    }
}

fn run() -> BenchResult<()> {
    let id = std::env::var("NODELET_BENCH_ID").unwrap_or_else(|_| format!("{:08x}", rand::random::<u32>()));
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("NODELET_BENCH_ID={id}: letters and digits only"));
    }
    let sizes: Vec<u32> = std::env::var("NODELET_BENCH_SIZES")
        .unwrap_or_else(|_| String::from("1000,5000,10000"))
        .split(',')
        .map(|size| size.trim().parse().map_err(|_| format!("NODELET_BENCH_SIZES: {size:?} is not a number")))
        .collect::<BenchResult<_>>()?;
    let repeat: usize = env_or("NODELET_BENCH_REPEAT", 3)?;
    let changes: usize = env_or("NODELET_BENCH_CHANGES", 20)?;
    let iptables_timeout = Duration::from_secs(env_or("NODELET_BENCH_IPTABLES_TIMEOUT", 60)?);
    let name = format!("nodelet-bench-{id}");

    let cgroup = BenchCgroup::create(&name)?;
    let netns = BenchNetns::create(&name)?;
    let work = BenchDir::create(&name)?;
    let iptables_version = command_output(Command::new("iptables-restore").arg("--version"))
        .unwrap_or_else(|error| format!("unknown ({error})"));
    let ipvs = netns.exec(&["ipvsadm", "-Ln"], None).map(|_| ()).map_err(|error| {
        let reason = error.rsplit("): ").next().unwrap_or(&error);
        format!("`ipvsadm -Ln` in the netns: {}", reason.lines().next().unwrap_or("").trim())
    });
    let netns_overhead =
        median_duration((0..5).map(|_| time(|| netns.exec(&["true"], None).map(|_| ())).map(|(_, elapsed)| elapsed)))?;

    println!("nodelet proxy programming benchmark (issue 6, item 1)");
    println!("  cgroup {}  netns {}  repeats {repeat}, alternating", cgroup.path.display(), netns.name);
    println!("  iptables: {} (`iptables-restore`, nat table)", iptables_version.trim());
    match &ipvs {
        Ok(()) => println!("  ipvs: ipvsadm -R"),
        Err(reason) => println!("  ipvs: n/a: {reason}"),
    }
    println!("  iptables and ipvs times include `ip netns exec` (median {:.1} ms, measured alone)", ms(netns_overhead));

    let mut results: BTreeMap<u32, Samples> = BTreeMap::new();
    for round in 1..=repeat {
        for &services in &sizes {
            eprintln!("round {round}/{repeat}: {services} services");
            let objects = Objects::new(services);
            let samples = results.entry(services).or_default();
            nodelet_round(&objects, &cgroup.path, changes, samples)?;
            iptables_round(&objects, &name, &work.path, iptables_timeout, samples)?;
            if ipvs.is_ok() {
                ipvs_round(&objects, &netns, &work.path, samples)?;
            }
        }
    }
    print_table(&results, ipvs.is_ok());
    Ok(())
}

#[derive(Default)]
struct Samples {
    nodelet_load: Vec<Duration>,
    nodelet_sync: Vec<Duration>,
    nodelet_build: Vec<Duration>,
    /// One endpoint change as a full rebuild: `build_table` + `Datapath::apply`.
    nodelet_change_full: Vec<Duration>,
    nodelet_change_build: Vec<Duration>,
    /// One endpoint change as a partial sync: `Reconciler::apply_changes`.
    nodelet_change: Vec<Duration>,
    iptables_generate: Vec<Duration>,
    iptables: Vec<Duration>,
    iptables_change: Vec<Duration>,
    /// A sample hit the timeout: the median is a lower bound.
    iptables_timed_out: bool,
    iptables_change_timed_out: bool,
    ipvs: Vec<Duration>,
    map_entries: u32,
}

/// The Services and EndpointSlices of one size.
struct Objects {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn cluster_ip(index: u32) -> Ipv4Addr {
    // 10.96.0.0/12: room for a million Services.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + index)
}

fn pod_ip(service: u32, endpoint: u32) -> Ipv4Addr {
    // 10.128.0.0/14 (CLUSTER_CIDR).
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + service * ENDPOINTS + endpoint)
}

impl Objects {
    fn new(count: u32) -> Objects {
        let services = (0..count).map(service).collect();
        let slices = (0..count)
            .map(|index| slice(index, &(0..ENDPOINTS).map(|e| pod_ip(index, e)).collect::<Vec<_>>()))
            .collect();
        Objects { services, slices }
    }

    /// Move endpoint 0 of service 0 to another address (a pod replaced), the
    /// `change`-th time: each change differs from the previous one.
    fn change_one_endpoint(&mut self, change: u32) {
        let mut addresses: Vec<Ipv4Addr> = (0..ENDPOINTS).map(|e| pod_ip(0, e)).collect();
        addresses[0] = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 131, 0, 1)) + change);
        self.slices[0] = slice(0, &addresses);
    }

    /// The (service index, endpoints) pairs as kube-proxy would program them.
    fn endpoints_of(&self, index: usize) -> Vec<Ipv4Addr> {
        self.slices[index]
            .endpoints
            .iter()
            .flat_map(|endpoint| endpoint.addresses.iter())
            .filter_map(|address| address.parse().ok())
            .collect()
    }
}

fn service(index: u32) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{index}")),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip(index).to_string()),
            cluster_ips: Some(vec![cluster_ip(index).to_string()]),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(SERVICE_PORT),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(index: u32, addresses: &[Ipv4Addr]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc-{index}-abcde")),
            namespace: Some(NAMESPACE.into()),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), format!("svc-{index}"))].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: addresses
            .iter()
            .map(|address| Endpoint {
                addresses: vec![address.to_string()],
                conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.into()),
            port: Some(i32::from(TARGET_PORT)),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

// ---- nodelet ----

fn nodelet_round(objects: &Objects, cgroup: &Path, changes: usize, samples: &mut Samples) -> BenchResult<()> {
    let count = u32::try_from(objects.services.len()).map_err(|_| "too many services")?;
    let needed = MapSizes::services_needed(count, ENDPOINTS);
    let map_sizes = MapSizes { services: needed.max(MapSizes::default().services), ..MapSizes::default() };
    samples.map_entries = map_sizes.services;
    let cfg = ProxyConfig { attach_cgroup: cgroup.to_path_buf(), pin_dir: None, map_sizes, ..ProxyConfig::default() };
    let node = NodeTopology::default();

    // Table build alone, for the breakdown (not part of the sync sample).
    let (_, build) = time(|| Ok(build_table(&objects.services, &objects.slices, &node)))?;
    samples.nodelet_build.push(build);

    let (datapath, load) = time(|| EbpfDatapath::new(&cfg).map_err(|e| format!("load the eBPF datapath: {e}")))?;
    samples.nodelet_load.push(load);
    let mut reconciler = Reconciler::new(datapath);
    // Shared objects, as the watch cache holds them (made outside the timing).
    let services: Vec<Arc<Service>> = objects.services.iter().cloned().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = objects.slices.iter().cloned().map(Arc::new).collect();
    let (stats, sync) = time(|| {
        reconciler
            .sync_shared(services.iter().cloned(), slices.iter().cloned(), node.clone())
            .map_err(|e| format!("sync {count} services: {e}"))
    })?;
    if stats.upserted != objects.services.len() {
        return Err(format!("first sync wrote {} frontends, expected {count}", stats.upserted));
    }
    samples.nodelet_sync.push(sync);

    // One endpoint change, `changes` times, as the full rebuild of before partial syncs:
    // each writes one frontend.
    let mut changed = Objects { services: objects.services.clone(), slices: objects.slices.clone() };
    let mut number = 0..;
    for _ in 0..changes {
        changed.change_one_endpoint(number.next().unwrap_or_default());
        let (built, build) = time(|| Ok(build_table(&changed.services, &changed.slices, &node)))?;
        let (stats, apply) = time(|| {
            reconciler.datapath_mut().apply(&built.table).map_err(|e| format!("apply one endpoint change: {e}"))
        })?;
        if stats.upserted != 1 || stats.removed != 0 {
            return Err(format!("an endpoint change (full rebuild) wrote {stats:?}, expected one upsert"));
        }
        samples.nodelet_change_build.push(build);
        samples.nodelet_change_full.push(build + apply);
    }

    // The same as partial syncs: the changed slice handed to the reconciler, until the map
    // write returned. The reconciler first takes in the objects the full rebuilds wrote
    // (nothing to write).
    let slices: Vec<Arc<EndpointSlice>> = changed.slices.iter().cloned().map(Arc::new).collect();
    let stats = reconciler
        .sync_shared(services.iter().cloned(), slices, node.clone())
        .map_err(|e| format!("resync {count} services: {e}"))?;
    if stats.upserted != 0 || stats.removed != 0 {
        return Err(format!("the resync after the full rebuilds wrote {stats:?}, expected nothing"));
    }
    for _ in 0..changes {
        changed.change_one_endpoint(number.next().unwrap_or_default());
        let mut event = Changes::new();
        event.slice_applied(Arc::new(changed.slices[0].clone()));
        let (stats, elapsed) =
            time(|| reconciler.apply_changes(event).map_err(|e| format!("partial sync of one endpoint change: {e}")))?;
        if stats.upserted != 1 || stats.removed != 0 {
            return Err(format!("an endpoint change (partial sync) wrote {stats:?}, expected one upsert"));
        }
        samples.nodelet_change.push(elapsed);
    }

    // What the kernel holds is what was asked for, and what a full build gives (outside
    // the timings).
    let programmed = reconciler.datapath_mut().read_back().map_err(|e| format!("read back: {e}"))?;
    let desired = build_table(&changed.services, &changed.slices, &node).table;
    if programmed != desired || reconciler.table() != &desired {
        return Err(format!(
            "the maps hold {} frontends, the reconciler's table {}, not the {} desired",
            programmed.len(),
            reconciler.table().len(),
            desired.len()
        ));
    }
    // Make sure an empty table also applies (everything removed) before detaching.
    let _ = reconciler.datapath_mut().apply(&Default::default());
    Ok(())
}

// ---- iptables, as kube-proxy's iptables mode writes it ----

/// kube-proxy names chains from a hash of the service port (or endpoint): 16 characters.
fn chain(prefix: &str, what: &str) -> String {
    let mut hasher = DefaultHasher::new();
    what.hash(&mut hasher);
    let mut hash = hasher.finish();
    let mut name = String::from(prefix);
    for _ in 0..16 {
        let digit = (hash % 32) as u8;
        hash = (hash / 32) ^ hash.rotate_left(17);
        name.push(char::from(if digit < 26 { b'A' + digit } else { b'2' + digit - 26 }));
    }
    name
}

fn svc_chain(index: usize) -> String {
    chain("KUBE-SVC-", &format!("{NAMESPACE}/svc-{index}:{PORT_NAME}/tcp"))
}

fn sep_chain(index: usize, endpoint: Ipv4Addr) -> String {
    chain("KUBE-SEP-", &format!("{NAMESPACE}/svc-{index}:{PORT_NAME}/tcp {endpoint}:{TARGET_PORT}"))
}

fn services_rule(out: &mut String, index: usize) {
    let ip = cluster_ip(u32::try_from(index).unwrap_or(u32::MAX));
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"{NAMESPACE}/svc-{index}:{PORT_NAME} cluster IP\" \
         -m tcp -p tcp -d {ip}/32 --dport {SERVICE_PORT} -j {}",
        svc_chain(index)
    );
}

/// The KUBE-SVC chain of a service and the KUBE-SEP chains of its endpoints (declarations
/// go to `chains`, rules to `rules`).
fn service_chains(chains: &mut String, rules: &mut String, index: usize, endpoints: &[Ipv4Addr]) {
    let svc = svc_chain(index);
    let ip = cluster_ip(u32::try_from(index).unwrap_or(u32::MAX));
    let comment = format!("{NAMESPACE}/svc-{index}:{PORT_NAME}");
    let _ = writeln!(chains, ":{svc} - [0:0]");
    let _ = writeln!(
        rules,
        "-A {svc} -m comment --comment \"{comment} cluster IP\" -m tcp -p tcp -d {ip}/32 --dport {SERVICE_PORT} \
         ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
    );
    let count = endpoints.len();
    for (position, endpoint) in endpoints.iter().enumerate() {
        let sep = sep_chain(index, *endpoint);
        let _ = writeln!(chains, ":{sep} - [0:0]");
        let remaining = count - position;
        if remaining > 1 {
            #[allow(clippy::cast_precision_loss)]
            let probability = 1.0 / remaining as f64;
            let _ = writeln!(
                rules,
                "-A {svc} -m comment --comment \"{comment} -> {endpoint}:{TARGET_PORT}\" \
                 -m statistic --mode random --probability {probability:.10} -j {sep}"
            );
        } else {
            let _ = writeln!(rules, "-A {svc} -m comment --comment \"{comment} -> {endpoint}:{TARGET_PORT}\" -j {sep}");
        }
        let _ = writeln!(rules, "-A {sep} -m comment --comment \"{comment}\" -s {endpoint}/32 -j KUBE-MARK-MASQ");
        let _ = writeln!(
            rules,
            "-A {sep} -m comment --comment \"{comment}\" -m tcp -p tcp -j DNAT --to-destination {endpoint}:{TARGET_PORT}"
        );
    }
}

const NAT_BASE_CHAINS: &str = ":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
:KUBE-MARK-MASQ - [0:0]\n";

const NAT_BASE_RULES: &str = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";

/// The full nat ruleset of kube-proxy's first sync.
fn iptables_full(objects: &Objects) -> String {
    let mut chains = String::from("*nat\n");
    chains.push_str(NAT_BASE_CHAINS);
    let mut rules = String::from(NAT_BASE_RULES);
    for index in 0..objects.services.len() {
        service_chains(&mut chains, &mut rules, index, &objects.endpoints_of(index));
    }
    for index in 0..objects.services.len() {
        services_rule(&mut rules, index);
    }
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    chains.push_str(&rules);
    chains.push_str("COMMIT\n");
    chains
}

/// kube-proxy's partial sync after service 0's endpoint 0 moved from `old` (restored with
/// `--noflush`): KUBE-SERVICES rewritten whole, the changed service's chains, the retired
/// endpoint chain deleted.
fn iptables_change(objects: &Objects, old: Ipv4Addr) -> String {
    let mut chains = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::new();
    service_chains(&mut chains, &mut rules, 0, &objects.endpoints_of(0));
    // Flushed by its declaration, then deleted (as kube-proxy does).
    let _ = writeln!(chains, ":{} - [0:0]", sep_chain(0, old));
    for index in 0..objects.services.len() {
        services_rule(&mut rules, index);
    }
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    let _ = writeln!(rules, "-X {}", sep_chain(0, old));
    chains.push_str(&rules);
    chains.push_str("COMMIT\n");
    chains
}

/// Each round gets a fresh netns: dropping it removes the rules, where flushing a huge nat
/// table through iptables-nft can itself take minutes. An iptables-restore that takes longer
/// than `timeout` is killed and recorded as `timeout` (printed as "> N").
fn iptables_round(
    objects: &Objects,
    name: &str,
    work: &Path,
    timeout: Duration,
    samples: &mut Samples,
) -> BenchResult<()> {
    let netns = BenchNetns::create(&format!("{name}-ipt"))?;
    let (rules, generate) = time(|| Ok(iptables_full(objects)))?;
    samples.iptables_generate.push(generate);
    let file = work.join("iptables.rules");
    fs::write(&file, &rules).map_err(|e| format!("write {}: {e}", file.display()))?;
    let Some(restore) = netns.exec_timed(&["iptables-restore", "-w", "--noflush"], &file, timeout)? else {
        samples.iptables.push(timeout);
        samples.iptables_timed_out = true;
        return Ok(());
    };
    samples.iptables.push(restore);

    let old = pod_ip(0, 0);
    let mut changed = Objects { services: objects.services.clone(), slices: objects.slices.clone() };
    changed.change_one_endpoint(0);
    let change = iptables_change(&changed, old);
    fs::write(&file, change).map_err(|e| format!("write {}: {e}", file.display()))?;
    match netns.exec_timed(&["iptables-restore", "-w", "--noflush"], &file, timeout)? {
        Some(restore) => samples.iptables_change.push(restore),
        None => {
            samples.iptables_change.push(timeout);
            samples.iptables_change_timed_out = true;
            return Ok(());
        }
    }

    // Sanity (untimed): every service has its jump in KUBE-SERVICES.
    let listed = netns.exec(&["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], None)?;
    let jumps = listed.lines().filter(|line| line.contains("-j KUBE-SVC-")).count();
    if jumps != objects.services.len() {
        return Err(format!("KUBE-SERVICES holds {jumps} service jumps, expected {}", objects.services.len()));
    }
    Ok(())
}

// ---- IPVS ----

fn ipvs_round(objects: &Objects, netns: &BenchNetns, work: &Path, samples: &mut Samples) -> BenchResult<()> {
    netns.exec(&["ipvsadm", "-C"], None)?;
    let mut rules = String::new();
    for index in 0..objects.services.len() {
        let vip = cluster_ip(u32::try_from(index).unwrap_or(u32::MAX));
        let _ = writeln!(rules, "-A -t {vip}:{SERVICE_PORT} -s rr");
        for endpoint in objects.endpoints_of(index) {
            let _ = writeln!(rules, "-a -t {vip}:{SERVICE_PORT} -r {endpoint}:{TARGET_PORT} -m -w 1");
        }
    }
    let file = work.join("ipvs.rules");
    fs::write(&file, rules).map_err(|e| format!("write {}: {e}", file.display()))?;
    let (_, restore) = time(|| netns.exec(&["ipvsadm", "-R"], Some(&file)))?;
    samples.ipvs.push(restore);
    netns.exec(&["ipvsadm", "-C"], None)?;
    Ok(())
}

// ---- output ----

fn print_table(results: &BTreeMap<u32, Samples>, ipvs: bool) {
    println!();
    println!(
        "medians in ms; nodelet = a full Reconciler::sync from the objects to the maps (table build + map writes)"
    );
    println!(
        "one endpoint change: 1-ep full = full rebuild (build_table + apply, before partial syncs), of which \
         (table build); 1-ep partial = the changed slice handed to Reconciler::apply_changes until the map write returned"
    );
    println!(
        "{:>8} {:>9} {:>10} {:>11} {:>9} {:>11} {:>12} | {:>12} {:>13} {:>13} {:>15}",
        "services",
        "endpoints",
        "nodelet",
        "iptables",
        "ipvs",
        "ipt/nodelet",
        "ipvs/nodelet",
        "1-ep full",
        "(table build)",
        "1-ep partial",
        "1-ep iptables"
    );
    for (services, samples) in results {
        let nodelet = median(&samples.nodelet_sync);
        let iptables = median(&samples.iptables);
        let ipvs_ms = ipvs.then(|| median(&samples.ipvs));
        let ratio = |other: f64| if nodelet > 0.0 { format!("{:.0}x", other / nodelet) } else { "-".into() };
        // A timed-out sample makes the median a lower bound: "> N".
        let bound = |timed_out: bool| if timed_out { "> " } else { "" };
        println!(
            "{:>8} {:>9} {:>10.2} {:>11} {:>9} {:>11} {:>12} | {:>12.3} {:>13.3} {:>13.3} {:>15}",
            services,
            u64::from(*services) * u64::from(ENDPOINTS),
            nodelet,
            format!("{}{iptables:.1}", bound(samples.iptables_timed_out)),
            ipvs_ms.map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
            format!("{}{}", bound(samples.iptables_timed_out), ratio(iptables)),
            ipvs_ms.map_or_else(|| "n/a".into(), ratio),
            median(&samples.nodelet_change_full),
            median(&samples.nodelet_change_build),
            median(&samples.nodelet_change),
            if samples.iptables_change.is_empty() {
                // The full load timed out, so there was nothing to change.
                "n/a".to_string()
            } else {
                format!("{}{:.1}", bound(samples.iptables_change_timed_out), median(&samples.iptables_change))
            },
        );
    }
    println!();
    println!("detail (medians, ms):");
    for (services, samples) in results {
        println!(
            "  {services:>6} services: nodelet load+attach {:.1}, build_table alone {:.2} ({} map entries); \
             iptables rules generated in {:.1}; samples: nodelet {} sync / {} change each way, \
             iptables {}",
            median(&samples.nodelet_load),
            median(&samples.nodelet_build),
            samples.map_entries,
            median(&samples.iptables_generate),
            samples.nodelet_sync.len(),
            samples.nodelet_change.len(),
            samples.iptables.len(),
        );
    }
    if let Some((services, samples)) = results.iter().next_back() {
        let ratio = median(&samples.iptables) / median(&samples.nodelet_sync);
        let change = median(&samples.nodelet_change);
        println!();
        println!(
            "targets at {services} services: iptables/nodelet {}{ratio:.0}x (target >= 50x: {}); one endpoint \
             change (partial sync) {change:.3} ms (target <= 5 ms: {})",
            if samples.iptables_timed_out { "> " } else { "" },
            if ratio >= 50.0 { "met" } else { "NOT met" },
            if change <= 5.0 { "met" } else { "NOT met" },
        );
    }
}

fn time<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(T, Duration)> {
    let started = Instant::now();
    let value = f()?;
    Ok((value, started.elapsed()))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(samples: &[Duration]) -> f64 {
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms(sorted[n / 2]),
        n => (ms(sorted[n / 2 - 1]) + ms(sorted[n / 2])) / 2.0,
    }
}

fn median_duration(samples: impl Iterator<Item = BenchResult<Duration>>) -> BenchResult<Duration> {
    let mut all = samples.collect::<BenchResult<Vec<_>>>()?;
    all.sort();
    all.get(all.len() / 2).copied().ok_or_else(|| String::from("no samples"))
}

fn command_output(command: &mut Command) -> BenchResult<String> {
    let output = command.output().map_err(|e| format!("run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// ---- the bench's own cgroup, netns and directory, removed on drop ----

/// A cgroup2 directory `nodelet-bench-<id>` under the cgroup2 root, never the root itself.
struct BenchCgroup {
    path: PathBuf,
}

impl BenchCgroup {
    fn create(name: &str) -> BenchResult<BenchCgroup> {
        let hybrid = Path::new("/sys/fs/cgroup/unified");
        let root = if hybrid.join("cgroup.procs").exists() { hybrid } else { Path::new("/sys/fs/cgroup") };
        let path = root.join(name);
        fs::create_dir(&path).map_err(|e| format!("create cgroup {}: {e}", path.display()))?;
        Ok(BenchCgroup { path })
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.path.display());
    }
}

/// A network namespace `nodelet-bench-<id>`: iptables and ipvsadm run only in it.
struct BenchNetns {
    name: String,
}

impl BenchNetns {
    fn create(name: &str) -> BenchResult<BenchNetns> {
        command_output(Command::new("ip").args(["netns", "add", name]))?;
        Ok(BenchNetns { name: name.to_owned() })
    }

    /// `ip netns exec <ns> args...` with stdin from `input`, killed after `timeout`: how long
    /// it took, or None when it was killed.
    fn exec_timed(&self, args: &[&str], input: &Path, timeout: Duration) -> BenchResult<Option<Duration>> {
        let file = fs::File::open(input).map_err(|e| format!("open {}: {e}", input.display()))?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args).stdin(Stdio::from(file)).stdout(Stdio::null());
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("run {command:?}: {e}"))?;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("wait for {command:?}: {e}"))? {
                let elapsed = started.elapsed();
                return if status.success() {
                    Ok(Some(elapsed))
                } else {
                    Err(format!("{command:?} failed ({status})"))
                };
            }
            if started.elapsed() >= timeout {
                // Our own child, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("  {} killed after {} s", args.join(" "), timeout.as_secs());
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `ip netns exec <ns> args...`, stdin from `input`; its stdout.
    fn exec(&self, args: &[&str], input: Option<&Path>) -> BenchResult<String> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args);
        match input {
            Some(path) => {
                let file = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
                command.stdin(Stdio::from(file));
            }
            None => {
                command.stdin(Stdio::null());
            }
        }
        command_output(&mut command)
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        if let Err(error) = command_output(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("delete netns {}: {error}", self.name);
        }
    }
}

/// Scratch files of the rulesets.
struct BenchDir {
    path: PathBuf,
}

impl BenchDir {
    fn create(name: &str) -> BenchResult<BenchDir> {
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(BenchDir { path })
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
