//! cgroup v2's device access control: a BPF_CGROUP_DEVICE program built from the rules, as
//! runc's `libcontainer/cgroups/devices` does it. The rules first go through an emulation of
//! v1's devices controller (a default, allow-all or deny-all, reset by each `a` rule, and a
//! set of exceptions), so that both versions grant the same; the exceptions then become one
//! block of raw eBPF each, ahead of the default verdict.

use std::collections::BTreeMap;

use crate::sys::bpf::Insn;

use super::devices::DeviceRule;

/// The kernel's `BPF_DEVCG_ACC_*` and `BPF_DEVCG_DEV_*`.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("device rule {rule:?}: unknown access {access:?} (r, w and m only)")]
    Access { rule: String, access: char },
    #[error("device rule {rule:?}: number out of range")]
    Number { rule: String },
    #[error("device rule {rule:?} cannot punch a hole in the wildcard rule {wildcard:?} (the v1 controller would ignore it)")]
    Hole { rule: String, wildcard: String },
}

/// An exception's key: type ('c' or 'b'), major, minor (None: any).
type Key = (char, Option<i64>, Option<i64>);

/// v1's devices controller, in memory.
#[derive(Debug, Default)]
struct Emulator {
    default_allow: bool,
    exceptions: BTreeMap<Key, i32>,
}

impl Emulator {
    fn apply(&mut self, rule: &DeviceRule) -> Result<(), FilterError> {
        if rule.kind == 'a' {
            // A rule for every device resets the list, whatever its numbers and access.
            self.default_allow = rule.allow;
            self.exceptions.clear();
            return Ok(());
        }
        let access = access_bits(rule)?;
        let key = (rule.kind, rule.major, rule.minor);
        if rule.allow == self.default_allow {
            self.remove(rule, key, access)
        } else {
            *self.exceptions.entry(key).or_default() |= access;
            Ok(())
        }
    }

    /// Take `access` away from the exception for exactly `key`; refused when a wider
    /// exception would keep granting (or denying) it, as runc refuses it.
    fn remove(&mut self, rule: &DeviceRule, key: Key, access: i32) -> Result<(), FilterError> {
        let (kind, major, minor) = key;
        for wider in [(kind, None, minor), (kind, major, None), (kind, None, None)] {
            if wider == key {
                continue;
            }
            if self.exceptions.get(&wider).is_some_and(|bits| bits & access != 0) {
                let wildcard = DeviceRule {
                    allow: !self.default_allow,
                    kind,
                    major: wider.1,
                    minor: wider.2,
                    access: access_text(self.exceptions[&wider]),
                };
                return Err(FilterError::Hole { rule: rule.to_v1(), wildcard: wildcard.to_v1() });
            }
        }
        if let Some(bits) = self.exceptions.get_mut(&key) {
            *bits &= !access;
            if *bits == 0 {
                self.exceptions.remove(&key);
            }
        }
        Ok(())
    }
}

fn access_bits(rule: &DeviceRule) -> Result<i32, FilterError> {
    rule.access.chars().try_fold(0, |bits, c| match c {
        'r' => Ok(bits | ACC_READ),
        'w' => Ok(bits | ACC_WRITE),
        'm' => Ok(bits | ACC_MKNOD),
        access => Err(FilterError::Access { rule: rule.to_v1(), access }),
    })
}

fn access_text(bits: i32) -> String {
    [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| c)
        .collect()
}

// Registers and opcodes (classic names from linux/bpf.h).
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_K: u8 = 0xb4;
const ALU32_MOV_X: u8 = 0xbc;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// The program for `rules` (in the order given, as v1 applies them), ready to load.
pub fn build(rules: &[DeviceRule]) -> Result<Vec<Insn>, FilterError> {
    let mut emulator = Emulator::default();
    for rule in rules {
        emulator.apply(rule)?;
    }
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type
    // being (access << 16) | type: R2 = type, R3 = access, R4 = major, R5 = minor.
    let mut program = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for (&(kind, major, minor), &access) in &emulator.exceptions {
        program.extend(block(kind, major, minor, access, !emulator.default_allow)?);
    }
    program.push(insn(ALU32_MOV_K, R0, 0, 0, i32::from(emulator.default_allow)));
    program.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(program)
}

/// One exception: each check jumps past the block (to the next one) when it does not match;
/// the block ends with the verdict.
fn block(
    kind: char,
    major: Option<i64>,
    minor: Option<i64>,
    access: i32,
    allow: bool,
) -> Result<Vec<Insn>, FilterError> {
    let number = |n: i64| {
        let rule = DeviceRule { allow, kind, major, minor, access: access_text(access) };
        u32::try_from(n).map(|n| n as i32).map_err(|_| FilterError::Number { rule: rule.to_v1() })
    };
    let device_type = if kind == 'b' { DEV_BLOCK } else { DEV_CHAR };
    // (instruction, whether it is a check that jumps to the next block)
    let mut insns = vec![(insn(JMP_JNE_K, R2, 0, 0, device_type), true)];
    if access != ACC_READ | ACC_WRITE | ACC_MKNOD {
        // Every access asked for must be in the rule: R1 = R3 & access; skip if R1 != R3.
        insns.push((insn(ALU32_MOV_X, R1, R3, 0, 0), false));
        insns.push((insn(ALU32_AND_K, R1, 0, 0, access), false));
        insns.push((insn(JMP_JNE_X, R1, R3, 0, 0), true));
    }
    if let Some(major) = major {
        insns.push((insn(JMP_JNE_K, R4, 0, 0, number(major)?), true));
    }
    if let Some(minor) = minor {
        insns.push((insn(JMP_JNE_K, R5, 0, 0, number(minor)?), true));
    }
    insns.push((insn(ALU32_MOV_K, R0, 0, 0, i32::from(allow)), false));
    insns.push((insn(JMP_EXIT, 0, 0, 0, 0), false));
    let len = insns.len();
    // Offsets count from the next instruction: to the first one after this block.
    let jump = |at: usize| i16::try_from(len - at - 1).unwrap_or(i16::MAX);
    Ok(insns
        .into_iter()
        .enumerate()
        .map(|(at, (i, check))| if check { Insn { off: jump(at), ..i } } else { i })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.to_string() }
    }

    /// Run the program as the kernel would on one access: a tiny interpreter of the
    /// instructions `build` emits.
    fn verdict(program: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = program[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => regs[dst] = u64::from(ctx[(i.off / 4) as usize]),
                ALU32_AND_K => regs[dst] = (regs[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => regs[dst] = ((regs[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_K => regs[dst] = i.imm as u32 as u64,
                ALU32_MOV_X => regs[dst] = regs[src] as u32 as u64,
                JMP_JNE_K if regs[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_X if regs[dst] != regs[src] => pc += i.off as usize,
                JMP_JNE_K | JMP_JNE_X => {}
                JMP_EXIT => return regs[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn deny_all_then_allows_grant_only_those() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', None, None, "m"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(136), None, "rw"),
        ];
        let program = build(&rules).unwrap();
        assert!(verdict(&program, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), "/dev/null");
        assert!(!verdict(&program, DEV_CHAR, ACC_READ, 1, 5), "/dev/zero is not listed");
        assert!(verdict(&program, DEV_CHAR, ACC_MKNOD, 42, 42), "mknod of any char device");
        assert!(!verdict(&program, DEV_BLOCK, ACC_MKNOD, 8, 0), "but not of block devices");
        assert!(verdict(&program, DEV_CHAR, ACC_WRITE, 136, 7), "any pts");
        assert!(!verdict(&program, DEV_CHAR, ACC_MKNOD | ACC_READ, 136, 7), "not mknod of a pts");
    }

    #[test]
    fn a_later_deny_takes_access_back_and_allow_all_resets() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ];
        let program = build(&rules).unwrap();
        assert!(verdict(&program, DEV_CHAR, ACC_READ, 1, 3));
        assert!(!verdict(&program, DEV_CHAR, ACC_WRITE, 1, 3));

        let rules = [rule(true, 'a', None, None, "rwm"), rule(false, 'c', Some(1), Some(3), "rw")];
        let program = build(&rules).unwrap();
        assert!(!verdict(&program, DEV_CHAR, ACC_READ, 1, 3), "denied null");
        assert!(verdict(&program, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), "all else allowed");
        assert!(verdict(&program, DEV_CHAR, ACC_MKNOD, 1, 3), "m was not denied");
    }

    #[test]
    fn holes_in_wildcards_and_bad_access_are_refused() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(136), None, "rwm"),
            rule(false, 'c', Some(136), Some(2), "r"),
        ];
        let err = build(&rules).unwrap_err();
        assert!(matches!(err, FilterError::Hole { .. }), "{err}");
        assert!(err.to_string().contains("c 136:* rwm"), "{err}");
        let err = build(&[rule(true, 'c', Some(1), Some(3), "rx")]).unwrap_err();
        assert_eq!(err, FilterError::Access { rule: "c 1:3 rx".to_string(), access: 'x' });
    }

    #[test]
    fn blocks_jump_to_the_next_block() {
        let program = build(&[rule(false, 'a', None, None, "rwm"), rule(true, 'c', Some(1), Some(3), "r")]).unwrap();
        // prologue (6), block: jne type, mov, and, jne access, jne major, jne minor, mov, exit
        // (8), default (2).
        assert_eq!(program.len(), 16);
        assert_eq!(program[6].off, 7, "type check skips the rest of its block");
        assert_eq!(program[9].off, 4);
        assert_eq!(program[11].off, 2);
        assert_eq!(program[14], insn(ALU32_MOV_K, R0, 0, 0, 0), "default deny");
    }
}
