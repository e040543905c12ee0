//! The datapath the reconciler writes the service table to, behind one trait.

mod ebpf;
mod failing;
mod fake;
mod ingress_ebpf;
mod plan;

pub use self::ebpf::EbpfDatapath;
pub use self::failing::FailingDatapath;
pub use self::fake::{Fake, FakeDatapath, FakeIngress};
pub use self::ingress_ebpf::EbpfIngress;

use crate::error::ProxyError;
use crate::table::{IngressDelta, IngressTable, ServiceTable, TableDelta};

/// What one `apply` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Frontends written (new or with changed backends).
    pub upserted: usize,
    /// Frontends removed.
    pub removed: usize,
    /// Frontends already as desired, not written.
    pub unchanged: usize,
}

/// Something that load-balances frontends to backends.
pub trait Datapath: Send {
    /// Make the datapath match `desired`, writing only the frontends that
    /// differ from what this datapath programmed before. On error, what was
    /// written stays recorded, so the next apply retries only the rest.
    fn apply(&mut self, desired: &ServiceTable) -> Result<SyncStats, ProxyError>;

    /// Write the frontends of `delta` (the changes from the table of the last successful
    /// `apply` or `apply_delta` to the desired one), each only if it differs from what
    /// this datapath programmed; nothing else is looked at. After an error, the next
    /// update must be a full `apply`: the delta's failed writes are not retried.
    fn apply_delta(&mut self, delta: &TableDelta) -> Result<SyncStats, ProxyError>;
}

/// Something that load-balances the traffic entering the node (the ingress table: NodePort,
/// externalIP and LoadBalancer frontends with this node's and other nodes' endpoints apart),
/// beside the [`Datapath`]; same contract.
pub trait IngressDatapath: Send {
    /// Make the datapath match `desired`, writing only the frontends that differ from what
    /// it programmed before; on error, what was written stays recorded.
    fn apply(&mut self, desired: &IngressTable) -> Result<SyncStats, ProxyError>;

    /// Write the frontends of `delta`, each only if it differs from what this datapath
    /// programmed. After an error, the next update must be a full `apply`.
    fn apply_delta(&mut self, delta: &IngressDelta) -> Result<SyncStats, ProxyError>;
}

impl SyncStats {
    /// Both datapaths' counts together.
    pub(crate) fn add(self, other: SyncStats) -> SyncStats {
        SyncStats {
            upserted: self.upserted + other.upserted,
            removed: self.removed + other.removed,
            unchanged: self.unchanged + other.unchanged,
        }
    }
}
