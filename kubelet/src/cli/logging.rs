//! Logging set-up: `tracing` to stderr, level from `-v` (klog's habit) or `RUST_LOG`.
//!
//! netlink-packet-route warns on every link dump when the kernel is newer than its attribute
//! tables (harmless, and it floods the log): only its errors are shown.

use tracing_subscriber::EnvFilter;

pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "info,netlink_packet_route=error",
        1 => "nodelet_kubelet=debug,nodelet_runtime=debug,nodelet_proxy=debug,nodelet_ebpf=debug,info,netlink_packet_route=error",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
