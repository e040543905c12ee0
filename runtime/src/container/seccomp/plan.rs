//! From the spec's `linux.seccomp` to a checked, flat list of rules, with runc's rules of
//! interpretation. Pure: no libseccomp here, so every decision is unit-tested.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};

use super::SeccompError;

/// The kernel passes six syscall arguments.
const MAX_ARGS: usize = 6;

/// What the filter returns for a syscall (SCMP_ACT_KILL is KILL_THREAD, as in libseccomp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    KillThread,
    KillProcess,
    Trap,
    Errno(u16),
    Trace(u16),
    Log,
    Allow,
}

/// A comparison of one syscall argument; `MaskedEq` is `(arg & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq { mask: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Condition {
    pub index: u32,
    pub op: Op,
    pub value: u64,
}

/// One libseccomp rule: `action` when `syscall` is called and every condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub syscall: String,
    pub action: Action,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub default: Action,
    /// Besides the native one, which a filter always has.
    pub arches: Vec<Arch>,
    pub flags: BTreeSet<Flag>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Flag {
    Tsync,
    Log,
    SpecAllow,
}

pub(super) fn translate(seccomp: &LinuxSeccomp) -> Result<Plan, SeccompError> {
    if let Some(path) = seccomp.listener_path() {
        return Err(SeccompError::Notify { what: format!("listenerPath {}", path.display()) });
    }
    let default = action(seccomp.default_action(), seccomp.default_errno_ret(), "defaultAction")?;
    let mut rules = Vec::new();
    for syscall in seccomp.syscalls().iter().flatten() {
        rules.extend(syscall_rules(syscall, default)?);
    }
    Ok(Plan {
        default,
        arches: seccomp.architectures().clone().unwrap_or_default(),
        flags: seccomp.flags().iter().flatten().map(|f| flag(*f)).collect(),
        rules,
    })
}

/// The rules of one `syscalls` entry: one per name (and per condition, see [`condition_sets`]).
/// A rule whose action is the default one is redundant and dropped, as runc does (libseccomp
/// refuses it).
fn syscall_rules(syscall: &LinuxSyscall, default: Action) -> Result<Vec<Rule>, SeccompError> {
    let names = syscall.names().join(",");
    let action = action(syscall.action(), syscall.errno_ret(), &names)?;
    if syscall.names().iter().any(|n| n.is_empty()) {
        return Err(SeccompError::EmptyName { names });
    }
    let conditions = syscall.args().iter().flatten().map(|a| condition(a, &names)).collect::<Result<Vec<_>, _>>()?;
    if action == default {
        return Ok(Vec::new());
    }
    let sets = condition_sets(conditions);
    Ok(syscall
        .names()
        .iter()
        .flat_map(|name| {
            sets.iter().map(move |conditions| Rule { syscall: name.clone(), action, conditions: conditions.clone() })
        })
        .collect())
}

/// Conditions on distinct arguments must all hold (one rule). Several conditions on the same
/// argument cannot all be put in one libseccomp rule: like runc, make one rule per condition,
/// so that any of them matches (Docker's profile relies on this for `personality`).
fn condition_sets(conditions: Vec<Condition>) -> Vec<Vec<Condition>> {
    let distinct: BTreeSet<u32> = conditions.iter().map(|c| c.index).collect();
    if distinct.len() == conditions.len() {
        vec![conditions]
    } else {
        conditions.into_iter().map(|c| vec![c]).collect()
    }
}

/// `errnoRet` (default EPERM) only goes with the actions that return an errno; `what` names
/// the rule in errors.
fn action(action: LinuxSeccompAction, errno_ret: Option<u32>, what: &str) -> Result<Action, SeccompError> {
    let errno = || {
        let errno = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(errno).map_err(|_| SeccompError::ErrnoRange { what: what.to_string(), errno })
    };
    let plain = |a: Action| match errno_ret {
        Some(errno) => Err(SeccompError::ErrnoRetNotAllowed { what: what.to_string(), action, errno }),
        None => Ok(a),
    };
    match action {
        LinuxSeccompAction::ScmpActErrno => Ok(Action::Errno(errno()?)),
        LinuxSeccompAction::ScmpActTrace => Ok(Action::Trace(errno()?)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => plain(Action::KillThread),
        LinuxSeccompAction::ScmpActKillProcess => plain(Action::KillProcess),
        LinuxSeccompAction::ScmpActTrap => plain(Action::Trap),
        LinuxSeccompAction::ScmpActLog => plain(Action::Log),
        LinuxSeccompAction::ScmpActAllow => plain(Action::Allow),
        LinuxSeccompAction::ScmpActNotify => Err(SeccompError::Notify { what: format!("{action} for {what}") }),
    }
}

fn condition(arg: &LinuxSeccompArg, names: &str) -> Result<Condition, SeccompError> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|_| arg.index() < MAX_ARGS)
        .ok_or_else(|| SeccompError::ArgIndex { names: names.to_string(), index: arg.index() })?;
    // valueTwo only means something to MASKED_EQ, where `value` is the mask (runc, libseccomp).
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (Op::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (Op::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (Op::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (Op::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (Op::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (Op::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (Op::MaskedEq { mask: arg.value() }, arg.value_two().unwrap_or(0)),
    };
    Ok(Condition { index, op, value })
}

fn flag(flag: LinuxSeccompFilterFlag) -> Flag {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Flag::Tsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => Flag::Log,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => Flag::SpecAllow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).expect("seccomp profile")
    }

    fn plan(json: serde_json::Value) -> Plan {
        translate(&profile(json)).expect("translates")
    }

    fn error(json: serde_json::Value) -> String {
        crate::error_chain(&translate(&profile(json)).expect_err("rejected"))
    }

    #[test]
    fn errno_defaults_to_eperm_and_takes_errno_ret() {
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "syscalls": [
                { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" },
                { "names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
                { "names": ["ptrace"], "action": "SCMP_ACT_TRACE" },
            ]
        }));
        assert_eq!(plan.default, Action::Errno(38));
        let actions: Vec<(&str, Action)> = plan.rules.iter().map(|r| (r.syscall.as_str(), r.action)).collect();
        assert_eq!(
            actions,
            [
                ("mkdir", Action::Errno(1)),
                ("mkdirat", Action::Errno(1)),
                ("chmod", Action::Errno(13)),
                ("ptrace", Action::Trace(1))
            ]
        );
    }

    #[test]
    fn every_action_maps_as_in_libseccomp() {
        let cases = [
            ("SCMP_ACT_KILL", Action::KillThread),
            ("SCMP_ACT_KILL_THREAD", Action::KillThread),
            ("SCMP_ACT_KILL_PROCESS", Action::KillProcess),
            ("SCMP_ACT_TRAP", Action::Trap),
            ("SCMP_ACT_LOG", Action::Log),
            ("SCMP_ACT_ALLOW", Action::Allow),
        ];
        for (name, expected) in cases {
            let plan = plan(serde_json::json!({ "defaultAction": name }));
            assert_eq!(plan.default, expected, "{name}");
        }
    }

    #[test]
    fn rules_with_the_default_action_are_dropped() {
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["read", "write"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["mkdir"], "action": "SCMP_ACT_KILL" },
            ]
        }));
        assert_eq!(plan.rules, [Rule { syscall: "mkdir".into(), action: Action::KillThread, conditions: vec![] }]);
    }

    #[test]
    fn conditions_on_distinct_args_are_one_rule() {
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                { "index": 0, "value": 1, "op": "SCMP_CMP_GT" },
                { "index": 1, "value": 0, "op": "SCMP_CMP_EQ" },
            ]}]
        }));
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(
            plan.rules[0].conditions,
            [Condition { index: 0, op: Op::Gt, value: 1 }, Condition { index: 1, op: Op::Eq, value: 0 }]
        );
    }

    #[test]
    fn conditions_on_the_same_arg_are_alternatives() {
        // Docker's default profile: personality(0), personality(8) and personality(0xffffffff).
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                { "index": 0, "value": 0, "op": "SCMP_CMP_EQ" },
                { "index": 0, "value": 8, "op": "SCMP_CMP_EQ" },
                { "index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ" },
            ]}]
        }));
        let values: Vec<Vec<u64>> = plan.rules.iter().map(|r| r.conditions.iter().map(|c| c.value).collect()).collect();
        assert_eq!(values, [vec![0], vec![8], vec![0xffff_ffff]]);
    }

    #[test]
    fn every_operator_maps_and_masked_eq_takes_value_as_mask() {
        let ops = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT"];
        let expected = [Op::Ne, Op::Lt, Op::Le, Op::Eq, Op::Ge, Op::Gt];
        for (name, op) in ops.iter().zip(expected) {
            let plan = plan(serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO",
                    "args": [{ "index": 1, "value": 9, "valueTwo": 5, "op": name }] }]
            }));
            assert_eq!(plan.rules[0].conditions, [Condition { index: 1, op, value: 9 }], "{name}");
        }
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                "args": [{ "index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ" }] }]
        }));
        assert_eq!(
            plan.rules[0].conditions,
            [Condition { index: 1, op: Op::MaskedEq { mask: 0o4000 }, value: 0o4000 }]
        );
    }

    #[test]
    fn arches_and_flags_are_kept() {
        let plan = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
        }));
        assert_eq!(plan.arches, [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]);
        assert_eq!(plan.flags.into_iter().collect::<Vec<_>>(), [Flag::Tsync, Flag::Log, Flag::SpecAllow]);
    }

    #[test]
    fn invalid_profiles_are_rejected_with_what_is_wrong() {
        let cases = [
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }] }),
                "SCMP_ACT_NOTIFY for mkdir",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock" }),
                "listenerPath /run/agent.sock",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 1 }] }),
                "errnoRet 1 of mkdir",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000 }),
                "errnoRet 70000 of defaultAction",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["kill"],
                    "action": "SCMP_ACT_ERRNO", "args": [{ "index": 6, "value": 0, "op": "SCMP_CMP_EQ" }] }] }),
                "argument index 6 of kill",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{ "names": ["read", ""], "action": "SCMP_ACT_ERRNO" }] }),
                "empty syscall name in \"read,\"",
            ),
        ];
        for (json, expected) in cases {
            let message = error(json);
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        }
    }

    #[test]
    fn unknown_action_or_operator_names_the_value() {
        let bad_op = serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["kill"],
            "action": "SCMP_ACT_ERRNO", "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_ALMOST" }] }] });
        let bad_action = serde_json::json!({ "defaultAction": "SCMP_ACT_MAYBE" });
        for (json, name) in [(bad_op, "SCMP_CMP_ALMOST"), (bad_action, "SCMP_ACT_MAYBE")] {
            let message = serde_json::from_value::<LinuxSeccomp>(json).expect_err("rejected").to_string();
            assert!(message.contains(name), "{message}");
        }
    }
}
