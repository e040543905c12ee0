//! nodelet mounts, creates namespaces and loads BPF programs: it must run as root.

use super::report::Check;

pub const NAME: &str = "root";

pub fn check_root() -> Check {
    let euid = nix::unistd::Uid::effective();
    if euid.is_root() {
        Check::ok(NAME, "running as root")
    } else {
        Check::fail(NAME, format!("running as uid {euid}; nodelet needs root"))
    }
}
