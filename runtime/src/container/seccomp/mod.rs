//! `linux.seccomp`: the spec's profile compiled into a libseccomp filter while the init checks
//! the spec (so a bad profile fails `create`), and loaded as late as runc loads it: just before
//! exec when no_new_privs is set, otherwise before the capabilities are dropped (loading a
//! filter without no_new_privs needs CAP_SYS_ADMIN).

mod build;
mod features;
mod plan;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use libseccomp::ScmpFilterContext;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, Spec};

pub use features::{supported, Supported};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp {what}: user notification (SCMP_ACT_NOTIFY) is not supported")]
    Notify { what: String },
    #[error(
        "seccomp errnoRet {errno} of {what}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return an errno, not {action}"
    )]
    ErrnoRetNotAllowed { what: String, action: LinuxSeccompAction, errno: u32 },
    #[error("seccomp errnoRet {errno} of {what} is out of range (at most 65535)")]
    ErrnoRange { what: String, errno: u32 },
    #[error("seccomp argument index {index} of {names} is out of range (syscalls have 6 arguments, 0 to 5)")]
    ArgIndex { names: String, index: usize },
    #[error("empty syscall name in {names:?} of the seccomp profile")]
    EmptyName { names: String },
    #[error("cannot create a seccomp filter")]
    Create(#[source] libseccomp::error::SeccompError),
    #[error("cannot add architecture {arch} to the seccomp filter")]
    Arch {
        arch: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot set seccomp filter attribute {attribute}")]
    Attribute {
        attribute: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot set seccomp flag {flag} (not supported by this kernel or libseccomp?)")]
    Flag {
        flag: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot add the seccomp rule for syscall {syscall}")]
    Rule {
        syscall: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot generate the seccomp program")]
    Export(#[source] std::io::Error),
    #[error("the seccomp program has {instructions} instructions, more than the kernel's limit of {limit}")]
    TooLarge { instructions: usize, limit: usize },
    #[error("cannot load the seccomp filter")]
    Load(#[source] libseccomp::error::SeccompError),
}

/// A compiled filter, ready to load.
pub(crate) struct Filter {
    ctx: ScmpFilterContext,
}

/// Compile the spec's profile, if it has one. Touches no process state.
pub(crate) fn compile(spec: &Spec) -> Result<Option<Filter>, SeccompError> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).map(compile_profile).transpose()
}

/// Compile one profile (the container's, for a process exec'd into it). Touches no process
/// state.
pub(crate) fn compile_profile(seccomp: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let plan = plan::translate(seccomp)?;
    let ctx = build::build(&plan)?;
    build::check_size(&ctx)?;
    Ok(Filter { ctx })
}

/// How many compiled profiles a process keeps: pods mostly share a few (RuntimeDefault).
const CACHE_ENTRIES: usize = 32;

thread_local! {
    /// Profiles compiled by this (single-threaded) monitor, by their JSON: compiling the
    /// default profile takes ~20 ms, and the monitor answers one create at a time, so a burst
    /// of pods would wait on it in turn. Clones of the monitor inherit a copy and load it.
    static COMPILED: RefCell<HashMap<String, Rc<Filter>>> = RefCell::new(HashMap::new());
}

/// The spec's profile compiled, from this process's cache when it was compiled before.
/// `None` when the spec has no profile or it does not compile (the init compiles it again
/// and reports the error as before).
pub(crate) fn compile_cached(spec: &Spec) -> Option<Rc<Filter>> {
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref())?;
    let key = serde_json::to_string(seccomp).ok()?;
    if let Some(filter) = COMPILED.with(|cache| cache.borrow().get(&key).cloned()) {
        return Some(filter);
    }
    let filter = Rc::new(compile_profile(seccomp).ok()?);
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, filter.clone());
    });
    Some(filter)
}

impl Filter {
    /// Install the filter on this process; every later syscall, exec included, goes through it.
    pub(crate) fn load(&self) -> Result<(), SeccompError> {
        self.ctx.load().map_err(SeccompError::Load)
    }
}
