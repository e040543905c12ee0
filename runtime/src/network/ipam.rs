//! IPv4 address management for the pod CIDR: one file per allocated address in the state
//! directory, named after the address and holding the sandbox id, so allocations survive
//! agent restarts and concurrent allocators (even in other processes) cannot collide.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::error::NetworkError;

/// Temporary records are named `.alloc-<writer pid>-<random>`; not being addresses, they
/// are never taken for allocations.
const TEMPORARY_PREFIX: &str = ".alloc-";

/// The pid that wrote a temporary record, from its name.
fn temporary_record_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMPORARY_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

pub(crate) struct AddressPool {
    cidr: Ipv4Net,
    dir: PathBuf,
}

impl AddressPool {
    /// A pool over `cidr` (host bits are ignored) recorded in `dir`, created if missing.
    pub fn open(cidr: Ipv4Net, dir: &Path) -> Result<AddressPool, NetworkError> {
        let cidr = cidr.trunc();
        // Network, gateway and broadcast are never handed out: a /30 leaves exactly one.
        if cidr.prefix_len() > 30 {
            return Err(NetworkError::InvalidConfig {
                reason: format!("pod CIDR {cidr} is too small: a /30 or larger is needed"),
            });
        }
        fs::create_dir_all(dir).map_err(|e| NetworkError::state("create state directory", dir, e))?;
        let pool = AddressPool { cidr, dir: dir.to_path_buf() };
        pool.remove_orphaned_records();
        Ok(pool)
    }

    /// Delete temporary records whose writer died between writing and linking them.
    /// Best effort: a leftover is harmless, it is just never linked.
    fn remove_orphaned_records(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(writer) = name.to_str().and_then(temporary_record_writer) else {
                continue;
            };
            if !Path::new(&format!("/proc/{writer}")).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The first host address, given to the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    pub fn prefix_len(&self) -> u8 {
        self.cidr.prefix_len()
    }

    /// Addresses pods may get, lowest first: all hosts but the gateway.
    fn assignable(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.cidr.network()) + 2;
        let last = u32::from(self.cidr.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }

    fn file_of(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Give `id` the lowest free address.
    ///
    /// The record is written to a private temporary file first and then hard-linked to the
    /// address's name: link(2) fails with EEXIST like O_EXCL does, and the record never
    /// appears half-written, even after a crash.
    pub fn allocate(&self, id: &str) -> Result<Ipv4Addr, NetworkError> {
        let taken: BTreeSet<Ipv4Addr> = self.allocations()?.into_iter().map(|(ip, _)| ip).collect();
        let record = self.write_temporary_record(id)?;
        let result = self.link_first_free(&record, &taken);
        if let Err(e) = fs::remove_file(&record) {
            tracing::warn!(path = %record.display(), error = %e, "cannot remove temporary allocation record");
        }
        let ip = result?;
        sync_dir(&self.dir)?;
        Ok(ip)
    }

    fn link_first_free(&self, record: &Path, taken: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        for ip in self.assignable().filter(|ip| !taken.contains(ip)) {
            let file = self.file_of(ip);
            match fs::hard_link(record, &file) {
                Ok(()) => return Ok(ip),
                // Someone else got it since we listed the directory.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetworkError::state("record allocation", file, e)),
            }
        }
        Err(NetworkError::AddressesExhausted { cidr: self.cidr, state_dir: self.dir.clone() })
    }

    fn write_temporary_record(&self, id: &str) -> Result<PathBuf, NetworkError> {
        let path = self.dir.join(format!("{TEMPORARY_PREFIX}{}-{:016x}", std::process::id(), rand::random::<u64>()));
        let write = || -> io::Result<()> {
            let mut file = File::options().write(true).create_new(true).open(&path)?;
            file.write_all(id.as_bytes())?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&path);
            return Err(NetworkError::state("write allocation record", path, e));
        }
        Ok(path)
    }

    /// The address recorded for `id`, if any.
    pub fn find(&self, id: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        Ok(self.allocations()?.into_iter().find_map(|(ip, owner)| (owner == id).then_some(ip)))
    }

    /// Release `ip` if it is still recorded for `id` (never someone else's record).
    pub fn release_address(&self, ip: Ipv4Addr, id: &str) -> Result<bool, NetworkError> {
        let file = self.file_of(ip);
        match read_owner(&file)? {
            Some(owner) if owner == id => remove_record(&file),
            _ => Ok(false),
        }
    }

    /// Release every address recorded for `id`. Returns how many were released.
    pub fn release(&self, id: &str) -> Result<usize, NetworkError> {
        let mut released = 0;
        for (ip, owner) in self.allocations()? {
            if owner == id && remove_record(&self.file_of(ip))? {
                released += 1;
            }
        }
        Ok(released)
    }

    /// All recorded allocations, sorted by address.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| NetworkError::state("list", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetworkError::state("list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue; // temporary records and foreign files
            };
            if let Some(owner) = read_owner(&entry.path())? {
                found.push((ip, owner));
            }
        }
        found.sort();
        Ok(found)
    }
}

/// The sandbox id in an allocation file; `None` when it vanished while we looked.
fn read_owner(file: &Path) -> Result<Option<String>, NetworkError> {
    match fs::read_to_string(file) {
        Ok(owner) => Ok(Some(owner.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetworkError::state("read allocation", file, e)),
    }
}

fn remove_record(file: &Path) -> Result<bool, NetworkError> {
    match fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NetworkError::state("release allocation", file, e)),
    }
}

/// Make the new directory entry durable, so an allocation survives a power cut too.
fn sync_dir(dir: &Path) -> Result<(), NetworkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| NetworkError::state("sync state directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> (tempfile::TempDir, AddressPool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = AddressPool::open(cidr.parse().unwrap(), dir.path()).unwrap();
        (dir, pool)
    }

    #[test]
    fn gateway_is_first_host_and_host_bits_are_ignored() {
        let (_dir, pool) = pool("10.9.3.77/24");
        assert_eq!(pool.gateway(), Ipv4Addr::new(10, 9, 3, 1));
        assert_eq!(pool.prefix_len(), 24);
    }

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let (_dir, pool) = pool("10.9.0.0/29");
        assert_eq!(pool.allocate("a").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(pool.allocate("b").unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(pool.allocate("c").unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(pool.release("b").unwrap(), 1);
        assert_eq!(pool.allocate("d").unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(pool.find("c").unwrap(), Some(Ipv4Addr::new(10, 9, 0, 4)));
        assert_eq!(pool.find("b").unwrap(), None);
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast() {
        let (_dir, pool) = pool("10.9.0.0/29");
        let got: Vec<Ipv4Addr> = (0..5).map(|i| pool.allocate(&format!("s{i}")).unwrap()).collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 9, 0, 6)));
        assert!(matches!(pool.allocate("full"), Err(NetworkError::AddressesExhausted { .. })));
        // The failed attempt leaves no temporary record behind.
        let names: Vec<_> = fs::read_dir(&pool.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }

    #[test]
    fn release_address_spares_other_owners() {
        let (_dir, pool) = pool("10.9.0.0/30");
        let ip = pool.allocate("a").unwrap();
        assert!(!pool.release_address(ip, "b").unwrap());
        assert!(pool.release_address(ip, "a").unwrap());
        assert!(!pool.release_address(ip, "a").unwrap());
    }

    #[test]
    fn allocations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.9.0.0/28".parse().unwrap();
        let ip = AddressPool::open(cidr, dir.path()).unwrap().allocate("a").unwrap();
        let reopened = AddressPool::open(cidr, dir.path()).unwrap();
        assert_eq!(reopened.allocations().unwrap(), vec![(ip, "a".to_string())]);
        assert_ne!(reopened.allocate("b").unwrap(), ip);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.9.0.0/26".parse().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let pool = AddressPool::open(cidr, &path).unwrap();
                    (0..6).map(|i| pool.allocate(&format!("t{t}-{i}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let distinct: BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 48);
    }

    #[test]
    fn orphaned_temporary_records_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        // No pid is above the kernel's limit of 2^22.
        let orphan = dir.path().join(".alloc-99999999-00000000000000aa");
        let ours = dir.path().join(format!(".alloc-{}-00000000000000bb", std::process::id()));
        fs::write(&orphan, "x").unwrap();
        fs::write(&ours, "y").unwrap();
        AddressPool::open("10.9.0.0/24".parse().unwrap(), dir.path()).unwrap();
        assert!(!orphan.exists());
        assert!(ours.exists(), "a live writer's record was removed");
    }

    #[test]
    fn rejects_too_small_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let err = AddressPool::open("10.9.0.0/31".parse().unwrap(), dir.path()).err().unwrap();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
