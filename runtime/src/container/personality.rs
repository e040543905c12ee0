//! `linux.personality`: the execution domain (LINUX, or LINUX32 for a 32-bit `uname -m`).

use nix::sys::personality::{self, Persona};
use oci_spec::runtime::{LinuxPersonality, LinuxPersonalityDomain};

/// From linux/personality.h (libc does not export them).
const PER_LINUX: i32 = 0x0000;
const PER_LINUX32: i32 = 0x0008;

#[derive(Debug, thiserror::Error)]
#[error("cannot set personality {domain}")]
pub struct PersonalityError {
    domain: LinuxPersonalityDomain,
    #[source]
    source: nix::Error,
}

pub(super) fn set(personality: Option<&LinuxPersonality>) -> Result<(), PersonalityError> {
    let Some(personality) = personality else {
        return Ok(());
    };
    if let Some(flags) = personality.flags().as_ref().filter(|f| !f.is_empty()) {
        // The spec defines no flag values yet; runc ignores them with a warning too.
        tracing::warn!(?flags, "ignoring unsupported personality flags");
    }
    let domain = personality.domain();
    personality::set(persona(domain)).map(drop).map_err(|source| PersonalityError { domain, source })
}

fn persona(domain: LinuxPersonalityDomain) -> Persona {
    Persona::from_bits_retain(match domain {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_the_kernel_values() {
        assert_eq!(persona(LinuxPersonalityDomain::PerLinux).bits(), 0);
        assert_eq!(persona(LinuxPersonalityDomain::PerLinux32).bits(), 8);
    }
}
