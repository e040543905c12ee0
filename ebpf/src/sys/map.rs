//! Byte-level access to a map whose layout is not this build's: what the kernel says of it
//! (to check a pinned map before reusing it), and its entries (to copy an older layout's
//! into the map that replaces it).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

#[cfg(feature = "test-support")]
use super::fd_from;
use super::{bpf, raw, InfoAttr, BPF_OBJ_GET_INFO_BY_FD};

// enum bpf_cmd (include/uapi/linux/bpf.h).
#[cfg(feature = "test-support")]
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The head of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct RawMapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

/// What the kernel says about a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

/// The map element commands' attribute: `key` and `value` (or the next key) point to
/// buffers of the map's key and value sizes.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub(crate) fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = RawMapInfo::default();
    let info_len = u32::try_from(size_of::<RawMapInfo>()).unwrap_or(u32::MAX);
    let mut attr = InfoAttr { bpf_fd: raw(map), info_len, info: &mut info as *mut RawMapInfo as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(MapInfo {
        map_type: info.map_type,
        id: info.id,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
    })
}

// enum bpf_map_type values RawMap accepts: one value per key, the same on every CPU.
const PLAIN_HASH_MAPS: [u32; 2] = [1 /* HASH */, 9 /* LRU_HASH */];

/// A hash map read and written as bytes, whatever its layout. Every buffer handed to the
/// kernel is checked against the key and value sizes the kernel reported for this fd (a
/// map's sizes never change), so the kernel never reads or writes past one.
pub(crate) struct RawMap {
    fd: OwnedFd,
    info: MapInfo,
}

impl RawMap {
    /// The map open as `fd`; only (LRU) hash maps, whose lookups copy exactly one value.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<RawMap> {
        let info = map_info(fd.as_fd())?;
        if !PLAIN_HASH_MAPS.contains(&info.map_type) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map type {} is not a hash map", info.map_type),
            ));
        }
        Ok(RawMap { fd, info })
    }

    pub(crate) fn info(&self) -> MapInfo {
        self.info
    }

    #[cfg(feature = "test-support")]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, key: usize, value: Option<usize>) -> io::Result<()> {
        let key_ok = u32::try_from(key) == Ok(self.info.key_size);
        let value_ok = value.is_none_or(|value| u32::try_from(value) == Ok(self.info.value_size));
        if !(key_ok && value_ok) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer sizes differ from the map's"));
        }
        Ok(())
    }

    fn elem(&self, cmd: libc::c_long, key: u64, value: u64, flags: u64) -> io::Result<()> {
        let mut attr = ElemAttr { map_fd: raw(self.fd.as_fd()), key, value, flags, ..ElemAttr::default() };
        // The pointers in `attr` are to buffers of the map's key and value sizes (checked
        // by every caller), live for the whole call.
        bpf(cmd, &mut attr).map(drop)
    }

    /// The key after `key` (the first with `None`) into `next`; false after the last.
    pub(crate) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        self.check(next.len(), None)?;
        if let Some(key) = key {
            self.check(key.len(), None)?;
        }
        let key = key.map_or(0, |key| key.as_ptr() as u64);
        match self.elem(BPF_MAP_GET_NEXT_KEY, key, next.as_mut_ptr() as u64, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` into `value`; false when there is none (an LRU map may have
    /// evicted it since its key was listed).
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key.len(), Some(value.len()))?;
        match self.elem(BPF_MAP_LOOKUP_ELEM, key.as_ptr() as u64, value.as_mut_ptr() as u64, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Insert or replace the value of `key`.
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key.len(), Some(value.len()))?;
        self.elem(BPF_MAP_UPDATE_ELEM, key.as_ptr() as u64, value.as_ptr() as u64, 0 /* BPF_ANY */)
    }
}

/// The head of the BPF_MAP_CREATE attribute, up to the map's name.
#[cfg(feature = "test-support")]
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// A new hash-type map without BTF (as an older nodelet's map, for the tests of reusing
/// pinned maps).
#[cfg(feature = "test-support")]
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<RawMap> {
    let mut map_name = [0u8; 16];
    for (to, from) in map_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    let mut attr = MapCreateAttr { map_type, key_size, value_size, max_entries, map_name, ..MapCreateAttr::default() };
    RawMap::new(fd_from(bpf(BPF_MAP_CREATE, &mut attr)?)?)
}
