//! The compiled BPF object, embedded at build time.

/// `sock_lb.bpf.o`, aligned as the ELF parser needs; empty when built with
/// `NODELET_SKIP_BPF_BUILD=1`.
pub(crate) static SOCK_LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.bpf.o"));

/// `sock_lb_pinned.bpf.o`: the same program, its maps declared `LIBBPF_PIN_BY_NAME`.
pub(crate) static SOCK_LB_PINNED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb_pinned.bpf.o"));

/// Names inside the object (see `bpf/sock_lb.bpf.c`).
pub(crate) const CONNECT4_PROGRAM: &str = "sock4_connect";
pub(crate) const SERVICES_MAP: &str = "lb4_services";
/// Name of the pinned cgroup link inside a pin directory (maps are pinned by their names).
pub(crate) const CONNECT4_LINK_PIN: &str = "sock4_connect_link";
