//! Mirrors of the IPv6 structs of `bpf/lb.h` (the lb6 maps): the IPv4 layouts with a
//! 16-byte address (`struct lb6_addr`, mirrored as `[u32; 4]` in network order, as
//! `bpf_sock_addr.user_ip6` holds it).

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{affinity_of, c, ipv6, kind_of, master_fields, protocol_of, ServiceKey, ServiceValue, MASTER_SLOT};
use crate::error::EbpfError;
use crate::object::{AFFINITY6_MAP, SERVICES6_MAP};
use crate::types::{AffinityEntry, Backend, Frontend, FrontendKind, ReverseNat, SessionAffinity};

/// `struct lb6_key`. Address and port in network byte order, slot and rev in
/// host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Lb6Key {
    pub address: [u32; 4],
    pub dport: u16,
    pub proto: u8,
    pub pad: u8,
    pub slot: u16,
    pub rev: u16,
}

/// `struct lb6_value`: a master uses count, rev, flags and affinity_timeout, a slot
/// address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lb6Value {
    pub address: [u32; 4],
    pub port: u16,
    pub count: u16,
    pub rev: u16,
    pub flags: u16,
    pub affinity_timeout: u32,
}

/// `struct lb6_reverse_key`: a socket cookie and a backend it was sent to (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb6ReverseKey {
    pub cookie: u64,
    pub address: [u32; 4],
    pub port: u16,
    pub pad: [u16; 3],
}

/// `struct lb6_reverse_value`: the frontend that socket dialled (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb6ReverseValue {
    pub address: [u32; 4],
    pub port: u16,
    pub pad: u16,
}

/// `struct lb6_affinity_key`: a client's network namespace and a frontend (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb6AffinityKey {
    pub client: u64,
    pub address: [u32; 4],
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 5],
}

/// `struct lb6_affinity_value`: the backend that client was given, when, and where it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb6AffinityValue {
    pub last_used: u64,
    pub address: [u32; 4],
    pub port: u16,
    pub rev: u16,
    pub slot: u16,
    pub pad: u16,
}

const _: () = {
    assert!(size_of::<Lb6Key>() == c::lb6_key::SIZE);
    assert!(offset_of!(Lb6Key, address) == c::lb6_key::ADDRESS);
    assert!(offset_of!(Lb6Key, dport) == c::lb6_key::DPORT);
    assert!(offset_of!(Lb6Key, proto) == c::lb6_key::PROTO);
    assert!(offset_of!(Lb6Key, pad) == c::lb6_key::PAD);
    assert!(offset_of!(Lb6Key, slot) == c::lb6_key::SLOT);
    assert!(offset_of!(Lb6Key, rev) == c::lb6_key::REV);
    // No implicit padding: the kernel compares keys as bytes.
    assert!(size_of::<Lb6Key>() == 16 + 2 + 1 + 1 + 2 + 2);

    assert!(size_of::<Lb6Value>() == c::lb6_value::SIZE);
    assert!(offset_of!(Lb6Value, address) == c::lb6_value::ADDRESS);
    assert!(offset_of!(Lb6Value, port) == c::lb6_value::PORT);
    assert!(offset_of!(Lb6Value, count) == c::lb6_value::COUNT);
    assert!(offset_of!(Lb6Value, rev) == c::lb6_value::REV);
    assert!(offset_of!(Lb6Value, flags) == c::lb6_value::FLAGS);
    assert!(offset_of!(Lb6Value, affinity_timeout) == c::lb6_value::AFFINITY_TIMEOUT);
    assert!(size_of::<Lb6Value>() == 16 + 2 + 2 + 2 + 2 + 4);

    assert!(size_of::<Lb6ReverseKey>() == c::lb6_reverse_key::SIZE);
    assert!(offset_of!(Lb6ReverseKey, cookie) == c::lb6_reverse_key::COOKIE);
    assert!(offset_of!(Lb6ReverseKey, address) == c::lb6_reverse_key::ADDRESS);
    assert!(offset_of!(Lb6ReverseKey, port) == c::lb6_reverse_key::PORT);
    assert!(offset_of!(Lb6ReverseKey, pad) == c::lb6_reverse_key::PAD);
    assert!(size_of::<Lb6ReverseKey>() == 8 + 16 + 2 + 3 * 2);

    assert!(size_of::<Lb6ReverseValue>() == c::lb6_reverse_value::SIZE);
    assert!(offset_of!(Lb6ReverseValue, address) == c::lb6_reverse_value::ADDRESS);
    assert!(offset_of!(Lb6ReverseValue, port) == c::lb6_reverse_value::PORT);
    assert!(offset_of!(Lb6ReverseValue, pad) == c::lb6_reverse_value::PAD);
    assert!(size_of::<Lb6ReverseValue>() == 16 + 2 + 2);

    assert!(size_of::<Lb6AffinityKey>() == c::lb6_affinity_key::SIZE);
    assert!(offset_of!(Lb6AffinityKey, client) == c::lb6_affinity_key::CLIENT);
    assert!(offset_of!(Lb6AffinityKey, address) == c::lb6_affinity_key::ADDRESS);
    assert!(offset_of!(Lb6AffinityKey, dport) == c::lb6_affinity_key::DPORT);
    assert!(offset_of!(Lb6AffinityKey, proto) == c::lb6_affinity_key::PROTO);
    assert!(offset_of!(Lb6AffinityKey, pad) == c::lb6_affinity_key::PAD);
    assert!(size_of::<Lb6AffinityKey>() == 8 + 16 + 2 + 1 + 5);

    assert!(size_of::<Lb6AffinityValue>() == c::lb6_affinity_value::SIZE);
    assert!(offset_of!(Lb6AffinityValue, last_used) == c::lb6_affinity_value::LAST_USED);
    assert!(offset_of!(Lb6AffinityValue, address) == c::lb6_affinity_value::ADDRESS);
    assert!(offset_of!(Lb6AffinityValue, port) == c::lb6_affinity_value::PORT);
    assert!(offset_of!(Lb6AffinityValue, rev) == c::lb6_affinity_value::REV);
    assert!(offset_of!(Lb6AffinityValue, slot) == c::lb6_affinity_value::SLOT);
    assert!(offset_of!(Lb6AffinityValue, pad) == c::lb6_affinity_value::PAD);
    assert!(size_of::<Lb6AffinityValue>() == 8 + 16 + 2 + 2 + 2 + 2);
};

// SAFETY: repr(C) struct of plain integers and integer arrays with no padding (asserted
// above), so every bit pattern is a valid value and its bytes are fully initialized.
unsafe impl aya::Pod for Lb6Key {}
// SAFETY: as for Lb6Key: repr(C), integers and an integer array only, no padding (asserted above).
unsafe impl aya::Pod for Lb6Value {}
// SAFETY: as for Lb6Key: repr(C), integers and integer arrays only, no padding (asserted above).
unsafe impl aya::Pod for Lb6ReverseKey {}
// SAFETY: as for Lb6Key: repr(C), integers and an integer array only, no padding (asserted above).
unsafe impl aya::Pod for Lb6ReverseValue {}
// SAFETY: as for Lb6Key: repr(C), integers and integer arrays only, no padding (asserted above).
unsafe impl aya::Pod for Lb6AffinityKey {}
// SAFETY: as for Lb6Key: repr(C), integers and an integer array only, no padding (asserted above).
unsafe impl aya::Pod for Lb6AffinityValue {}

/// The four network-order words of an address, as `bpf_sock_addr.user_ip6` holds them.
pub(crate) fn ip6_to_wire(ip: Ipv6Addr) -> [u32; 4] {
    let octets = ip.octets();
    std::array::from_fn(|word| {
        let at = word * 4;
        u32::from_ne_bytes([octets[at], octets[at + 1], octets[at + 2], octets[at + 3]])
    })
}

pub(crate) fn ip6_from_wire(wire: [u32; 4]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    for (chunk, word) in octets.chunks_exact_mut(4).zip(wire) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(octets)
}

fn socket_addr(address: [u32; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip6_from_wire(address), u16::from_be(port)))
}

impl ServiceKey for Lb6Key {
    type Value = Lb6Value;
    const MAP: &'static str = SERVICES6_MAP;

    fn master(frontend: &Frontend) -> Option<Lb6Key> {
        Some(Lb6Key {
            address: ip6_to_wire(ipv6(frontend.ip)?),
            dport: frontend.port.to_be(),
            proto: frontend.protocol.ip_proto(),
            pad: 0,
            slot: MASTER_SLOT,
            rev: 0,
        })
    }

    fn with_slot(self, slot: u16, rev: u16) -> Lb6Key {
        Lb6Key { slot, rev, ..self }
    }

    fn is_master(&self) -> bool {
        self.slot == MASTER_SLOT
    }

    fn frontend(&self) -> Result<Frontend, EbpfError> {
        let protocol = protocol_of(SERVICES6_MAP, self.proto)?;
        Ok(Frontend { ip: IpAddr::V6(ip6_from_wire(self.address)), port: u16::from_be(self.dport), protocol })
    }
}

impl ServiceValue for Lb6Value {
    fn master(count: u16, rev: u16, affinity: SessionAffinity, kind: FrontendKind) -> Lb6Value {
        let (flags, affinity_timeout) = master_fields(affinity, kind);
        Lb6Value { count, rev, flags, affinity_timeout, ..Lb6Value::default() }
    }

    fn slot(backend: &Backend) -> Option<Lb6Value> {
        let address = ip6_to_wire(ipv6(backend.ip)?);
        Some(Lb6Value { address, port: backend.port.to_be(), ..Lb6Value::default() })
    }

    fn count(&self) -> u16 {
        self.count
    }

    fn rev(&self) -> u16 {
        self.rev
    }

    fn affinity(&self) -> SessionAffinity {
        affinity_of(self.flags, self.affinity_timeout)
    }

    fn kind(&self) -> FrontendKind {
        kind_of(self.flags)
    }

    fn backend(&self) -> Backend {
        Backend { ip: IpAddr::V6(ip6_from_wire(self.address)), port: u16::from_be(self.port) }
    }
}

impl Lb6ReverseKey {
    pub(crate) fn entry(&self, frontend: &Lb6ReverseValue) -> ReverseNat {
        ReverseNat {
            socket_cookie: self.cookie,
            backend: socket_addr(self.address, self.port),
            frontend: socket_addr(frontend.address, frontend.port),
        }
    }
}

impl Lb6AffinityKey {
    pub(crate) fn entry(&self, backend: &Lb6AffinityValue) -> Result<AffinityEntry, EbpfError> {
        let protocol = protocol_of(AFFINITY6_MAP, self.proto)?;
        Ok(AffinityEntry {
            client_netns: self.client,
            frontend: Frontend {
                ip: IpAddr::V6(ip6_from_wire(self.address)),
                port: u16::from_be(self.dport),
                protocol,
            },
            backend: socket_addr(backend.address, backend.port),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::layout::FLAG_AFFINITY;
    use crate::types::Protocol;

    #[test]
    fn wire_order_matches_network_order() {
        let ip: Ipv6Addr = "fd00:10:96::a".parse().expect("ip");
        let wire = ip6_to_wire(ip);
        // The in-memory bytes are the octets in order, as in sockaddr_in6.
        let bytes: Vec<u8> = wire.iter().flat_map(|word| word.to_ne_bytes()).collect();
        assert_eq!(bytes, ip.octets());
        assert_eq!(ip6_from_wire(wire), ip);
    }

    #[test]
    fn masters_carry_their_affinity() {
        let sticky = SessionAffinity::ClientIp { timeout_seconds: 60 };
        let master = Lb6Value::master(2, 9, sticky, FrontendKind::ClusterIp);
        assert_eq!((master.count, master.rev, master.flags, master.affinity_timeout), (2, 9, FLAG_AFFINITY, 60));
        assert_eq!(master.affinity(), sticky);
        let external = Lb6Value::master(2, 9, SessionAffinity::None, FrontendKind::ExternalIp);
        assert_eq!((external.affinity(), external.kind()), (SessionAffinity::None, FrontendKind::ExternalIp));
    }

    #[test]
    fn keys_and_slots_refuse_ipv4_and_read_back() {
        let v4 = Frontend { ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), port: 80, protocol: Protocol::Tcp };
        assert_eq!(Lb6Key::master(&v4), None);
        assert_eq!(Lb6Value::slot(&Backend { ip: v4.ip, port: 80 }), None);

        let web = Frontend { ip: "fd00:96::1".parse().expect("ip"), port: 443, protocol: Protocol::Sctp };
        let key = Lb6Key::master(&web).expect("ipv6");
        assert!(key.is_master() && !key.with_slot(1, 3).is_master());
        assert_eq!(key.with_slot(1, 3).frontend().expect("frontend"), web);
        let backend = Backend { ip: "fd00:10::7".parse().expect("ip"), port: 8443 };
        assert_eq!(Lb6Value::slot(&backend).expect("ipv6").backend(), backend);
    }
}
