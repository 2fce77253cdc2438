//! From a profile (rules in order, each with one action) to one classic-BPF program.
//!
//! seccompiler compiles a filter whose rules all share one match action and one mismatch
//! action. A profile has several actions, so it is cut into *segments*: maximal runs of
//! consecutive rules with the same action. Each segment is compiled by seccompiler with a
//! sentinel mismatch action (`SECCOMP_RET_TRACE | 0xffff`, an action no profile can ask for
//! here), and every `ret <sentinel>` of the segment is rewritten into a forward jump to the
//! end of the segment, that is to the next segment. The program is:
//!
//! ```text
//! ld arch; jeq NATIVE, +1; ret KILL_PROCESS        foreign ABI (i386, arm32): killed
//! ld nr;   jge 0x40000000, ret ERRNO(ENOSYS)       x86_64 only: x32 numbers refused
//! ld nr;   <binary search over the named numbers>  a number no rule names: ─┐
//! ret <default action>                                                  <──┘
//! segment 1 … segment n                            first matching rule wins
//! ret <default action>
//! ```
//!
//! The binary search is an exact shortcut: a number that no rule names matches no rule, so
//! its answer is the default action, reached in about `2 log2(n)` instructions instead of
//! a walk through every segment. It matters most at installation: the kernel's per-syscall
//! action cache (Linux 5.11+) emulates the filter once for every system call number, so
//! a linear chain of a few hundred instructions cost about a millisecond per jailed start
//! (`crates/paddock-bench/extra/jail_floor.c`).
//!
//! A rewrite replaces one instruction by one instruction, so seccompiler's own jump offsets
//! stay valid; the jump to the segment's end uses `ja` (32-bit offset). seccompiler's
//! per-segment architecture check is dropped when it is exactly the one above.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule, TargetArch,
};

use super::SeccompError;

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
/// At most this many numbers are compared one by one at a leaf of the binary search.
const LEAF: usize = 4;
const BPF_RET_K: u16 = 0x06;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Bit 30 of the system call number marks the x32 ABI on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`, linux/audit.h).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 183 | 0x8000_0000 | 0x4000_0000;
const SENTINEL: SeccompAction = SeccompAction::Trace(0xffff);
const SENTINEL_RET: u32 = libc::SECCOMP_RET_TRACE | 0xffff;

/// What the filter returns for a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run it.
    Allow,
    /// Fail it with this errno (0..=4095), without running it.
    Errno(u16),
    /// Kill the calling thread (`SECCOMP_RET_KILL_THREAD`, OCI `SCMP_ACT_KILL`).
    KillThread,
    /// Kill the whole process.
    KillProcess,
    /// Send `SIGSYS` to the thread.
    Trap,
    /// Run it and log it (`SECCOMP_RET_LOG`).
    Log,
}

impl Action {
    fn to_seccompiler(self) -> SeccompAction {
        match self {
            Action::Allow => SeccompAction::Allow,
            Action::Errno(e) => SeccompAction::Errno(u32::from(e)),
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
            Action::Trap => SeccompAction::Trap,
            Action::Log => SeccompAction::Log,
        }
    }

    /// The `SECCOMP_RET_*` value.
    pub fn ret(self) -> u32 {
        u32::from(self.to_seccompiler())
    }
}

/// A comparison of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`; `value` must have no bit outside `mask`.
    MaskedEq(u64),
}

/// `args[index] <op> value`, on the low 32 bits (`wide: false`, for `int` arguments, which
/// the kernel truncates) or on all 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub wide: bool,
}

/// One rule: these system calls, when every condition of one of `alternatives` holds (or
/// always, when `alternatives` is empty), get `action`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub action: Action,
    pub syscalls: Vec<i64>,
    /// Conditions ANDed within an alternative, alternatives ORed.
    pub alternatives: Vec<Vec<Cond>>,
}

/// Rules in order and the action when none matches.
#[derive(Debug, Clone)]
pub struct Profile {
    pub default: Action,
    pub rules: Vec<Rule>,
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The target's seccompiler architecture and `AUDIT_ARCH_*` value.
fn native_arch() -> Result<(TargetArch, u32), SeccompError> {
    #[cfg(target_arch = "x86_64")]
    return Ok((TargetArch::x86_64, AUDIT_ARCH_NATIVE));
    #[cfg(target_arch = "aarch64")]
    return Ok((TargetArch::aarch64, AUDIT_ARCH_NATIVE));
    #[allow(unreachable_code)]
    Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

/// The rules of one segment, by system call number; `None`: the call matches whatever its
/// arguments.
type SegmentRules = BTreeMap<i64, Option<Vec<Vec<Cond>>>>;

fn add_rule(seg: &mut SegmentRules, rule: &Rule) {
    for &nr in &rule.syscalls {
        let slot = seg.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (slot.as_mut(), rule.alternatives.is_empty()) {
            (_, true) => *slot = None,
            (Some(alts), false) => alts.extend(rule.alternatives.iter().cloned()),
            (None, false) => {}
        }
    }
}

fn compile_segment(
    arch: TargetArch,
    audit_arch: u32,
    action: Action,
    seg: SegmentRules,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let backend = |e: seccompiler::BackendError| SeccompError::Compile(e.to_string());
    let mut rules = BTreeMap::new();
    for (nr, alts) in seg {
        let mut chain = Vec::new();
        for alt in alts.unwrap_or_default() {
            let mut conds = Vec::with_capacity(alt.len());
            for c in alt {
                let op = match c.op {
                    Op::Eq => SeccompCmpOp::Eq,
                    Op::Ne => SeccompCmpOp::Ne,
                    Op::Lt => SeccompCmpOp::Lt,
                    Op::Le => SeccompCmpOp::Le,
                    Op::Gt => SeccompCmpOp::Gt,
                    Op::Ge => SeccompCmpOp::Ge,
                    Op::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                };
                let len = if c.wide {
                    SeccompCmpArgLen::Qword
                } else {
                    SeccompCmpArgLen::Dword
                };
                conds.push(SeccompCondition::new(c.index, len, op, c.value).map_err(backend)?);
            }
            chain.push(SeccompRule::new(conds).map_err(backend)?);
        }
        rules.insert(nr, chain);
    }
    let filter = seccompiler::SeccompFilter::new(rules, SENTINEL, action.to_seccompiler(), arch)
        .map_err(backend)?;
    let prog: seccompiler::BpfProgram = filter.try_into().map_err(backend)?;
    let mut out: Vec<libc::sock_filter> = prog
        .into_iter()
        .map(|i| insn(i.code, i.jt, i.jf, i.k))
        .collect();
    // seccompiler starts every program with the architecture check; ours is done once.
    let check = [
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        (BPF_JMP_JEQ_K, 1, 0, audit_arch),
        (BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if out.len() > 3
        && out[..3]
            .iter()
            .zip(check)
            .all(|(i, (code, jt, jf, k))| (i.code, i.jt, i.jf, i.k) == (code, jt, jf, k))
    {
        out.drain(..3);
    }
    let len = out.len();
    for (pc, i) in out.iter_mut().enumerate() {
        if i.code == BPF_RET_K && i.k == SENTINEL_RET {
            // To the instruction after the segment: pc + 1 + k == len.
            let k = u32::try_from(len - pc - 1).map_err(|_| SeccompError::TooLarge(len))?;
            *i = insn(BPF_JMP_JA, 0, 0, k);
        }
    }
    Ok(out)
}

/// A jump of the membership code, resolved once its length is known.
#[derive(Clone, Copy)]
enum Jump {
    /// Found: past the code and the default action's `ret` after it.
    Found,
    /// Not found: to the default action's `ret` right after the code.
    NotFound,
    /// To the code of a subtree (an index into [`membership`]'s label table).
    Label(usize),
}

/// A binary search of the accumulator (the system call number) in `sorted` (ascending,
/// unique): jumps past the code and the instruction after it when found, falls through
/// to the instruction after it when not. Only `ja` jumps far (32-bit offsets);
/// conditional jumps skip one instruction, so no offset can overflow `jt`/`jf`.
fn membership(sorted: &[u32]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    enum Item {
        Insn(libc::sock_filter),
        Ja(Jump),
        Label(usize),
    }
    fn tree(v: &[u32], items: &mut Vec<Item>, labels: &mut usize) {
        if v.len() <= LEAF {
            for &x in v {
                // Equal: the next instruction (`ja` found); else skip it.
                items.push(Item::Insn(insn(BPF_JMP_JEQ_K, 0, 1, x)));
                items.push(Item::Ja(Jump::Found));
            }
            return;
        }
        let mid = v.len() / 2;
        let right = *labels;
        *labels += 1;
        // At or above v[mid]: the next instruction (`ja` right); else skip it.
        items.push(Item::Insn(insn(BPF_JMP_JGE_K, 0, 1, v[mid])));
        items.push(Item::Ja(Jump::Label(right)));
        tree(&v[..mid], items, labels);
        items.push(Item::Ja(Jump::NotFound));
        items.push(Item::Label(right));
        tree(&v[mid..], items, labels);
    }
    let mut items = Vec::new();
    let mut labels = 0;
    tree(sorted, &mut items, &mut labels);
    // Positions: labels take no room.
    let mut at = vec![0usize; labels];
    let mut pc = 0;
    for it in &items {
        match it {
            Item::Label(l) => at[*l] = pc,
            _ => pc += 1,
        }
    }
    let len = pc;
    let mut out = Vec::with_capacity(len);
    for it in items {
        match it {
            Item::Insn(i) => out.push(i),
            Item::Ja(j) => {
                let target = match j {
                    Jump::Found => len + 1,
                    Jump::NotFound => len,
                    Jump::Label(l) => at[l],
                };
                let k = u32::try_from(target - out.len() - 1)
                    .map_err(|_| SeccompError::TooLarge(len))?;
                out.push(insn(BPF_JMP_JA, 0, 0, k));
            }
            Item::Label(_) => {}
        }
    }
    Ok(out)
}

/// Compiles `profile` for the native architecture.
pub fn compile(profile: &Profile) -> Result<Vec<libc::sock_filter>, SeccompError> {
    compile_with(profile, true)
}

/// [`compile`], with or without the binary search of named numbers (the tests compare
/// the two).
pub(super) fn compile_with(
    profile: &Profile,
    shortcut: bool,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let (arch, audit_arch) = native_arch()?;
    let mut prog = vec![
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JMP_JEQ_K, 1, 0, audit_arch),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    #[cfg(target_arch = "x86_64")]
    prog.extend([
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, Action::Errno(libc::ENOSYS as u16).ret()),
    ]);
    // Numbers no rule names: straight to the default action.
    let named: Vec<u32> = profile
        .rules
        .iter()
        .flat_map(|r| r.syscalls.iter())
        .filter_map(|&n| u32::try_from(n).ok())
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    if shortcut && !named.is_empty() {
        prog.push(insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR));
        prog.extend(membership(&named)?);
        prog.push(insn(BPF_RET_K, 0, 0, profile.default.ret()));
    }
    let mut rules = profile.rules.iter().peekable();
    while let Some(first) = rules.next() {
        let mut seg = SegmentRules::new();
        add_rule(&mut seg, first);
        while let Some(next) = rules.next_if(|r| r.action == first.action) {
            add_rule(&mut seg, next);
        }
        if seg.is_empty() {
            continue;
        }
        let code = compile_segment(arch, audit_arch, first.action, seg)?;
        prog.extend(code);
        if prog.len() >= MAX_INSTRUCTIONS {
            return Err(SeccompError::TooLarge(prog.len()));
        }
    }
    prog.push(insn(BPF_RET_K, 0, 0, profile.default.ret()));
    if prog.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge(prog.len()));
    }
    debug_assert!(
        !prog.iter().any(|i| i.code == BPF_RET_K
            && i.k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_TRACE)
    );
    Ok(prog)
}
