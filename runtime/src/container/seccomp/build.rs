//! A [`Plan`] into a libseccomp filter context: architectures, flags, syscall names resolved
//! by libseccomp (names it does not know are skipped, as runc does), and rules.

use std::io::{Seek, SeekFrom};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::sys::memfd::{memfd_create, MFdFlags};
use oci_spec::runtime::Arch;

use super::plan::{Action, Condition, Flag, Op, Plan};
use super::SeccompError;

/// BPF_MAXINSNS: the kernel refuses longer classic BPF programs.
const MAX_INSTRUCTIONS: usize = 4096;
/// Past this many rules runc asks libseccomp for a binary tree of syscalls (libseccomp up to
/// 2.5.4 misbehaves with the tree and no rules).
const TREE_THRESHOLD: usize = 32;

pub(super) fn build(plan: &Plan) -> Result<ScmpFilterContext, SeccompError> {
    let mut ctx = ScmpFilterContext::new(action(plan.default)).map_err(SeccompError::Create)?;
    // libseccomp sets no_new_privs on load by default; the init sets it only when the spec asks.
    ctx.set_ctl_nnp(false).map_err(|source| SeccompError::Attribute { attribute: "SCMP_FLTATR_CTL_NNP", source })?;
    for arch in &plan.arches {
        ctx.add_arch(scmp_arch(*arch)).map_err(|source| SeccompError::Arch { arch: arch.to_string(), source })?;
    }
    for flag in &plan.flags {
        set_flag(&mut ctx, *flag)?;
    }
    if plan.rules.len() > TREE_THRESHOLD {
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!("seccomp binary tree optimization not available: {e}");
        }
    }
    let mut unknown = Vec::new();
    for rule in &plan.rules {
        let Ok(syscall) = ScmpSyscall::from_name(&rule.syscall) else {
            unknown.push(rule.syscall.as_str());
            continue;
        };
        let conditions: Vec<ScmpArgCompare> = rule.conditions.iter().map(compare).collect();
        ctx.add_rule_conditional(action(rule.action), syscall, &conditions)
            .map_err(|source| SeccompError::Rule { syscall: rule.syscall.clone(), source })?;
    }
    if !unknown.is_empty() {
        unknown.dedup();
        // One line per container: a profile written for a newer kernel is normal (runc logs
        // these at debug), a typo in a name is worth seeing.
        tracing::info!(syscalls = ?unknown, "seccomp: ignoring syscalls unknown to libseccomp");
    }
    Ok(ctx)
}

/// Generate the program once now, so a filter the kernel would refuse for its size fails
/// `create` rather than the exec after `start`. Returns the number of instructions.
pub(super) fn check_size(ctx: &ScmpFilterContext) -> Result<usize, SeccompError> {
    let io = |e: nix::Error| SeccompError::Export(e.into());
    let fd = memfd_create("nodelet-seccomp", MFdFlags::MFD_CLOEXEC).map_err(io)?;
    ctx.export_bpf(&fd).map_err(|e| SeccompError::Export(std::io::Error::other(e)))?;
    let bytes = std::fs::File::from(fd).seek(SeekFrom::End(0)).map_err(SeccompError::Export)?;
    let instructions = usize::try_from(bytes).unwrap_or(usize::MAX) / std::mem::size_of::<libc::sock_filter>();
    if instructions > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge { instructions, limit: MAX_INSTRUCTIONS });
    }
    Ok(instructions)
}

fn set_flag(ctx: &mut ScmpFilterContext, flag: Flag) -> Result<(), SeccompError> {
    let (name, result) = match flag {
        Flag::Tsync => ("SECCOMP_FILTER_FLAG_TSYNC", ctx.set_ctl_tsync(true)),
        Flag::Log => ("SECCOMP_FILTER_FLAG_LOG", ctx.set_ctl_log(true)),
        Flag::SpecAllow => ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", ctx.set_ctl_ssb(true)),
    };
    result.map(|_| ()).map_err(|source| SeccompError::Flag { flag: name.to_string(), source })
}

fn action(action: Action) -> ScmpAction {
    match action {
        Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno(errno) => ScmpAction::Errno(i32::from(errno)),
        Action::Trace(value) => ScmpAction::Trace(value),
        Action::Log => ScmpAction::Log,
        Action::Allow => ScmpAction::Allow,
    }
}

fn compare(condition: &Condition) -> ScmpArgCompare {
    let op = match condition.op {
        Op::Ne => ScmpCompareOp::NotEqual,
        Op::Lt => ScmpCompareOp::Less,
        Op::Le => ScmpCompareOp::LessOrEqual,
        Op::Eq => ScmpCompareOp::Equal,
        Op::Ge => ScmpCompareOp::GreaterEqual,
        Op::Gt => ScmpCompareOp::Greater,
        Op::MaskedEq { mask } => ScmpCompareOp::MaskedEqual(mask),
    };
    ScmpArgCompare::new(condition.index, op, condition.value)
}

pub(super) fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::container::seccomp::plan::translate;

    fn plan(json: serde_json::Value) -> Plan {
        translate(&serde_json::from_value(json).expect("profile")).expect("translates")
    }

    /// libseccomp's pseudo filter code: the readable form of what would be loaded.
    fn pfc(ctx: &ScmpFilterContext) -> String {
        let fd = memfd_create("pfc", MFdFlags::MFD_CLOEXEC).unwrap();
        ctx.export_pfc(&fd).unwrap();
        let mut file = std::fs::File::from(fd);
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn rules_become_filter_code() {
        let ctx = build(&plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
                { "names": ["kill"], "action": "SCMP_ACT_ERRNO",
                    "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] },
                { "names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS" },
            ]
        })))
        .expect("builds");
        let code = pfc(&ctx);
        assert!(code.contains("\"mkdir\"") && code.contains("action ERRNO(13);"), "{code}");
        assert!(code.contains("\"kill\"") && code.contains("$a1"), "kill's signal argument is checked: {code}");
        assert!(code.contains("\"ptrace\"") && code.contains("action KILL_PROCESS;"), "{code}");
        assert!(code.contains("# default action\n  action ALLOW;"), "{code}");
        assert!(check_size(&ctx).expect("fits") > 4);
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let ctx = build(&plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["no_such_syscall", "read"], "action": "SCMP_ACT_ALLOW" }]
        })))
        .expect("builds despite the unknown name");
        let code = pfc(&ctx);
        assert!(code.contains("\"read\"") && !code.contains("no_such_syscall"), "{code}");
        assert!(code.contains("action ERRNO(1);"), "{code}");
    }

    #[test]
    fn extra_arches_get_their_own_filter() {
        let ctx = build(&plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" }]
        })))
        .expect("builds");
        let code = pfc(&ctx);
        assert!(code.matches("# filter for arch").count() >= 3, "{code}");
    }

    #[test]
    fn supported_flags_are_set() {
        let supported = crate::container::seccomp::supported();
        let mut plan = plan(serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW" }));
        plan.flags = [Flag::Tsync, Flag::Log, Flag::SpecAllow]
            .into_iter()
            .filter(|f| supported.flags.iter().any(|(flag, ok)| *ok && *flag == super::super::features::flag_name(*f)))
            .collect();
        let ctx = build(&plan).expect("builds");
        assert_eq!(ctx.get_ctl_log().unwrap(), plan.flags.contains(&Flag::Log));
        assert!(!ctx.get_ctl_nnp().unwrap(), "no_new_privs is the spec's business");
    }
}
