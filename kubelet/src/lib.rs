//! nodelet's kubelet: node registration and heartbeats, pod lifecycle, host checks, and the
//! wiring that ties runtime and proxy into the `nodelet` binary.
#![forbid(unsafe_code)]

pub mod agent;
pub mod doctor;
pub mod events;
pub mod host_runtime;
pub mod image_gc;
pub mod kubelet_config;
pub mod local;
pub mod node;
pub mod pod;
pub mod serve;
pub mod standalone;

/// nodelet's version, reported as the kubelet and container runtime version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
