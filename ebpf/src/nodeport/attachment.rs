//! The tc programs attached to the node's interfaces (tcx links where the kernel has them,
//! else a clsact filter), owned by this process: detached when dropped. Not pinned: a
//! restarted agent attaches afresh (conntrack starts empty then).

use std::fmt;

use aya::programs::tc::{self, SchedClassifierLink, TcAttachType};
use aya::programs::{Link, SchedClassifier};
use aya::util::KernelVersion;
use aya::Ebpf;

use super::error::NodePortError;

/// One program's link on one interface.
struct AttachedProgram {
    program: &'static str,
    interface: String,
    link: SchedClassifierLink,
}

/// The load-balancer's programs on the node's interfaces; detached when dropped or by
/// [`detach`](Self::detach), the external interfaces first, so replies of the flows
/// already translated are translated back until the very end.
#[must_use = "dropping the attachment detaches the programs"]
pub struct TcAttachment {
    /// In attach order: the pod-facing interfaces, then the external ones.
    links: Vec<AttachedProgram>,
}

impl TcAttachment {
    pub(super) fn new() -> TcAttachment {
        TcAttachment { links: Vec::new() }
    }

    /// Attach `program` (already loaded) to the ingress of `interface`, an interface of the
    /// calling thread's network namespace.
    pub(super) fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        program: &'static str,
        interface: &str,
    ) -> Result<(), NodePortError> {
        let attach_error =
            |source| NodePortError::Attach { name: program, interface: interface.to_owned(), source: Box::new(source) };
        let classifier = classifier_mut(ebpf, program)?;
        if !has_tcx() {
            // The netlink fallback needs the clsact qdisc; it may be there already.
            if let Err(error) = tc::qdisc_add_clsact(interface) {
                tracing::debug!(%error, interface, "add the clsact qdisc");
            }
        }
        let id = classifier.attach(interface, TcAttachType::Ingress).map_err(attach_error)?;
        let link = classifier.take_link(id).map_err(attach_error)?;
        tracing::info!(interface, program, tcx = has_tcx(), "attached");
        self.links.push(AttachedProgram { program, interface: interface.to_owned(), link });
        Ok(())
    }

    /// The interfaces with one of the programs attached, in attach order, with the program.
    pub fn interfaces(&self) -> Vec<(&str, &'static str)> {
        self.links.iter().map(|attached| (attached.interface.as_str(), attached.program)).collect()
    }

    /// Detach now, reporting the first failure (dropping detaches too, but only logs).
    /// Keeps going past a failure.
    pub fn detach(mut self) -> Result<(), NodePortError> {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Result<(), NodePortError> {
        let mut first_error = None;
        while let Some(attached) = self.links.pop() {
            let AttachedProgram { program, interface, link } = attached;
            match link.detach() {
                Ok(()) => tracing::debug!(interface, program, "detached"),
                Err(source) if first_error.is_none() => {
                    first_error = Some(NodePortError::Detach { name: program, interface, source: Box::new(source) });
                }
                Err(error) => tracing::warn!(%error, interface, program, "detach"),
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl fmt::Debug for TcAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcAttachment").field("interfaces", &self.interfaces()).finish()
    }
}

impl Drop for TcAttachment {
    fn drop(&mut self) {
        if let Err(error) = self.detach_all() {
            tracing::warn!(%error, "detach the nodeport load-balancer");
        }
    }
}

/// tcx (multi-program tc links, Linux 6.6): what aya's `attach` uses when it is there.
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}

pub(super) fn classifier_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, NodePortError> {
    let program = ebpf.program_mut(name).ok_or(NodePortError::ProgramMissing { name })?;
    program.try_into().map_err(|source| NodePortError::Program { name, source: Box::new(source) })
}
