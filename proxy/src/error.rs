//! Errors of the proxy.

use std::path::PathBuf;

use nodelet_ebpf::{EbpfError, Frontend, NodePortError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy config: {reason}: {path}")]
    Config { path: PathBuf, reason: &'static str },
    #[error("load the ebpf load-balancer")]
    Load(#[source] EbpfError),
    #[error("attach the ebpf load-balancer to {path}")]
    Attach {
        path: PathBuf,
        #[source]
        source: EbpfError,
    },
    #[error("program {frontend} into the datapath ({failed} of {attempted} changes failed)")]
    Program {
        frontend: Frontend,
        failed: usize,
        attempted: usize,
        #[source]
        source: EbpfError,
    },
    #[error("read the programmed services back from the datapath")]
    ReadBack(#[source] EbpfError),
    #[error("invalid {what} {device:?}: {reason}")]
    Device { what: &'static str, device: String, reason: &'static str },
    #[error("load the ingress (tc) load-balancer")]
    LoadIngress(#[source] NodePortError),
    #[error("attach the ingress load-balancer to devices {devices} and pod bridge {bridge}")]
    AttachIngress {
        devices: String,
        bridge: String,
        #[source]
        source: NodePortError,
    },
    #[error("program {frontend} into the ingress datapath ({failed} of {attempted} changes failed)")]
    ProgramIngress {
        frontend: Frontend,
        failed: usize,
        attempted: usize,
        #[source]
        source: NodePortError,
    },
    #[error("read the programmed services back from the ingress datapath")]
    ReadBackIngress(#[source] NodePortError),
    #[error("datapath refused the update: {reason}")]
    DatapathRefused { reason: String },
    #[error("parse manifest {origin}")]
    Manifest {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("manifest {origin}: document {index} is not a valid {kind}")]
    ManifestObject {
        origin: String,
        index: usize,
        kind: String,
        #[source]
        source: serde_yaml::Error,
    },
}
