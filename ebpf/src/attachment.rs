//! Attaching the load-balancer's programs to a cgroup2 directory, all or none, and
//! detaching them.

use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Link};
use aya::Ebpf;

use crate::error::EbpfError;
use crate::object::{ProgramSpec, PROGRAMS};
use crate::pin;
use crate::sys;

/// The program `spec` names, as a cgroup sock_addr program.
pub(crate) fn program_mut<'a>(ebpf: &'a mut Ebpf, spec: &ProgramSpec) -> Result<&'a mut CgroupSockAddr, EbpfError> {
    let program = ebpf.program_mut(spec.name).ok_or(EbpfError::ProgramMissing { name: spec.name })?;
    program.try_into().map_err(|source| EbpfError::Program { name: spec.name, source: Box::new(source) })
}

/// Attach every program with links this process owns. On error the programs attached so
/// far are detached again (the partial guard is dropped).
pub(crate) fn attach_owned(ebpf: &mut Ebpf, cgroup: &File, path: &Path) -> Result<CgroupAttachment, EbpfError> {
    let mut attachment = CgroupAttachment::new(path);
    for spec in &PROGRAMS {
        let attach_error =
            |source| EbpfError::Attach { name: spec.name, path: path.to_path_buf(), source: Box::new(source) };
        let program = program_mut(ebpf, spec)?;
        // A bpf_link (kernel >= 5.7): it lives as long as its fd, which the guard owns,
        // and never replaces programs others attached there.
        let link_id = program.attach(cgroup, CgroupAttachMode::Single).map_err(attach_error)?;
        let link = program.take_link(link_id).map_err(attach_error)?;
        attachment.links.push(AttachedProgram { spec: *spec, link: Attached::Owned(link) });
    }
    tracing::info!(cgroup = %path.display(), "attached the load-balancer (connect, sendmsg, recvmsg, getpeername; IPv4 and IPv6)");
    Ok(attachment)
}

/// Attach every program with links pinned in `pin_dir`. On error the links this call
/// created are detached and unpinned again; links of an earlier run it already reused keep
/// the programs just swapped in, which use the same pinned maps as the ones they replaced.
pub(crate) fn attach_pinned(
    ebpf: &mut Ebpf,
    cgroup: &File,
    path: &Path,
    pin_dir: &Path,
) -> Result<CgroupAttachment, EbpfError> {
    let cgroup_id = pin::cgroup_id(cgroup, path)?;
    let mut attachment = CgroupAttachment::new(path);
    for spec in &PROGRAMS {
        match attach_one_pinned(ebpf, spec, cgroup, cgroup_id, path, pin_dir) {
            Ok(link) => attachment.links.push(AttachedProgram { spec: *spec, link }),
            Err(error) => {
                attachment.roll_back_created_pins();
                return Err(error);
            }
        }
    }
    Ok(attachment)
}

/// Reuse the link of `spec` pinned in `pin_dir` when it is attached to this cgroup at the
/// same hook, swapping in the program just loaded (one BPF_LINK_UPDATE, so no syscall goes
/// untranslated, and the running program is always one using the pinned maps). A pinned
/// link of another cgroup, or a defunct one, is replaced.
fn attach_one_pinned(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    cgroup: &File,
    cgroup_id: u64,
    path: &Path,
    pin_dir: &Path,
) -> Result<Attached, EbpfError> {
    let link_path = pin_dir.join(spec.link_pin);
    let pin_error = |operation, source| EbpfError::Pin { path: link_path.clone(), operation, source };
    let program = program_mut(ebpf, spec)?;
    let prog_fd =
        program.fd().map_err(|source| EbpfError::Program { name: spec.name, source: Box::new(source) })?.as_fd();
    if let Some(existing) = pin::open_link(&link_path)? {
        let info = existing.info;
        if info.cgroup_id == cgroup_id && info.attach_type == spec.attach_type {
            sys::link_update(existing.fd.as_fd(), prog_fd).map_err(|e| pin_error("replace the program of", e))?;
            tracing::info!(cgroup = %path.display(), link = info.id, hook = spec.hook, "reusing the pinned link, program replaced");
            return Ok(Attached::Pinned { link: existing.fd, pin: link_path, created: false });
        }
        tracing::warn!(
            link = info.id,
            cgroup_id = info.cgroup_id,
            hook = spec.hook,
            "the pinned link is not attached to {}: replacing it",
            path.display()
        );
        // A defunct link (its cgroup removed) refuses detach; unpinning frees it anyway.
        if let Err(error) = sys::link_detach(existing.fd.as_fd()) {
            tracing::debug!(%error, "detach the previous pinned link");
        }
        fs::remove_file(&link_path).map_err(|e| pin_error("unpin", e))?;
    }
    let link = sys::link_create_cgroup(prog_fd, cgroup.as_fd(), spec.attach_type)
        .map_err(|source| EbpfError::AttachPinned { name: spec.name, path: path.to_path_buf(), source })?;
    if let Err(error) = sys::obj_pin(link.as_fd(), &link_path) {
        // Dropping `link` detaches it: nothing is left half-done.
        return Err(pin_error("pin", error));
    }
    tracing::info!(cgroup = %path.display(), pin = %link_path.display(), hook = spec.hook, "attached and pinned");
    Ok(Attached::Pinned { link, pin: link_path, created: true })
}

/// How one program is attached.
enum Attached {
    /// Owned by this process: detached with the guard.
    Owned(CgroupSockAddrLink),
    /// Pinned in bpffs at `pin`: the fd is only our handle, the pin keeps the link attached.
    /// `created`: by this attach (else reused from an earlier run).
    Pinned { link: OwnedFd, pin: PathBuf, created: bool },
}

struct AttachedProgram {
    spec: ProgramSpec,
    link: Attached,
}

/// The load-balancer's programs attached to one cgroup; detached when dropped or by
/// [`detach`](Self::detach), unless pinned (see [`SockLb::load_pinned`](crate::SockLb::load_pinned)).
#[must_use = "dropping the attachment detaches the programs (unless pinned)"]
pub struct CgroupAttachment {
    /// In attach order.
    links: Vec<AttachedProgram>,
    cgroup: PathBuf,
}

impl CgroupAttachment {
    fn new(cgroup: &Path) -> CgroupAttachment {
        CgroupAttachment { links: Vec::with_capacity(PROGRAMS.len()), cgroup: cgroup.to_path_buf() }
    }

    /// The cgroup2 directory the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Whether the attachment is pinned (it stays when this guard is dropped).
    pub fn is_pinned(&self) -> bool {
        self.links.iter().any(|attached| matches!(attached.link, Attached::Pinned { .. }))
    }

    /// Whether every link was one pinned by an earlier run, reused (its program swapped).
    pub fn reused_pinned_link(&self) -> bool {
        !self.links.is_empty()
            && self.links.iter().all(|attached| matches!(attached.link, Attached::Pinned { created: false, .. }))
    }

    /// Detach now, reporting the first failure (dropping detaches too, but only logs). A
    /// pinned attachment is only released: use [`SockLb::unpin_and_detach`](crate::SockLb::unpin_and_detach)
    /// to remove it.
    pub fn detach(mut self) -> Result<(), EbpfError> {
        self.detach_owned()
    }

    /// Detach the owned links, the forward hooks first: replies to what they translated
    /// are still translated back until the very end. Keeps going past a failure: the first
    /// is returned, later ones are logged.
    fn detach_owned(&mut self) -> Result<(), EbpfError> {
        let mut first_error = None;
        while let Some(attached) = self.links.pop() {
            let Attached::Owned(link) = attached.link else {
                continue;
            };
            let (name, path) = (attached.spec.name, self.cgroup.display());
            match link.detach() {
                Ok(()) => tracing::debug!(cgroup = %path, hook = attached.spec.hook, "detached"),
                Err(source) if first_error.is_none() => {
                    first_error = Some(EbpfError::Detach { name, path: self.cgroup.clone(), source: Box::new(source) });
                }
                Err(source) => tracing::warn!(error = %source, cgroup = %path, program = name, "detach"),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Undo a failed pinned attach: detach and unpin the links it created.
    fn roll_back_created_pins(&mut self) {
        while let Some(attached) = self.links.pop() {
            let Attached::Pinned { link, pin, created: true } = attached.link else {
                continue;
            };
            if let Err(error) = sys::link_detach(link.as_fd()) {
                tracing::warn!(%error, pin = %pin.display(), "roll back: detach the link just pinned");
            }
            if let Err(error) = fs::remove_file(&pin) {
                tracing::warn!(%error, pin = %pin.display(), "roll back: unpin the link just pinned");
            }
        }
    }
}

impl Drop for CgroupAttachment {
    /// Detaches owned links (a pinned attachment has none).
    fn drop(&mut self) {
        if let Err(error) = self.detach_owned() {
            tracing::warn!(error = %error, "detach the load-balancer");
        }
    }
}
