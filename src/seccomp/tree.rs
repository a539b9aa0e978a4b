//! The allowlist as a binary search over syscall numbers.
//!
//! seccompiler compiles an allowlist into one comparison block per syscall, in
//! order: a syscall numbered 300 walks some 600 instructions before it is
//! answered, on every call, and the kernel has a thousand instructions to check
//! and JIT at install. Here the numbers are split into ranges that get the same
//! answer (allow, notify, deny, or "look at the arguments"), and a balanced
//! tree of `jge` finds the range in about eight comparisons. The syscalls
//! whose mode argument is guarded ([`super::guard`]) are checked in their
//! leaf; the few others whose arguments are checked (`clone`, `ioctl`,
//! `personality`, `memfd_create`, `socket`, `socketpair`) go on to a block
//! compiled by seccompiler, which ends in the profile's refusal.

use super::guard::Guard;
use super::{Insn, JGE_K, RET_K};

/// What the tree answers for a syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `SECCOMP_RET_ALLOW`.
    Allow,
    /// `SECCOMP_RET_USER_NOTIF`: recorded by the supervisor, then continued.
    Notify,
    /// The profile's refusal.
    Deny,
    /// Decided by the argument block that follows the tree.
    Arguments,
    /// Refused if the guard refuses its arguments, else allowed (`false`)
    /// or notified (`true`).
    Guarded(Guard, bool),
}

const JA: u16 = 0x05; // BPF_JMP | BPF_JA
/// A leaf that jumps to the argument block; its offset is filled in once the
/// tree's length is known.
const TO_ARGUMENTS: u32 = u32::MAX;
const RET_ALLOW: u32 = 0x7fff_0000;

/// The tree for `answer` over every u32 syscall number (numbers above `last`
/// all get `answer(last + 1)`), followed by `arguments` (which must return on
/// every path and may be empty if no number is [`Answer::Arguments`]).
/// `deny` and `notify` are the return values of those answers.
pub fn compile(answer: impl Fn(u32) -> Answer, last: u32, deny: u32, notify: u32, arguments: &[Insn]) -> Vec<Insn> {
    // Ranges of equal answers: (first number, answer), the last one open-ended.
    let mut ranges: Vec<(u32, Answer)> = Vec::new();
    for nr in 0..=last.saturating_add(1) {
        let a = answer(nr);
        if !matches!(ranges.last(), Some(&(_, prev)) if prev == a) {
            ranges.push((nr, a));
        }
    }
    let mut prog = subtree(&ranges, deny, notify);
    let tree_len = prog.len();
    for (i, insn) in prog.iter_mut().enumerate() {
        if insn.code == JA && insn.k == TO_ARGUMENTS {
            insn.k = (tree_len - i - 1) as u32;
        }
    }
    prog.extend_from_slice(arguments);
    prog
}

fn subtree(ranges: &[(u32, Answer)], deny: u32, notify: u32) -> Vec<Insn> {
    let ret = |k| Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    };
    match ranges {
        [] => vec![ret(deny)],
        [(_, a)] => match *a {
            Answer::Allow => vec![ret(RET_ALLOW)],
            Answer::Notify => vec![ret(notify)],
            Answer::Deny => vec![ret(deny)],
            Answer::Arguments => vec![Insn {
                code: JA,
                jt: 0,
                jf: 0,
                k: TO_ARGUMENTS,
            }],
            Answer::Guarded(guard, notified) => guard.bpf(if notified { notify } else { RET_ALLOW }, deny),
        },
        _ => {
            let mid = ranges.len() / 2;
            let (lower, upper) = ranges.split_at(mid);
            let split = upper.first().map_or(u32::MAX, |&(nr, _)| nr);
            let left = subtree(lower, deny, notify);
            let right = subtree(upper, deny, notify);
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            match u8::try_from(left.len()) {
                // nr >= split: skip the lower half.
                Ok(skip) => out.push(Insn {
                    code: JGE_K,
                    jt: skip,
                    jf: 0,
                    k: split,
                }),
                // Too far for a conditional jump: go through an unconditional one.
                Err(_) => {
                    out.push(Insn {
                        code: JGE_K,
                        jt: 0,
                        jf: 1,
                        k: split,
                    });
                    out.push(Insn {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: left.len() as u32,
                    });
                }
            }
            out.extend(left);
            out.extend(right);
            out
        }
    }
}

#[cfg(test)]
pub mod bpf {
    //! A classic-BPF interpreter for the instructions seccomp programs here
    //! use, so that tests can run a program on a syscall and compare answers.

    use super::Insn;

    /// Runs `prog` on syscall `nr` with `arch` and `args`; the return value.
    pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                16..=63 => {
                    let i = ((off - 16) / 8) as usize;
                    let v = args[i];
                    if (off - 16).is_multiple_of(8) {
                        v as u32
                    } else {
                        (v >> 32) as u32
                    }
                }
                _ => panic!("load of seccomp_data offset {off}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            let jump = |cond: bool| pc + 1 + usize::from(if cond { i.jt } else { i.jf });
            pc = match i.code {
                0x20 => {
                    a = word(i.k);
                    pc + 1
                }
                0x54 => {
                    a &= i.k;
                    pc + 1
                }
                0x05 => pc + 1 + i.k as usize,
                0x15 => jump(a == i.k),
                0x25 => jump(a > i.k),
                0x35 => jump(a >= i.k),
                0x45 => jump(a & i.k != 0),
                0x06 => return i.k,
                c => panic!("opcode {c:#x} at {pc}"),
            };
        }
    }
}
