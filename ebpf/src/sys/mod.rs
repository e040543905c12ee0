//! The few bpf(2) commands aya 0.13 does not expose for cgroup programs: creating a bpf_link
//! we can pin (aya keeps a cgroup link's fd private), pinning and opening it, reading its
//! info, swapping its program and force-detaching it; and (`map`) byte-level access to a
//! pinned map whose layout is not this build's.
//!
//! Each command's attribute is a prefix of the kernel's `union bpf_attr`: the kernel accepts
//! a shorter size and treats the missing tail as zero.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

mod map;

#[cfg(feature = "test-support")]
pub(crate) use map::map_create;
pub(crate) use map::{map_info, MapInfo, RawMap};

// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

// enum bpf_attach_type, of the hooks the load-balancer uses.
pub(crate) const CGROUP_INET4_CONNECT: u32 = 10;
pub(crate) const CGROUP_INET6_CONNECT: u32 = 11;
pub(crate) const CGROUP_UDP4_SENDMSG: u32 = 14;
pub(crate) const CGROUP_UDP6_SENDMSG: u32 = 15;
pub(crate) const CGROUP_UDP4_RECVMSG: u32 = 19;
pub(crate) const CGROUP_UDP6_RECVMSG: u32 = 20;
pub(crate) const CGROUP_INET4_GETPEERNAME: u32 = 29;
pub(crate) const CGROUP_INET6_GETPEERNAME: u32 = 30;

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// The head of `struct bpf_link_info` and its cgroup member (the union is 8-aligned).
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _tail: [u32; 9],
}

/// What the kernel says about a cgroup bpf_link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// 0 once the cgroup is gone (the link is then defunct).
    pub cgroup_id: u64,
    pub attach_type: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of union bpf_attr of exactly
    // size_of::<T>() bytes; the kernel reads (and for some commands writes) only that much.
    // The addresses some attributes carry (a path, an info buffer, a map key and value) are
    // of buffers the callers in this module keep alive for the call, each as large as the
    // kernel uses: NUL-terminated paths, info structs with their length in the attribute,
    // and key and value buffers checked against the map's sizes (`map::RawMap`).
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("bpf returned an fd out of range"))?;
    // SAFETY: the bpf command returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    // Fds are never negative.
    fd.as_raw_fd().unsigned_abs()
}

/// Open the object pinned at `path`.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr { pathname: path.as_ptr() as u64, ..ObjAttr::default() };
    fd_from(bpf(BPF_OBJ_GET, &mut attr)?)
}

/// Pin `fd` at `path` (on a bpffs).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = ObjAttr { pathname: path.as_ptr() as u64, bpf_fd: raw(fd), file_flags: 0 };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// A bpf_link attaching `prog` to the cgroup open as `cgroup`. Cgroup links are always
/// multi-attach: programs others attached there keep running.
pub(crate) fn link_create_cgroup(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr { prog_fd: raw(prog), target_fd: raw(cgroup), attach_type, flags: 0 };
    fd_from(bpf(BPF_LINK_CREATE, &mut attr)?)
}

/// Swap the program of a link in one step: every syscall runs the old or the new one.
pub(crate) fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr { link_fd: raw(link), new_prog_fd: raw(new_prog), ..LinkUpdateAttr::default() };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// Detach a link now, even while pins or other fds still hold it.
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr { link_fd: raw(link) };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let info_len = u32::try_from(size_of::<RawLinkInfo>()).unwrap_or(u32::MAX);
    let mut attr = InfoAttr { bpf_fd: raw(link), info_len, info: &mut info as *mut RawLinkInfo as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo { id: info.id, prog_id: info.prog_id, cgroup_id: info.cgroup_id, attach_type: info.attach_type })
}
