//! Capabilities from `process.capabilities`. The bounding set is dropped while still root;
//! the other sets are applied after the uid change (PR_SET_KEEPCAPS keeps them across it).

use std::str::FromStr;

use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0}")]
    Unknown(String),
    #[error("cannot set {set} capabilities")]
    Set {
        set: String,
        #[source]
        source: caps::errors::CapsError,
    },
}

fn to_caps(set: Option<&Capabilities>) -> Result<CapsHashSet, CapsError> {
    set.into_iter()
        .flatten()
        .map(|cap| {
            let name = format!("CAP_{cap}");
            caps::Capability::from_str(&name).map_err(|_| CapsError::Unknown(name))
        })
        .collect()
}

fn set(which: CapSet, wanted: &CapsHashSet) -> Result<(), CapsError> {
    caps::set(None, which, wanted).map_err(|source| CapsError::Set { set: format!("{which:?}").to_lowercase(), source })
}

/// Drop from the bounding set every capability the spec does not list. No spec
/// capabilities at all means "leave them as they are", as runc does.
pub(crate) fn limit_bounding_set(spec_caps: Option<&LinuxCapabilities>) -> Result<(), CapsError> {
    let Some(spec_caps) = spec_caps else {
        return Ok(());
    };
    let keep = to_caps(spec_caps.bounding().as_ref())?;
    for cap in caps::all() {
        // Capabilities this kernel does not know cannot be dropped (EINVAL): skip those.
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| CapsError::Set { set: "bounding".to_string(), source })?;
        }
    }
    Ok(())
}

/// Set permitted, inheritable, effective and ambient exactly as the spec lists them.
pub(crate) fn apply_process_sets(spec_caps: Option<&LinuxCapabilities>) -> Result<(), CapsError> {
    let Some(spec_caps) = spec_caps else {
        return Ok(());
    };
    let permitted = to_caps(spec_caps.permitted().as_ref())?;
    let effective = to_caps(spec_caps.effective().as_ref())?;
    let inheritable = to_caps(spec_caps.inheritable().as_ref())?;
    let ambient = to_caps(spec_caps.ambient().as_ref())?;
    // Each capset call must keep effective within permitted and may only shrink permitted:
    // inheritable first (CAP_SETPCAP is still effective), then effective, then permitted.
    set(CapSet::Inheritable, &inheritable)?;
    set(CapSet::Effective, &effective)?;
    let permitted: CapsHashSet = permitted.union(&effective).copied().collect();
    set(CapSet::Permitted, &permitted)?;
    // Ambient capabilities must be both permitted and inheritable; the kernel refuses others.
    let ambient: CapsHashSet = ambient.intersection(&permitted).filter(|c| inheritable.contains(c)).copied().collect();
    set(CapSet::Ambient, &ambient)
}
