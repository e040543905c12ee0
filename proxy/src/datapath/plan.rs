//! The difference between what a datapath programmed and what is desired.

use std::collections::BTreeMap;

use nodelet_ebpf::Frontend;

use crate::table::Delta;

/// Writes needed to go from `programmed` to `desired`, for either table (the socket
/// load-balancer's entries, the ingress datapath's services).
pub(crate) struct Plan<'a, V> {
    pub upserts: Vec<(Frontend, &'a V)>,
    pub removals: Vec<Frontend>,
    pub unchanged: usize,
}

pub(crate) fn plan<'a, V: PartialEq>(
    programmed: &BTreeMap<Frontend, V>,
    desired: &'a BTreeMap<Frontend, V>,
) -> Plan<'a, V> {
    let mut upserts = Vec::new();
    let mut unchanged = 0;
    for (frontend, entry) in desired {
        if programmed.get(frontend) == Some(entry) {
            unchanged += 1;
        } else {
            upserts.push((*frontend, entry));
        }
    }
    let removals = programmed.keys().filter(|frontend| !desired.contains_key(frontend)).copied().collect();
    Plan { upserts, removals, unchanged }
}

/// Writes needed to apply `delta` over `programmed`: its frontends that already hold
/// their entry, and removals of frontends never programmed, are left alone.
pub(crate) fn plan_delta<'a, V: PartialEq>(programmed: &BTreeMap<Frontend, V>, delta: &'a Delta<V>) -> Plan<'a, V> {
    let mut upserts = Vec::new();
    let mut unchanged = 0;
    for (frontend, entry) in &delta.upserts {
        if programmed.get(frontend) == Some(entry) {
            unchanged += 1;
        } else {
            upserts.push((*frontend, entry));
        }
    }
    let removals = delta.removals.iter().filter(|frontend| programmed.contains_key(frontend)).copied().collect();
    Plan { upserts, removals, unchanged }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{ServiceTable, TableDelta};
    use nodelet_ebpf::{Backend, Protocol, ServiceEntry, SessionAffinity};
    use std::net::{IpAddr, Ipv4Addr};

    fn frontend(last: u8) -> Frontend {
        Frontend { ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, last)), port: 80, protocol: Protocol::Tcp }
    }

    fn backend(last: u8) -> Backend {
        Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, last)), port: 8080 }
    }

    fn entry(backends: &[Backend]) -> ServiceEntry {
        ServiceEntry::new(backends.to_vec())
    }

    #[test]
    fn only_differences_are_planned() {
        let sticky = SessionAffinity::ClientIp { timeout_seconds: 60 };
        let programmed = ServiceTable::from([
            (frontend(1), entry(&[backend(1)])),
            (frontend(2), entry(&[backend(2)])),
            (frontend(3), entry(&[])),
            (frontend(5), entry(&[backend(5)])),
        ]);
        let desired = ServiceTable::from([
            (frontend(1), entry(&[backend(1)])),
            (frontend(2), entry(&[backend(2), backend(3)])),
            (frontend(4), entry(&[])),
            (frontend(5), ServiceEntry::with_affinity(vec![backend(5)], sticky)),
        ]);
        let plan = plan(&programmed, &desired);
        assert_eq!(plan.unchanged, 1);
        let upserted: Vec<Frontend> = plan.upserts.iter().map(|(f, _)| *f).collect();
        assert_eq!(upserted, [frontend(2), frontend(4), frontend(5)], "affinity changes count too");
        assert_eq!(plan.removals, [frontend(3)]);
    }

    #[test]
    fn a_delta_writes_only_what_differs_from_the_programmed_table() {
        let programmed = ServiceTable::from([(frontend(1), entry(&[backend(1)])), (frontend(2), entry(&[]))]);
        let delta = TableDelta {
            upserts: vec![(frontend(1), entry(&[backend(1)])), (frontend(3), entry(&[backend(3)]))],
            removals: vec![frontend(2), frontend(4)],
        };
        let plan = plan_delta(&programmed, &delta);
        assert_eq!(plan.unchanged, 1);
        let upserted: Vec<Frontend> = plan.upserts.iter().map(|(f, _)| *f).collect();
        assert_eq!(upserted, [frontend(3)]);
        assert_eq!(plan.removals, [frontend(2)], "a frontend never programmed needs no removal");
    }
}
