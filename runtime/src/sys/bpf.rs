//! The few `bpf(2)` commands a cgroup device filter needs: load a program from raw
//! instructions, attach it to a cgroup directory, list and detach what a cgroup holds.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
pub const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE`, the attach type of device programs.
pub const ATTACH_CGROUP_DEVICE: u32 = 6;
/// Several programs per cgroup, all of which must allow an access.
pub const F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// `union bpf_attr` as BPF_PROG_LOAD reads it; the tail stays zero, as the kernel demands of
/// fields it knows and we do not set.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    tail: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    tail: [u32; 11],
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    tail: [u64; 6],
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    tail: [u32; 13],
}

/// # Safety
/// `attr` must point to a live, initialised value of `size` bytes laid out as the kernel's
/// `union bpf_attr` for `cmd`, whose pointers (if any) point to live buffers of the sizes given.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: guaranteed by the caller (see above).
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(ret)
}

/// Load a program of `prog_type` (for `attach_type`). On a verifier refusal, the verifier's
/// log comes back with the error: the load is then repeated with the log on, since logging
/// makes the verifier several times slower and a good program needs none.
pub fn prog_load(prog_type: u32, attach_type: u32, insns: &[Insn], name: &str) -> Result<OwnedFd, (Errno, String)> {
    prog_load_logged(prog_type, attach_type, insns, name, &mut [])
        .or_else(|_| prog_load_logged(prog_type, attach_type, insns, name, &mut vec![0u8; 64 * 1024]))
}

/// One BPF_PROG_LOAD, with the verifier's log in `log` (none when `log` is empty).
fn prog_load_logged(
    prog_type: u32,
    attach_type: u32,
    insns: &[Insn],
    name: &str,
    log: &mut [u8],
) -> Result<OwnedFd, (Errno, String)> {
    let license = CString::new("Apache-2.0").unwrap_or_default();
    let mut prog_name = [0u8; 16];
    for (slot, byte) in prog_name.iter_mut().take(15).zip(name.bytes()) {
        *slot = byte;
    }
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| (Errno::E2BIG, String::new()))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach_type,
        tail: [0; 8],
    };
    // SAFETY: attr is a BPF_PROG_LOAD attr whose insns, license and log_buf point to buffers
    // that live until the call returns, with the counts and sizes given.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(errno) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err((errno, String::from_utf8_lossy(&log[..end]).trim().to_string()))
        }
    }
}

/// Attach `prog` to the cgroup directory `cgroup` with `flags`.
pub fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32, flags: u32) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
        tail: [0; 11],
    };
    // SAFETY: a BPF_PROG_ATTACH attr with no pointers; both fds are borrowed and open.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(|_| ())
}

/// Detach `prog` from the cgroup directory `cgroup`.
pub fn prog_detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
        tail: [0; 11],
    };
    // SAFETY: a BPF_PROG_DETACH attr with no pointers; both fds are borrowed and open.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(|_| ())
}

/// The ids of the programs of `attach_type` attached to the cgroup itself (not inherited).
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> Result<Vec<u32>, Errno> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        pad: 0,
        tail: [0; 6],
    };
    // SAFETY: a BPF_PROG_QUERY attr whose prog_ids points to a live buffer of prog_cnt u32s;
    // the cgroup fd is borrowed and open.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    ids.truncate(attr.prog_cnt.min(64) as usize);
    Ok(ids)
}

/// An fd on the loaded program with this id.
pub fn prog_get_fd_by_id(id: u32) -> Result<OwnedFd, Errno> {
    let mut attr = GetFdAttr { prog_id: id, next_id: 0, open_flags: 0, tail: [0; 13] };
    // SAFETY: a BPF_PROG_GET_FD_BY_ID attr with no pointers.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
