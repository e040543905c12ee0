//! `process.apparmorProfile` and `process.selinuxLabel`: applied at exec through
//! /proc/self/attr, as runc does; asked for on a host without that security module, they are
//! an error naming the field rather than silently ignored.

use std::path::Path;

use oci_spec::runtime::Process;

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("process.apparmorProfile {0:?} is set but AppArmor is not enabled on this host")]
    NoAppArmor(String),
    #[error("process.selinuxLabel {0:?} is set but SELinux is not enabled on this host")]
    NoSelinux(String),
    #[error("cannot set the {what} {value:?} for exec")]
    Apply {
        what: &'static str,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

fn apparmor_profile(process: &Process) -> Option<&str> {
    process.apparmor_profile().as_deref().filter(|p| !p.is_empty())
}

fn selinux_label(process: &Process) -> Option<&str> {
    process.selinux_label().as_deref().filter(|l| !l.is_empty())
}

/// runc's test: securityfs shows AppArmor and the module says it is enabled.
fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").is_dir()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'))
}

/// selinuxfs is mounted where libselinux looks for it.
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Refuse what the host cannot do, before anything is made.
pub(crate) fn validate(process: &Process) -> Result<(), LsmError> {
    if let Some(profile) = apparmor_profile(process) {
        if !apparmor_enabled() {
            return Err(LsmError::NoAppArmor(profile.to_string()));
        }
    }
    if let Some(label) = selinux_label(process) {
        if !selinux_enabled() {
            return Err(LsmError::NoSelinux(label.to_string()));
        }
    }
    Ok(())
}

/// Ask the kernel to switch to the profile and label at the next execve.
pub(crate) fn apply_on_exec(process: &Process) -> Result<(), LsmError> {
    validate(process)?;
    if let Some(profile) = apparmor_profile(process) {
        // The AppArmor stacking interface first, then the legacy one, as libapparmor.
        let text = format!("exec {profile}");
        std::fs::write("/proc/self/attr/apparmor/exec", &text)
            .or_else(|_| std::fs::write("/proc/self/attr/exec", &text))
            .map_err(|source| LsmError::Apply { what: "AppArmor profile", value: profile.to_string(), source })?;
    }
    if let Some(label) = selinux_label(process) {
        std::fs::write("/proc/self/attr/exec", label).map_err(|source| LsmError::Apply {
            what: "SELinux label",
            value: label.to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_ask_for_nothing() {
        let mut process = Process::default();
        process.set_apparmor_profile(Some(String::new()));
        process.set_selinux_label(Some(String::new()));
        assert!(validate(&process).is_ok());
    }
}
