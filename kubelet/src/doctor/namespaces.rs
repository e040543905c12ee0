//! Namespace types, as /proc/self/ns lists them.

use std::path::Path;

use super::report::Check;

pub const NAME: &str = "namespaces";
/// Pods cannot be isolated without these.
const REQUIRED: [&str; 5] = ["mnt", "pid", "uts", "ipc", "net"];
/// Used when present (user namespaces for pods that ask, cgroup and time for isolation).
const OPTIONAL: [&str; 3] = ["user", "cgroup", "time"];

pub fn check_namespaces(host_root: &Path) -> Check {
    let ns_dir = host_root.join("proc/self/ns");
    let present = |kind: &str| ns_dir.join(kind).exists();
    let missing_required: Vec<&str> = REQUIRED.into_iter().filter(|k| !present(k)).collect();
    let missing_optional: Vec<&str> = OPTIONAL.into_iter().filter(|k| !present(k)).collect();
    let available: Vec<&str> = REQUIRED.into_iter().chain(OPTIONAL).filter(|k| present(k)).collect();
    if !missing_required.is_empty() {
        Check::fail(NAME, format!("missing {}", missing_required.join(", ")))
    } else if !missing_optional.is_empty() {
        Check::warn(NAME, format!("{} (missing {})", available.join(" "), missing_optional.join(", ")))
    } else {
        Check::ok(NAME, available.join(" "))
    }
}
