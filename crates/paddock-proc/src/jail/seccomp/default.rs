//! paddock's default profile: a deny-list, everything else allowed.
//!
//! Docker's and runc's default profiles are allow-lists of about 360 system calls, with
//! the rest failing with `EPERM`; the calls they leave out are those that reach kernel-wide
//! state, need a capability a container lacks, or are a known attack surface. This profile
//! denies those calls by name, so a system call newer than the profile keeps working (and is
//! not silently refused as under an allow-list); see the table in the parent module.

use super::compile::{Action, Cond, Op, Profile, Rule};
use super::syscalls::SyscallTable;

/// Denied with `EPERM` whatever their arguments.
pub(super) const DENIED: &[&str] = &[
    // Mounts and the new mount API: the payload's file system view is set up by paddock;
    // mount options are a classic route to privilege (and mount namespaces to confusion).
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // Joining other namespaces.
    "setns",
    // Replacing the kernel, loading code into it, rebooting the node.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    // The kernel keyring is not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Large kernel attack surfaces: eBPF, perf, userfaultfd (exploit primitive), io_uring
    // (its operations are not seen by seccomp at all).
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Inspecting and controlling other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "migrate_pages",
    "move_pages",
    // File handles bypass path-based confinement (the "shocker" escape); fanotify,
    // quotas, dcookies and nfsservctl act on file systems as a whole.
    "open_by_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "uselib",
    // Node-wide state: swap, process accounting, the clocks, the kernel log, I/O ports,
    // terminals, host and domain names.
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "sethostname",
    "setdomainname",
];

/// Namespace flags of `clone` (Docker's mask 0x7E020000). `CLONE_NEWTIME` (0x80) shares its
/// bits with the exit signal in `clone`, which cannot create a time namespace.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// Namespace flags of `unshare`, time namespaces included.
const UNSHARE_NS_FLAGS: u64 = CLONE_NS_FLAGS | 0x80;
/// The `personality(2)` values Docker allows: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32|UNAME26`, and `0xffffffff` (query).
pub(super) const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// `AF_ALG` (the kernel crypto API) and `AF_VSOCK`, which Docker's profile refuses.
pub(super) const DENIED_SOCKET_FAMILIES: [u64; 2] = [38, 40];

fn numbers(table: &SyscallTable, names: &[&str]) -> Vec<i64> {
    // A name the architecture lacks (iopl on aarch64) has nothing to deny.
    names.iter().filter_map(|n| table.number(n)).collect()
}

fn arg0(op: Op, value: u64) -> Cond {
    Cond {
        index: 0,
        op,
        value,
        wide: false,
    }
}

/// The default profile, as rules for the compiler.
pub(super) fn profile() -> Profile {
    let t = SyscallTable::native();
    let eperm = Action::Errno(libc::EPERM as u16);
    let mut rules = vec![
        Rule {
            action: eperm,
            syscalls: numbers(&t, DENIED),
            alternatives: Vec::new(),
        },
        Rule {
            action: eperm,
            syscalls: numbers(&t, &["socket"]),
            alternatives: DENIED_SOCKET_FAMILIES
                .iter()
                .map(|&f| vec![arg0(Op::Eq, f)])
                .collect(),
        },
    ];
    // Without namespace flags, clone (fork, threads) and unshare (CLONE_FILES, CLONE_FS,
    // CLONE_SYSVSEM) are allowed, and so are Docker's personalities; any other use of them
    // falls through to the EPERM rule after.
    rules.push(Rule {
        action: Action::Allow,
        syscalls: numbers(&t, &["clone"]),
        alternatives: vec![vec![arg0(Op::MaskedEq(CLONE_NS_FLAGS), 0)]],
    });
    rules.push(Rule {
        action: Action::Allow,
        syscalls: numbers(&t, &["unshare"]),
        alternatives: vec![vec![arg0(Op::MaskedEq(UNSHARE_NS_FLAGS), 0)]],
    });
    rules.push(Rule {
        action: Action::Allow,
        syscalls: numbers(&t, &["personality"]),
        alternatives: PERSONALITIES
            .iter()
            .map(|&p| vec![arg0(Op::Eq, p)])
            .collect(),
    });
    rules.push(Rule {
        action: eperm,
        syscalls: numbers(&t, &["clone", "unshare", "personality"]),
        alternatives: Vec::new(),
    });
    // clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes libc fall
    // back to clone, whose flags it can (as Docker does).
    rules.push(Rule {
        action: Action::Errno(libc::ENOSYS as u16),
        syscalls: numbers(&t, &["clone3"]),
        alternatives: Vec::new(),
    });
    Profile {
        default: Action::Allow,
        rules,
    }
}
