//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4), as cilium populates its tables: each backend
//! has a permutation of the table's slots, derived from two hashes of its address, and the
//! backends take turns claiming their next free preferred slot until the table is full.
//! Every backend ends up with the same number of slots give or take one, and removing one
//! backend moves little more than that backend's own slots. Pure: no map is touched here.

use std::net::IpAddr;

use crate::types::Backend;

/// Seeds of the two hashes of a backend: the offset and the skip of its permutation.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_5f6f; // "maglev_o"
const SKIP_SEED: u64 = 0x6d61_676c_6576_5f73; // "maglev_s"

/// The lookup table of `size` slots for `backends`: each slot is the index of a backend in
/// `backends`. `size` must be a prime larger than the number of backends, and the order
/// of `backends` matters (it is the order of the turns): callers pass them sorted, so a
/// table depends on the set of backends only. No backends: every slot is 0 (the program
/// checks the count before it uses a slot).
pub(crate) fn populate(backends: &[Backend], size: usize) -> Vec<u16> {
    debug_assert!(backends.len() < size && backends.len() <= usize::from(u16::MAX), "table too small");
    let mut table: Vec<Option<u16>> = vec![None; size];
    if backends.is_empty() {
        return vec![0; size];
    }
    let mut permutations: Vec<Permutation> = backends.iter().map(|b| Permutation::of(b, size)).collect();
    let mut filled = 0;
    'rounds: loop {
        for (index, permutation) in (0u16..).zip(permutations.iter_mut()) {
            let slot = permutation.next_free(&table);
            table[slot] = Some(index);
            filled += 1;
            if filled == size {
                break 'rounds;
            }
        }
    }
    table.into_iter().map(|slot| slot.unwrap_or_default()).collect()
}

/// A backend's preference list: slot j of it is (offset + j * skip) mod size, which visits
/// every slot once because size is prime and 0 < skip < size.
struct Permutation {
    offset: u64,
    skip: u64,
    next: u64,
    size: u64,
}

impl Permutation {
    fn of(backend: &Backend, size: usize) -> Permutation {
        let size = size as u64;
        let identity = identity(backend);
        Permutation {
            offset: hash(&identity, OFFSET_SEED) % size,
            skip: hash(&identity, SKIP_SEED) % (size - 1) + 1,
            next: 0,
            size,
        }
    }

    /// The first slot of the list, from where the backend stopped, that no one claimed.
    fn next_free(&mut self, table: &[Option<u16>]) -> usize {
        loop {
            let slot = ((self.offset + self.next * self.skip) % self.size) as usize;
            self.next += 1;
            if table[slot].is_none() {
                return slot;
            }
        }
    }
}

/// The bytes that name a backend: its address and port, so the same endpoint gets the same
/// preferences on every node and after every restart.
fn identity(backend: &Backend) -> Vec<u8> {
    let mut bytes = match backend.ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    bytes.extend_from_slice(&backend.port.to_be_bytes());
    bytes
}

/// FNV-1a over the bytes from `seed`, then splitmix64's finalizer: stable across Rust
/// versions and builds (unlike std's hashers), and well mixed in the low bits.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The table size of the BPF program.
    const SIZE: usize = crate::layout::c::LB_MAGLEV_SIZE;

    fn backends(count: u8) -> Vec<Backend> {
        (0..count).map(|n| Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, n)), port: 8080 }).collect()
    }

    /// The backend each slot names.
    fn owners(backends: &[Backend], table: &[u16]) -> Vec<Backend> {
        table.iter().map(|&index| backends[usize::from(index)]).collect()
    }

    /// Fraction of the slots whose backend differs between two tables.
    fn moved(before: &[Backend], after: &[Backend]) -> f64 {
        let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
        changed as f64 / before.len() as f64
    }

    #[test]
    fn every_slot_names_a_backend_and_shares_are_even() {
        for count in [1, 2, 3, 10, 97] {
            let table = populate(&backends(count), SIZE);
            assert_eq!(table.len(), SIZE);
            let mut shares = vec![0usize; usize::from(count)];
            for index in &table {
                shares[usize::from(*index)] += 1;
            }
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            // Backends claim one slot per turn: shares differ by one at most.
            assert!(max - min <= 1, "{count} backends: shares from {min} to {max}");
        }
    }

    #[test]
    fn the_table_depends_on_the_backends_only() {
        assert_eq!(populate(&backends(5), SIZE), populate(&backends(5), SIZE));
        assert_eq!(populate(&backends(5), 1021), populate(&backends(5), 1021));
        assert_ne!(populate(&backends(5), SIZE), populate(&backends(5)[1..], SIZE));
    }

    #[test]
    fn no_backends_is_a_table_of_zeros() {
        assert_eq!(populate(&[], 7), vec![0; 7]);
    }

    #[test]
    fn removing_one_of_n_backends_remaps_about_one_nth_of_the_flows() {
        for count in [4u8, 10, 50] {
            let all = backends(count);
            let before = owners(&all, &populate(&all, SIZE));
            for removed in [0, usize::from(count) / 2, usize::from(count) - 1] {
                let mut rest = all.clone();
                rest.remove(removed);
                let after = owners(&rest, &populate(&rest, SIZE));
                let fraction = moved(&before, &after);
                let ideal = 1.0 / f64::from(count);
                // The removed backend's own slots must move; Maglev moves a few more.
                assert!(
                    fraction >= ideal * 0.99 && fraction <= ideal * 1.6,
                    "{count} backends, removing #{removed}: {:.2}% of the flows moved, ideal {:.2}%",
                    fraction * 100.0,
                    ideal * 100.0
                );
                // No flow moves from one remaining backend to another except these few.
                let stayed = before.iter().zip(&after).filter(|(b, _)| **b != all[removed]).filter(|(b, a)| b == a);
                assert!(stayed.count() as f64 >= SIZE as f64 * (1.0 - ideal * 1.6));
            }
        }
    }

    #[test]
    fn adding_a_backend_takes_about_its_share_from_the_others() {
        let all = backends(11);
        let before = owners(&all[..10], &populate(&all[..10], SIZE));
        let after = owners(&all, &populate(&all, SIZE));
        let fraction = moved(&before, &after);
        assert!((1.0 / 11.0..=1.6 / 11.0).contains(&fraction), "{:.2}% moved", fraction * 100.0);
    }
}
