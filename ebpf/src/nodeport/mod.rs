//! Load-balancing of traffic entering the node from other hosts: NodePort (on the node's
//! addresses), externalIPs and LoadBalancer IPs, IPv4, TCP and UDP, by the tc programs of
//! `bpf/nodeport_lb.bpf.c`. A packet to a frontend gets a backend from the frontend's
//! Maglev table (`maglev`), kept for the whole flow by conntrack, and is DNATed to it; the
//! backend's replies get the frontend back as their source on the pod-facing side.
//! `loadBalancerSourceRanges` drop packets from other sources.
//!
//! Endpoints on this node see the client's address (`externalTrafficPolicy: Local`, and
//! `Cluster`'s local endpoints); endpoints on other nodes (`Cluster`) are reached with
//! the node's address as source (SNAT) and the packets go straight back out, as cilium's
//! nodeport hairpin does. The links are owned by the process, not pinned.

mod attachment;
mod error;
mod layout;
mod maglev;
mod maps;
mod types;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, MapData};
use aya::{Ebpf, EbpfLoader};

pub use attachment::TcAttachment;
pub use error::NodePortError;
pub use layout::{MAGLEV_TABLE_SIZE, SNAT_PORTS};
pub use types::{ConntrackEntry, NodePortService, SourceRange};

use layout::{Np4CtKey, Np4CtValue, Np4Key, Np4Range, Np4Service};

/// `nodeport_lb.bpf.o`, aligned as the ELF parser needs; empty when built with
/// `NODELET_SKIP_BPF_BUILD=1`.
static NODEPORT_LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodeport_lb.bpf.o"));

const SERVICES_MAP: &str = "np4_services";
const SOURCE_RANGES_MAP: &str = "np4_source_ranges";
const CONNTRACK_MAP: &str = "np4_conntrack";
/// On the external interfaces: frontends to backends.
const INGRESS_PROGRAM: &str = "np4_ingress";
/// On the pod-facing interfaces: backends' replies back to frontends.
const REPLY_PROGRAM: &str = "np4_reply";

/// Capacity of the maps, fixed when they are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortMapSizes {
    /// Frontends: one per NodePort and node address, externalIP and LoadBalancer IP, each
    /// port and protocol. Not preallocated: each costs about 41 KiB (its backends and its
    /// Maglev table of [`MAGLEV_TABLE_SIZE`] slots) only once it exists.
    pub services: u32,
    /// `loadBalancerSourceRanges` entries over all frontends (not preallocated).
    pub source_ranges: u32,
    /// Conntrack entries (LRU, preallocated), two per flow: when full, the idlest flows
    /// make room (such a flow picks its backend afresh from the Maglev table).
    pub conntrack: u32,
}

impl Default for NodePortMapSizes {
    /// 4,096 frontends; 16,384 source ranges; 262,144 conntrack entries (131,072 flows,
    /// cilium's default CT size for TCP; 16-byte keys and 8-byte values: about 22 MiB).
    fn default() -> Self {
        NodePortMapSizes { services: 4096, source_ranges: 16_384, conntrack: 262_144 }
    }
}

/// The loaded programs (`np4_ingress`, `np4_reply`) and their maps.
pub struct NodePortLb {
    ebpf: Ebpf,
    services: HashMap<MapData, Np4Key, Np4Service>,
    source_ranges: LpmTrie<MapData, Np4Range, u8>,
    conntrack: HashMap<MapData, Np4CtKey, Np4CtValue>,
}

impl NodePortLb {
    /// Load the programs and create their maps (sizes from [`NodePortMapSizes::default`]).
    pub fn load() -> Result<NodePortLb, NodePortError> {
        NodePortLb::load_with(NodePortMapSizes::default())
    }

    /// Load the programs and create their maps with the given capacity; all or none.
    pub fn load_with(sizes: NodePortMapSizes) -> Result<NodePortLb, NodePortError> {
        if NODEPORT_LB.is_empty() {
            return Err(NodePortError::ObjectNotBuilt);
        }
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(SERVICES_MAP, sizes.services)
            .set_max_entries(SOURCE_RANGES_MAP, sizes.source_ranges)
            .set_max_entries(CONNTRACK_MAP, sizes.conntrack)
            .load(NODEPORT_LB)
            .map_err(|source| NodePortError::Load(Box::new(source)))?;
        for name in [INGRESS_PROGRAM, REPLY_PROGRAM] {
            attachment::classifier_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| NodePortError::Program { name, source: Box::new(source) })?;
        }
        let services = HashMap::try_from(take_map(&mut ebpf, SERVICES_MAP)?).map_err(open_error(SERVICES_MAP))?;
        let source_ranges =
            LpmTrie::try_from(take_map(&mut ebpf, SOURCE_RANGES_MAP)?).map_err(open_error(SOURCE_RANGES_MAP))?;
        let conntrack = HashMap::try_from(take_map(&mut ebpf, CONNTRACK_MAP)?).map_err(open_error(CONNTRACK_MAP))?;
        Ok(NodePortLb { ebpf, services, source_ranges, conntrack })
    }

    /// Attach `np4_reply` to the ingress of every pod-facing interface (the pod bridge:
    /// its ingress sees what pods send to the node) and then `np4_ingress` to the ingress
    /// of every external interface (where clients' packets arrive), all or none. The
    /// interfaces are those of the calling thread's network namespace. The guard detaches
    /// on drop.
    pub fn attach(&mut self, external: &[&str], pod_facing: &[&str]) -> Result<TcAttachment, NodePortError> {
        if external.is_empty() {
            return Err(NodePortError::NoInterfaces { side: "external" });
        }
        if pod_facing.is_empty() {
            return Err(NodePortError::NoInterfaces { side: "pod-facing" });
        }
        let mut attachment = TcAttachment::new();
        for interface in pod_facing {
            attachment.attach(&mut self.ebpf, REPLY_PROGRAM, interface)?;
        }
        for interface in external {
            attachment.attach(&mut self.ebpf, INGRESS_PROGRAM, interface)?;
        }
        Ok(attachment)
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, NodePortError> {
    ebpf.take_map(name).ok_or(NodePortError::MapMissing { name })
}

fn open_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> NodePortError {
    move |source| NodePortError::Map {
        name,
        operation: "open",
        what: String::from("all entries"),
        source: Box::new(source),
    }
}
