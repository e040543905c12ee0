//! The RuntimeDefault seccomp profile: containerd's default profile (the allowlist Docker
//! introduced), built for this machine's architecture and widened by the container's bounding
//! capabilities, as containerd's `seccomp.DefaultProfile` does it.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

/// Every process may make these calls.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
    "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
    "lgetxattr", "link", "linkat", "listen", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr",
    "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev", "pwritev2",
    "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64",
    "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
    "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
    "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "setxattrat", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socket",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// personality(2) personas a container may switch to: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags of clone(2) that need CAP_SYS_ADMIN: NEWNS, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET, NEWCGROUP.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// ENOSYS: clone3 cannot be filtered on its flags, so libcs must fall back to clone.
const ENOSYS: u32 = 38;

/// Calls allowed only with a capability in the bounding set.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (Capability::SysTime, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::SysTtyConfig, &["vhangup"]),
    (Capability::SysNice, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The profile for a container with these bounding capabilities.
pub fn runtime_default_profile(bounding: &HashSet<Capability>) -> LinuxSeccomp {
    let mut syscalls = vec![allow(ALLOWED)];
    for persona in PERSONAS {
        syscalls.push(allow_with(&["personality"], arg(0, persona, None, LinuxSeccompOperator::ScmpCmpEq)));
    }
    syscalls.extend(arch_specific().into_iter().map(allow));
    for (capability, names) in BY_CAPABILITY {
        if bounding.contains(capability) {
            syscalls.push(allow(names));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // clone without new namespaces; on s390 the flags are the second argument.
        let index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        let flags = arg(index, CLONE_NAMESPACE_FLAGS, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq);
        syscalls.push(allow_with(&["clone"], flags));
        let mut clone3 = syscall(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_architectures(Some(architectures()));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// The native architecture and the ones its kernel also runs.
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        "s390x" => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![],
    }
}

fn arch_specific() -> Vec<&'static [&'static str]> {
    match std::env::consts::ARCH {
        "x86_64" => vec![&["arch_prctl", "modify_ldt"]],
        "x86" => vec![&["modify_ldt"]],
        "aarch64" | "arm" => vec![&["arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls"]],
        "s390x" => vec![&["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]],
        "riscv64" => vec![&["riscv_flush_icache", "riscv_hwprobe"]],
        _ => vec![],
    }
}

fn syscall(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    let mut call = LinuxSyscall::default();
    call.set_names(names.iter().map(|n| n.to_string()).collect());
    call.set_action(action);
    call
}

fn allow(names: &[&str]) -> LinuxSyscall {
    syscall(names, LinuxSeccompAction::ScmpActAllow)
}

fn allow_with(names: &[&str], condition: LinuxSeccompArg) -> LinuxSyscall {
    let mut call = allow(names);
    call.set_args(Some(vec![condition]));
    call
}

fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    let builder = match value_two {
        Some(two) => builder.value_two(two),
        None => builder,
    };
    // Every field of the builder has a default, so it cannot fail.
    builder.build().expect("seccomp arg with every field set")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &LinuxSeccomp, name: &str) -> bool {
        profile.syscalls().iter().flatten().any(|s| {
            s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none() && s.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn default_capabilities_do_not_allow_mount_or_namespaces() {
        let caps: HashSet<Capability> = [Capability::Chown, Capability::SysChroot].into_iter().collect();
        let profile = runtime_default_profile(&caps);
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(allowed(&profile, "read"));
        assert!(allowed(&profile, "chroot"));
        assert!(!allowed(&profile, "mount"));
        assert!(!allowed(&profile, "unshare"));
        let clone3 = profile.syscalls().iter().flatten().find(|s| s.names() == &["clone3".to_string()]);
        assert_eq!(clone3.and_then(|s| s.errno_ret()), Some(ENOSYS));
        let clone = profile.syscalls().iter().flatten().find(|s| s.names() == &["clone".to_string()]);
        let condition = clone.and_then(|s| s.args().clone()).expect("clone is conditional");
        assert_eq!(condition[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    }

    #[test]
    fn sys_admin_opens_mount_and_unconditional_clone() {
        let caps: HashSet<Capability> = [Capability::SysAdmin].into_iter().collect();
        let profile = runtime_default_profile(&caps);
        assert!(allowed(&profile, "mount"));
        assert!(allowed(&profile, "clone"));
        assert!(allowed(&profile, "clone3"));
        assert!(!allowed(&profile, "chroot"));
    }

    #[test]
    fn serializes_as_oci_json() {
        let json = serde_json::to_value(runtime_default_profile(&HashSet::new())).expect("json");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        }
    }
}
