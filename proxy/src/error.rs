//! Errors of the proxy.

use std::path::PathBuf;

use nodelet_ebpf::{EbpfError, Frontend};

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
