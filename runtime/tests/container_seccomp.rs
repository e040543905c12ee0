//! `linux.seccomp` on the real kernel: busybox containers under a filter, checked by what
//! their commands manage to do.

mod container_support;

use container_support::*;
use nodelet_runtime::monitor::ContainerStatus;
use oci_spec::runtime::{LinuxSeccomp, PosixRlimitBuilder, PosixRlimitType, Spec};
use serde_json::json;

fn set_seccomp(spec: &mut Spec, profile: serde_json::Value) {
    let seccomp: LinuxSeccomp = serde_json::from_value(profile).expect("seccomp profile");
    let mut linux = spec.linux().clone().expect("linux");
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
}

fn set_no_new_privileges(spec: &mut Spec, on: bool) {
    let mut process = spec.process().clone().expect("process");
    process.set_no_new_privileges(Some(on));
    spec.set_process(Some(process));
}

/// mkdir fails with EPERM (the default errnoRet), chmod with EACCES; the rest is allowed.
/// fchmodat2 is unknown to Debian 12's libseccomp: skipped, not an error.
fn deny_mkdir_and_chmod() -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES },
        ]
    })
}

const DENIED_SCRIPT: &str = "mkdir /tmp/d && echo mkdir-ok; touch /tmp/f && echo touch-ok; \
                             chmod 600 /tmp/f && echo chmod-ok; echo done";

fn assert_denied(log: &str) {
    assert!(log.contains("can't create directory '/tmp/d': Operation not permitted"), "log: {log}");
    assert!(log.contains("Permission denied") && !log.contains("chmod-ok"), "log: {log}");
    assert!(!log.contains("mkdir-ok") && log.contains("touch-ok") && log.contains("done"), "log: {log}");
}

#[tokio::test]
async fn errno_rules_fail_only_their_syscalls() {
    let mut env = TestEnv::new();
    let (state, log) =
        run_to_end(&mut env, "errno", |spec| set_seccomp(spec, deny_mkdir_and_chmod()), &["sh", "-c", DENIED_SCRIPT])
            .await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    assert_denied(&log);
}

#[tokio::test]
async fn filter_loads_before_caps_without_no_new_privileges() {
    let mut env = TestEnv::new();
    let edit = |spec: &mut Spec| {
        set_seccomp(spec, deny_mkdir_and_chmod());
        set_no_new_privileges(spec, false);
    };
    let (state, log) = run_to_end(&mut env, "errno-privileged", edit, &["sh", "-c", DENIED_SCRIPT]).await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    assert_denied(&log);
}

#[tokio::test]
async fn arg_conditions_match_only_their_values() {
    let mut env = TestEnv::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // kill(pid, 0) is refused; other signals go through.
            { "names": ["kill"], "action": "SCMP_ACT_ERRNO",
              "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] },
            // Setting the setuid bit is refused: (mode & 04000) == 04000.
            { "names": ["chmod"], "action": "SCMP_ACT_ERRNO",
              "args": [{ "index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ" }] },
            { "names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
              "args": [{ "index": 2, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ" }] },
        ]
    });
    let script = "kill -0 $$ && echo sig0-ok; kill -CONT $$ && echo cont-ok; touch /tmp/f; \
                  chmod 4755 /tmp/f && echo setuid-ok; chmod 755 /tmp/f && echo plain-ok; echo done";
    let (state, log) = run_to_end(&mut env, "args", |spec| set_seccomp(spec, profile), &["sh", "-c", script]).await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    assert!(!log.contains("sig0-ok") && log.contains("cont-ok"), "log: {log}");
    assert!(!log.contains("setuid-ok") && log.contains("plain-ok"), "log: {log}");
    assert!(log.contains("Operation not permitted") && log.contains("done"), "log: {log}");
}

/// What busybox's shell and applets need on x86_64 and aarch64; names missing on this arch
/// (or unknown to libseccomp, like the last one) are skipped.
const BUSYBOX_SYSCALLS: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "chdir",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "clone3",
    "close",
    "dup",
    "dup2",
    "dup3",
    "execve",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fcntl",
    "fork",
    "fstat",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getrlimit",
    "gettid",
    "gettimeofday",
    "getuid",
    "ioctl",
    "kill",
    "lseek",
    "lstat",
    "madvise",
    "mmap",
    "mprotect",
    "mremap",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "readv",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "set_robust_list",
    "set_tid_address",
    "setpgid",
    "sigaltstack",
    "stat",
    "statx",
    "sysinfo",
    "tgkill",
    "umask",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "write",
    "writev",
    "nodelet_no_such_syscall",
];

#[tokio::test]
async fn default_errno_with_an_allow_list_runs_busybox() {
    let mut env = TestEnv::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EACCES,
        "syscalls": [{ "names": BUSYBOX_SYSCALLS, "action": "SCMP_ACT_ALLOW" }]
    });
    let script = "echo allowed; mkdir /tmp/d || echo mkdir-denied; echo done";
    let (state, log) =
        run_to_end(&mut env, "allow-list", |spec| set_seccomp(spec, profile), &["sh", "-c", script]).await;
    assert_eq!(state.exit_code, Some(0), "log: {log}");
    assert!(log.contains("allowed") && log.contains("done"), "log: {log}");
    assert!(log.contains("Permission denied") && log.contains("mkdir-denied"), "log: {log}");
}

#[tokio::test]
async fn kill_actions_end_the_process_with_sigsys() {
    let mut env = TestEnv::new();
    for action in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"] {
        let id = format!("kill-{}", action.to_lowercase().replace('_', "-"));
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": action }]
        });
        let edit = |spec: &mut Spec| {
            set_seccomp(spec, profile);
            // SIGSYS dumps core by default: not here.
            let mut process = spec.process().clone().unwrap();
            let core = PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitCore).soft(0u64).hard(0u64).build();
            process.set_rlimits(Some(vec![core.expect("rlimit")]));
            spec.set_process(Some(process));
        };
        let (state, log) = run_to_end(&mut env, &id, edit, &["mkdir", "/tmp/d"]).await;
        assert_eq!(state.status, ContainerStatus::Stopped);
        assert_eq!(state.exit_code, Some(128 + libc::SIGSYS), "{action}: log: {log}");
    }
}

#[tokio::test]
async fn notify_is_refused_at_create() {
    let mut env = TestEnv::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }]
    });
    let err = create_error(&mut env, "notify", |spec| set_seccomp(spec, profile)).await;
    assert!(err.contains("SCMP_ACT_NOTIFY for mkdir") && err.contains("not supported"), "{err}");
}

#[tokio::test]
async fn unknown_operator_is_named_at_create() {
    let mut env = TestEnv::new();
    let runtime = env.runtime().await;
    let id = "bad-op";
    let (bundle, spec) = env.bundle(id, &["true"]);
    let mut doc = serde_json::to_value(&spec).expect("spec as JSON");
    doc["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO",
            "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_ALMOST" }] }]
    });
    std::fs::write(bundle.join("config.json"), doc.to_string()).expect("write config.json");
    let err = runtime.create(id, &bundle, &env.log_path(id)).await.expect_err("invalid op");
    let err = nodelet_runtime::error_chain(&err);
    assert!(err.contains("SCMP_CMP_ALMOST") && err.contains("linux.seccomp"), "{err}");
}
