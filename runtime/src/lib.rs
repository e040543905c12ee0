//! nodelet's native container runtime: OCI images, containers (namespaces, mounts, cgroups)
//! parented by one node-wide monitor, and pod networks. Knows nothing of Kubernetes.
//!
//! All `unsafe` of the product lives in [`sys`].

pub mod cgroups;
pub mod container;
mod error_chain;
pub mod exec;
pub mod go_duration;
pub mod image;
pub mod monitor;
pub mod mountinfo;
pub mod network;
pub mod runc;
pub mod sys;

pub use error_chain::error_chain;
