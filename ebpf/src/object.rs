//! The compiled BPF object, embedded at build time, and the names inside it.

use std::mem::size_of;

use crate::layout::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Key, Lb4ReverseKey, Lb4ReverseValue, Lb4Value, Lb6AffinityKey,
    Lb6AffinityValue, Lb6Key, Lb6ReverseKey, Lb6ReverseValue, Lb6Value,
};
use crate::sys;

/// `sock_lb.bpf.o`, aligned as the ELF parser needs; empty when built with
/// `NODELET_SKIP_BPF_BUILD=1`.
pub(crate) static SOCK_LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.bpf.o"));

/// `sock_lb_pinned.bpf.o`: the same programs, their maps declared `LIBBPF_PIN_BY_NAME`.
pub(crate) static SOCK_LB_PINNED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb_pinned.bpf.o"));

/// Maps inside the object (see `bpf/sock_lb.bpf.c`); pinned under these names.
pub(crate) const SERVICES_MAP: &str = "lb4_services";
pub(crate) const REVERSE_MAP: &str = "lb4_reverse_sk";
pub(crate) const AFFINITY_MAP: &str = "lb4_affinity";
pub(crate) const SERVICES6_MAP: &str = "lb6_services";
pub(crate) const REVERSE6_MAP: &str = "lb6_reverse_sk";
pub(crate) const AFFINITY6_MAP: &str = "lb6_affinity";

// enum bpf_map_type (include/uapi/linux/bpf.h), of the maps the object declares.
pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(crate) const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// What a map of the object is, as the kernel reports it for a pinned map: a pinned map
/// is reused only when it matches (aya would otherwise hand the programs a map of another
/// layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapSpec {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
}

const fn spec<K, V>(name: &'static str, map_type: u32) -> MapSpec {
    // The layouts are a few bytes: the casts cannot truncate.
    MapSpec { name, map_type, key_size: size_of::<K>() as u32, value_size: size_of::<V>() as u32 }
}

/// The services maps, with the layout the Rust mirrors (checked against the object's BTF in
/// `layout`) give them; and the others.
pub(crate) const SERVICES_MAP_SPEC: MapSpec = spec::<Lb4Key, Lb4Value>(SERVICES_MAP, BPF_MAP_TYPE_HASH);
pub(crate) const SERVICES6_MAP_SPEC: MapSpec = spec::<Lb6Key, Lb6Value>(SERVICES6_MAP, BPF_MAP_TYPE_HASH);
pub(crate) const MAPS: [MapSpec; 6] = [
    SERVICES_MAP_SPEC,
    spec::<Lb4ReverseKey, Lb4ReverseValue>(REVERSE_MAP, BPF_MAP_TYPE_LRU_HASH),
    spec::<Lb4AffinityKey, Lb4AffinityValue>(AFFINITY_MAP, BPF_MAP_TYPE_LRU_HASH),
    SERVICES6_MAP_SPEC,
    spec::<Lb6ReverseKey, Lb6ReverseValue>(REVERSE6_MAP, BPF_MAP_TYPE_LRU_HASH),
    spec::<Lb6AffinityKey, Lb6AffinityValue>(AFFINITY6_MAP, BPF_MAP_TYPE_LRU_HASH),
];

/// One cgroup program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProgramSpec {
    /// Its function name in `bpf/sock_lb.bpf.c`.
    pub name: &'static str,
    /// The hook, for messages (`cgroup/connect4`).
    pub hook: &'static str,
    /// `enum bpf_attach_type` of the hook (also what its section name tells aya).
    pub attach_type: u32,
    /// Name of its pinned bpf_link inside a pin directory.
    pub link_pin: &'static str,
}

/// Every program, in attach order: the reverse hooks of both families first, so that from
/// the first rewritten connect() or datagram on, the replies and getpeername() are
/// translated back too (an IPv6 socket dialling an IPv4-mapped address is translated by
/// connect6 and getpeername6 or recvmsg6 with the IPv4 maps). Detached in the opposite
/// order.
pub(crate) const PROGRAMS: [ProgramSpec; 8] = [
    ProgramSpec {
        name: "sock4_recvmsg",
        hook: "cgroup/recvmsg4",
        attach_type: sys::CGROUP_UDP4_RECVMSG,
        link_pin: "sock4_recvmsg_link",
    },
    ProgramSpec {
        name: "sock4_peername",
        hook: "cgroup/getpeername4",
        attach_type: sys::CGROUP_INET4_GETPEERNAME,
        link_pin: "sock4_peername_link",
    },
    ProgramSpec {
        name: "sock6_recvmsg",
        hook: "cgroup/recvmsg6",
        attach_type: sys::CGROUP_UDP6_RECVMSG,
        link_pin: "sock6_recvmsg_link",
    },
    ProgramSpec {
        name: "sock6_peername",
        hook: "cgroup/getpeername6",
        attach_type: sys::CGROUP_INET6_GETPEERNAME,
        link_pin: "sock6_peername_link",
    },
    ProgramSpec {
        name: "sock4_connect",
        hook: "cgroup/connect4",
        attach_type: sys::CGROUP_INET4_CONNECT,
        link_pin: "sock4_connect_link",
    },
    ProgramSpec {
        name: "sock4_sendmsg",
        hook: "cgroup/sendmsg4",
        attach_type: sys::CGROUP_UDP4_SENDMSG,
        link_pin: "sock4_sendmsg_link",
    },
    ProgramSpec {
        name: "sock6_connect",
        hook: "cgroup/connect6",
        attach_type: sys::CGROUP_INET6_CONNECT,
        link_pin: "sock6_connect_link",
    },
    ProgramSpec {
        name: "sock6_sendmsg",
        hook: "cgroup/sendmsg6",
        attach_type: sys::CGROUP_UDP6_SENDMSG,
        link_pin: "sock6_sendmsg_link",
    },
];
