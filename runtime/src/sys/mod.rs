//! The product's only `unsafe`: thin wrappers over syscalls that nix does not wrap safely.
//! Each wrapper documents what the caller must guarantee; each block says why it is sound.

pub mod bpf;
pub mod mount_api;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

/// Which side of a [`clone_process`] we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneResult {
    Parent { child: Pid },
    Child,
}

/// Fork-like `clone(2)` with namespace flags: the child starts in the new namespaces (for
/// CLONE_NEWPID it is pid 1 there) on a copy-on-write copy of the caller's stack.
///
/// Only sound in a single-threaded process (the monitor, the exec helper): the child is a
/// copy of this one thread, so no lock can be held by a thread that does not exist in the
/// child.
pub fn clone_process(flags: CloneFlags) -> Result<CloneResult, Errno> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: raw clone with a null stack behaves like fork(2): the child continues on a
    // private copy of the caller's stack. No pointers are passed (parent_tid, child_tid and
    // tls are null because no CLONE_*TID/SETTLS flag is set). The caller is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(CloneResult::Child),
        pid => Ok(CloneResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_process`] whose child starts in the cgroup2 directory `cgroup` (`clone3(2)` with
/// CLONE_INTO_CGROUP), so it never has to be moved there. Same soundness condition: the
/// caller is single-threaded.
pub fn clone_into_cgroup(flags: CloneFlags, cgroup: std::os::fd::BorrowedFd<'_>) -> Result<CloneResult, Errno> {
    use std::os::fd::AsRawFd;
    let args = CloneArgs {
        // Through u32: the flags are a C int, whose high bit must not spread to the upper half.
        flags: u64::from(flags.bits() as u32) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a live, initialised clone_args of the size passed. stack and
    // stack_size are 0, so the child goes on, like fork(2), on a private copy of the caller's
    // stack; no pidfd, tid or tls pointer is given (all 0). The cgroup fd is borrowed, open.
    // The caller is single-threaded.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(CloneResult::Child),
        pid => Ok(CloneResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}

/// `pidfd_open(2)`: a file descriptor that becomes readable when `pid` exits, for processes
/// that are not our children (adopted after a monitor restart).
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Close every file descriptor of this process except those in `keep` (CVE-2024-21626: no
/// host fd may survive into a container).
pub fn close_fds_except(keep: &[RawFd]) -> Result<(), Errno> {
    let mut keep: Vec<u32> = keep.iter().filter(|fd| **fd >= 0).map(|fd| *fd as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range only closes fds; callers (the container init right before exec, or
    // right after clone) own every fd of the process and hold no Rust handle to the closed
    // ones that is used again (they are dropped or leaked by the caller's design).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Restore every signal to its default disposition (the monitor's Rust runtime ignores
/// SIGPIPE, and ignored dispositions survive exec) and unblock them all.
pub fn reset_signals() -> Result<(), Errno> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL installs no Rust handler, so no handler can run code
        // that is not async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::SigDfl) }?;
    }
    signal::sigprocmask(signal::SigmaskHow::SIG_SETMASK, Some(&signal::SigSet::empty()), None)
}

/// Leave the process now, without running atexit handlers or flushing stdio buffers that
/// belong to the parent we were cloned from.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Spawn `command` in a new session (setsid), so it outlives the caller's terminal and
/// process group.
pub fn spawn_in_new_session(command: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        })
    };
    command.spawn()
}

/// Let the child spawned by `command` inherit `fd` (which the caller opened with O_CLOEXEC, so
/// that no other spawn of a multithreaded caller inherits it) at the same number: runc's way of
/// handing its init a sync pipe. The caller tells the child the number.
pub fn inherit_fd(command: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls fcntl(2) on an fd number,
    // which is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Take ownership of an fd this process inherited from its parent (its number passed by
/// [`inherit_fd`]'s caller), after checking that it is open. Returns it with FD_CLOEXEC set, so
/// nothing this process executes inherits it.
///
/// Call it once per number, at start-up, before anything else could have opened or closed that
/// number: two owners of one fd would close it twice.
pub fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 3 {
        return Err(Errno::EBADF); // stdio belongs to the process's streams
    }
    // SAFETY: F_SETFD only changes the flags of the fd number, and fails with EBADF when it is
    // not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the fd is open (checked above), was inherited across exec so no Rust object of
    // this process owns it, and the caller takes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signals a foreground `run` and an exec helper pass on to the process they wait for
/// instead of dying of them, as runc does.
pub const FORWARDED_SIGNALS: &[nix::sys::signal::Signal] = &[
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGQUIT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGUSR1,
    nix::sys::signal::Signal::SIGUSR2,
    nix::sys::signal::Signal::SIGWINCH,
];

/// Receive one message carrying one fd (SCM_RIGHTS) on a connected Unix socket: what a
/// console socket's listener gets from `create --console-socket` (the text is the pty's
/// name). Returns the text and the fd, close-on-exec.
pub(crate) fn receive_fd(socket: std::os::fd::BorrowedFd<'_>) -> Result<(Vec<u8>, OwnedFd), Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut text = vec![0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut text)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let len = msg.bytes;
    let mut received: Vec<RawFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    // SAFETY: the kernel just installed these fds in our table for this message alone; no
    // Rust object owns them yet, and each is wrapped exactly once.
    let mut owned: Vec<OwnedFd> = received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    let fd = owned.pop().ok_or(Errno::EBADMSG)?;
    drop(owned); // more than one fd: keep the last, close the others
    text.truncate(len);
    Ok((text, fd))
}

/// What the crate's integration tests need of this module and the product does not export:
/// built only with the cargo feature `test-support`, which the crate's dev-dependency on
/// itself turns on for its tests.
#[cfg(feature = "test-support")]
pub mod test_support {
    use std::os::fd::{BorrowedFd, OwnedFd};

    /// [`super::receive_fd`]: a test playing a console socket's listener receives the master.
    pub fn receive_fd(socket: BorrowedFd<'_>) -> Result<(Vec<u8>, OwnedFd), nix::errno::Errno> {
        super::receive_fd(socket)
    }
}

/// The window size of the terminal `fd` (TIOCGWINSZ).
pub fn window_size(fd: std::os::fd::BorrowedFd<'_>) -> Result<nix::pty::Winsize, Errno> {
    use std::os::fd::AsRawFd;
    let mut size = nix::pty::Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one struct winsize (nix's Winsize is that struct, repr(C)) to
    // the pointer, which points to a live local; the fd is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size as *mut nix::pty::Winsize) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(size)
}

/// Set the window size of the terminal `fd` (TIOCSWINSZ): the pty's foreground process group
/// gets SIGWINCH.
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, size: &nix::pty::Winsize) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer, a live reference for the
    // whole call; the fd is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const nix::pty::Winsize) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, value)`: this process's I/O class and priority
/// (`class << 13 | priority`).
pub fn set_io_priority(value: i32) -> Result<(), Errno> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER0, 48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// `sched_setattr(0, attr, 0)`: this thread's scheduling policy and parameters.
pub fn set_scheduler(attr: &SchedAttr) -> Result<(), Errno> {
    let attr = SchedAttr { size: std::mem::size_of::<SchedAttr>() as u32, ..*attr };
    // SAFETY: the pointer is to a live, initialised sched_attr whose size field says how many
    // bytes the kernel may read; the kernel does not keep it.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
