//! `features`: the runtime-spec features document, stating only what this implementation
//! really does (no seccomp notify, AppArmor or SELinux yet).

use super::{print_json, RuncError};

/// Mount options the container code understands (see container/mounts.rs); anything else
/// is passed to the filesystem as data.
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "nosymfollow",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ridmap",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
];

/// The plain options and the recursive ones ("rro", ...), sorted.
fn mount_options() -> Vec<&'static str> {
    let mut options: Vec<&str> =
        MOUNT_OPTIONS.iter().copied().chain(crate::container::recursive_mount_options()).collect();
    options.sort_unstable();
    options
}

pub(super) fn print_features() -> Result<(), RuncError> {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    let seccomp = crate::container::seccomp_support();
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": seccomp.actions,
                "operators": seccomp.operators,
                "archs": seccomp.archs,
                "knownFlags": seccomp.flags.iter().map(|(flag, _)| flag).collect::<Vec<_>>(),
                "supportedFlags": seccomp.flags.iter().filter(|(_, ok)| *ok).map(|(flag, _)| flag).collect::<Vec<_>>(),
            },
            "apparmor": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } },
            "selinux": { "enabled": false },
        },
        "annotations": {
            "io.github.seccomp.libseccomp.version": seccomp.libseccomp_version.unwrap_or_default(),
            "org.nodelet.runtime.version": env!("CARGO_PKG_VERSION"),
        },
    });
    print_json("features", &doc)
}
