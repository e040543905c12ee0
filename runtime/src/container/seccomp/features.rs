//! What this build's seccomp support covers, for the runtime-spec features document
//! (`nodelet-runc features`), in runc's terms.

use super::plan::Flag;

/// Every action but SCMP_ACT_NOTIFY (no seccomp agent support).
const ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

const OPERATORS: &[&str] =
    &["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"];

/// The architectures of the runtime spec, all known to libseccomp 2.5.
const ARCHS: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];

/// Flags in runc's order, each with the libseccomp API level that supports it (2: TSYNC,
/// 3: LOG, 4: SPEC_ALLOW); libseccomp's level already accounts for the running kernel.
const FLAGS: &[(Flag, u32)] = &[(Flag::Tsync, 2), (Flag::SpecAllow, 4), (Flag::Log, 3)];

/// The seccomp part of the features document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supported {
    pub actions: &'static [&'static str],
    pub operators: &'static [&'static str],
    pub archs: &'static [&'static str],
    /// Every flag this runtime knows, and whether this kernel and libseccomp support it.
    pub flags: Vec<(&'static str, bool)>,
    /// The linked libseccomp's version, e.g. "2.5.4".
    pub libseccomp_version: Option<String>,
}

pub(super) fn flag_name(flag: Flag) -> &'static str {
    match flag {
        Flag::Tsync => "SECCOMP_FILTER_FLAG_TSYNC",
        Flag::Log => "SECCOMP_FILTER_FLAG_LOG",
        Flag::SpecAllow => "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    }
}

/// Probes the kernel through libseccomp (its API level).
pub fn supported() -> Supported {
    let api = libseccomp::get_api();
    Supported {
        actions: ACTIONS,
        operators: OPERATORS,
        archs: ARCHS,
        flags: FLAGS.iter().map(|(flag, level)| (flag_name(*flag), api >= *level)).collect(),
        libseccomp_version: libseccomp::ScmpVersion::current().ok().map(|v| v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_known_arch_maps_to_libseccomp() {
        for name in super::ARCHS {
            let arch: oci_spec::runtime::Arch = name.parse().expect("an arch of the runtime spec");
            let scmp = super::super::build::scmp_arch(arch);
            assert_ne!(scmp, libseccomp::ScmpArch::Native, "{name}");
        }
    }

    #[test]
    fn this_kernel_supports_the_common_flags() {
        let supported = super::supported();
        assert_eq!(supported.flags.len(), 3);
        assert!(supported.flags.contains(&("SECCOMP_FILTER_FLAG_TSYNC", true)), "{:?}", supported.flags);
        assert!(supported.libseccomp_version.is_some());
    }
}
