//! Helpers for nodelet's end-to-end tests: each host object a test creates is owned by a
//! guard that removes it on drop, so a failing test still leaves the machine clean.

mod agent;
mod cgroup;
mod conditions;
mod host;
mod names;
mod node;
mod registry;
mod wait;

pub use agent::{nodelet_binary, NodeletProcess};
pub use cgroup::TestCgroup;
pub use conditions::{node_ready, pod_ready};
pub use host::{bpf_programs_on, http_get_from_cgroup, link_exists, process_alive};
pub use names::unique_suffix;
pub use node::{agent_args, TestNode};
pub use registry::TestRegistry;
pub use wait::wait_for;

/// Panics with a clear message when the test does not run as root.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test creates namespaces, mounts, cgroups and BPF programs: run it as root"
    );
}
