//! Mirrors of the IPv4 structs of `bpf/lb.h` (the lb4 maps).

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{affinity_of, c, ipv4, kind_of, master_fields, protocol_of, ServiceKey, ServiceValue, MASTER_SLOT};
use crate::error::EbpfError;
use crate::object::{AFFINITY_MAP, SERVICES_MAP};
use crate::types::{AffinityEntry, Backend, Frontend, FrontendKind, ReverseNat, SessionAffinity};

/// `struct lb4_key`. Address and port in network byte order, slot and rev in
/// host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Lb4Key {
    pub address: u32,
    pub dport: u16,
    pub proto: u8,
    pub pad: u8,
    pub slot: u16,
    pub rev: u16,
}

/// `struct lb4_value`: a master uses count, rev, flags and affinity_timeout, a slot
/// address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lb4Value {
    pub address: u32,
    pub port: u16,
    pub count: u16,
    pub rev: u16,
    pub flags: u16,
    pub affinity_timeout: u32,
}

/// `struct lb4_reverse_key`: a socket cookie and a backend it was sent to (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb4ReverseKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct lb4_reverse_value`: the frontend that socket dialled (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb4ReverseValue {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct lb4_affinity_key`: a client's network namespace and a frontend (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb4AffinityKey {
    pub client: u64,
    pub address: u32,
    pub dport: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct lb4_affinity_value`: the backend that client was given, when, and where it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lb4AffinityValue {
    pub last_used: u64,
    pub address: u32,
    pub port: u16,
    pub rev: u16,
    pub slot: u16,
    pub pad: [u16; 3],
}

const _: () = {
    assert!(size_of::<Lb4Key>() == c::lb4_key::SIZE);
    assert!(offset_of!(Lb4Key, address) == c::lb4_key::ADDRESS);
    assert!(offset_of!(Lb4Key, dport) == c::lb4_key::DPORT);
    assert!(offset_of!(Lb4Key, proto) == c::lb4_key::PROTO);
    assert!(offset_of!(Lb4Key, pad) == c::lb4_key::PAD);
    assert!(offset_of!(Lb4Key, slot) == c::lb4_key::SLOT);
    assert!(offset_of!(Lb4Key, rev) == c::lb4_key::REV);
    // No implicit padding: the kernel compares keys as bytes.
    assert!(size_of::<Lb4Key>() == 4 + 2 + 1 + 1 + 2 + 2);

    assert!(size_of::<Lb4Value>() == c::lb4_value::SIZE);
    assert!(offset_of!(Lb4Value, address) == c::lb4_value::ADDRESS);
    assert!(offset_of!(Lb4Value, port) == c::lb4_value::PORT);
    assert!(offset_of!(Lb4Value, count) == c::lb4_value::COUNT);
    assert!(offset_of!(Lb4Value, rev) == c::lb4_value::REV);
    assert!(offset_of!(Lb4Value, flags) == c::lb4_value::FLAGS);
    assert!(offset_of!(Lb4Value, affinity_timeout) == c::lb4_value::AFFINITY_TIMEOUT);
    assert!(size_of::<Lb4Value>() == 4 + 2 + 2 + 2 + 2 + 4);

    assert!(size_of::<Lb4ReverseKey>() == c::lb4_reverse_key::SIZE);
    assert!(offset_of!(Lb4ReverseKey, cookie) == c::lb4_reverse_key::COOKIE);
    assert!(offset_of!(Lb4ReverseKey, address) == c::lb4_reverse_key::ADDRESS);
    assert!(offset_of!(Lb4ReverseKey, port) == c::lb4_reverse_key::PORT);
    assert!(offset_of!(Lb4ReverseKey, pad) == c::lb4_reverse_key::PAD);
    assert!(size_of::<Lb4ReverseKey>() == 8 + 4 + 2 + 2);

    assert!(size_of::<Lb4ReverseValue>() == c::lb4_reverse_value::SIZE);
    assert!(offset_of!(Lb4ReverseValue, address) == c::lb4_reverse_value::ADDRESS);
    assert!(offset_of!(Lb4ReverseValue, port) == c::lb4_reverse_value::PORT);
    assert!(offset_of!(Lb4ReverseValue, pad) == c::lb4_reverse_value::PAD);
    assert!(size_of::<Lb4ReverseValue>() == 4 + 2 + 2);

    assert!(size_of::<Lb4AffinityKey>() == c::lb4_affinity_key::SIZE);
    assert!(offset_of!(Lb4AffinityKey, client) == c::lb4_affinity_key::CLIENT);
    assert!(offset_of!(Lb4AffinityKey, address) == c::lb4_affinity_key::ADDRESS);
    assert!(offset_of!(Lb4AffinityKey, dport) == c::lb4_affinity_key::DPORT);
    assert!(offset_of!(Lb4AffinityKey, proto) == c::lb4_affinity_key::PROTO);
    assert!(offset_of!(Lb4AffinityKey, pad) == c::lb4_affinity_key::PAD);
    assert!(size_of::<Lb4AffinityKey>() == 8 + 4 + 2 + 1 + 1);

    assert!(size_of::<Lb4AffinityValue>() == c::lb4_affinity_value::SIZE);
    assert!(offset_of!(Lb4AffinityValue, last_used) == c::lb4_affinity_value::LAST_USED);
    assert!(offset_of!(Lb4AffinityValue, address) == c::lb4_affinity_value::ADDRESS);
    assert!(offset_of!(Lb4AffinityValue, port) == c::lb4_affinity_value::PORT);
    assert!(offset_of!(Lb4AffinityValue, rev) == c::lb4_affinity_value::REV);
    assert!(offset_of!(Lb4AffinityValue, slot) == c::lb4_affinity_value::SLOT);
    assert!(offset_of!(Lb4AffinityValue, pad) == c::lb4_affinity_value::PAD);
    assert!(size_of::<Lb4AffinityValue>() == 8 + 4 + 2 + 2 + 2 + 3 * 2);
};

// SAFETY: repr(C) struct of plain integers with no padding (asserted above),
// so every bit pattern is a valid value and its bytes are fully initialized.
unsafe impl aya::Pod for Lb4Key {}
// SAFETY: as for Lb4Key: repr(C), integers only, no padding (asserted above).
unsafe impl aya::Pod for Lb4Value {}
// SAFETY: as for Lb4Key: repr(C), integers only, no padding (asserted above).
unsafe impl aya::Pod for Lb4ReverseKey {}
// SAFETY: as for Lb4Key: repr(C), integers only, no padding (asserted above).
unsafe impl aya::Pod for Lb4ReverseValue {}
// SAFETY: as for Lb4Key: repr(C), integers only, no padding (asserted above).
unsafe impl aya::Pod for Lb4AffinityKey {}
// SAFETY: as for Lb4Key: repr(C), integers and an integer array only, no padding (asserted above).
unsafe impl aya::Pod for Lb4AffinityValue {}

/// Network-order `u32` of an address, as `bpf_sock_addr.user_ip4` holds it.
pub(crate) fn ip4_to_wire(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub(crate) fn ip4_from_wire(wire: u32) -> Ipv4Addr {
    Ipv4Addr::from(wire.to_ne_bytes())
}

fn socket_addr(address: u32, port: u16) -> SocketAddr {
    SocketAddr::from((ip4_from_wire(address), u16::from_be(port)))
}

impl Lb4Key {
    /// Key of a frontend's slot `slot` of revision `rev` (master: 0, 0).
    pub(crate) fn new(ip: Ipv4Addr, frontend: &Frontend, slot: u16, rev: u16) -> Lb4Key {
        Lb4Key {
            address: ip4_to_wire(ip),
            dport: frontend.port.to_be(),
            proto: frontend.protocol.ip_proto(),
            pad: 0,
            slot,
            rev,
        }
    }
}

impl ServiceKey for Lb4Key {
    type Value = Lb4Value;
    const MAP: &'static str = SERVICES_MAP;

    fn master(frontend: &Frontend) -> Option<Lb4Key> {
        Some(Lb4Key::new(ipv4(frontend.ip)?, frontend, MASTER_SLOT, 0))
    }

    fn with_slot(self, slot: u16, rev: u16) -> Lb4Key {
        Lb4Key { slot, rev, ..self }
    }

    fn is_master(&self) -> bool {
        self.slot == MASTER_SLOT
    }

    fn frontend(&self) -> Result<Frontend, EbpfError> {
        let protocol = protocol_of(SERVICES_MAP, self.proto)?;
        Ok(Frontend { ip: IpAddr::V4(ip4_from_wire(self.address)), port: u16::from_be(self.dport), protocol })
    }
}

impl ServiceValue for Lb4Value {
    fn master(count: u16, rev: u16, affinity: SessionAffinity, kind: FrontendKind) -> Lb4Value {
        let (flags, affinity_timeout) = master_fields(affinity, kind);
        Lb4Value { count, rev, flags, affinity_timeout, ..Lb4Value::default() }
    }

    fn slot(backend: &Backend) -> Option<Lb4Value> {
        let address = ip4_to_wire(ipv4(backend.ip)?);
        Some(Lb4Value { address, port: backend.port.to_be(), ..Lb4Value::default() })
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
        Backend { ip: IpAddr::V4(ip4_from_wire(self.address)), port: u16::from_be(self.port) }
    }
}

impl Lb4ReverseKey {
    pub(crate) fn entry(&self, frontend: &Lb4ReverseValue) -> ReverseNat {
        ReverseNat {
            socket_cookie: self.cookie,
            backend: socket_addr(self.address, self.port),
            frontend: socket_addr(frontend.address, frontend.port),
        }
    }
}

impl Lb4AffinityKey {
    pub(crate) fn entry(&self, backend: &Lb4AffinityValue) -> Result<AffinityEntry, EbpfError> {
        let protocol = protocol_of(AFFINITY_MAP, self.proto)?;
        Ok(AffinityEntry {
            client_netns: self.client,
            frontend: Frontend {
                ip: IpAddr::V4(ip4_from_wire(self.address)),
                port: u16::from_be(self.dport),
                protocol,
            },
            backend: socket_addr(backend.address, backend.port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FLAG_AFFINITY;
    use crate::types::Protocol;

    #[test]
    fn wire_order_matches_network_order() {
        let ip = Ipv4Addr::new(10, 96, 0, 10);
        let wire = ip4_to_wire(ip);
        // The in-memory bytes are the octets in order, as in sockaddr_in.
        assert_eq!(wire.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(ip4_from_wire(wire), ip);
        assert_eq!(80u16.to_be().to_ne_bytes(), [0, 80]);
    }

    #[test]
    fn masters_carry_their_affinity() {
        let sticky = SessionAffinity::ClientIp { timeout_seconds: 10_800 };
        let master = Lb4Value::master(3, 7, sticky, FrontendKind::ClusterIp);
        assert_eq!((master.count, master.rev, master.flags, master.affinity_timeout), (3, 7, FLAG_AFFINITY, 10_800));
        assert_eq!(master.affinity(), sticky);
        let node_port = Lb4Value::master(3, 7, SessionAffinity::None, FrontendKind::NodePort);
        assert_eq!((node_port.affinity(), node_port.kind()), (SessionAffinity::None, FrontendKind::NodePort));
        let sticky_lb = Lb4Value::master(1, 1, sticky, FrontendKind::LoadBalancer);
        assert_eq!((sticky_lb.affinity(), sticky_lb.kind()), (sticky, FrontendKind::LoadBalancer));
        // A master written before the affinity fields existed reads as no affinity.
        assert_eq!(Lb4Value { count: 1, rev: 1, ..Lb4Value::default() }.affinity(), SessionAffinity::None);
    }

    #[test]
    fn keys_and_slots_refuse_ipv6_and_read_back() {
        let v6 = Frontend { ip: "fd00::1".parse().expect("ip"), port: 80, protocol: Protocol::Tcp };
        assert_eq!(Lb4Key::master(&v6), None);
        assert_eq!(Lb4Value::slot(&Backend { ip: v6.ip, port: 80 }), None);

        let web = Frontend { ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)), port: 443, protocol: Protocol::Udp };
        let key = Lb4Key::master(&web).expect("ipv4");
        assert!(key.is_master() && !key.with_slot(2, 5).is_master());
        assert_eq!(key.with_slot(2, 5).frontend().expect("frontend"), web);
        let backend = Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), port: 8443 };
        assert_eq!(Lb4Value::slot(&backend).expect("ipv4").backend(), backend);
    }
}
