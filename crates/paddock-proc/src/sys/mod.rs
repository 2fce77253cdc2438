//! Raw system calls: `clone3`/`clone`, the code that runs in the child between clone and
//! `execve`, `waitid`, pidfds and signal masks.
//!
//! These modules are the only ones in the crate that contain `unsafe`; everything else is
//! safe code built on the functions here. Every block carries a `// SAFETY:` comment.
//!
//! * `child` — the child side ([`child_main`](child::child_main)): async-signal-safe raw
//!   calls only, each with its own `// SAFETY:` comment.
//! * `clone` — creating the child: `clone3` like `posix_spawn` on an `mmap`ed stack with a
//!   guard page, `clone3` like `fork`, legacy `clone`; the assembly trampolines.
//! * `fork` — a plain fork with a pidfd, for a helper that is a copy of a single-threaded
//!   process ([`fork_helper`](crate::fork_helper)).
//! * `jail` — the jail's steps in the child (credentials, capabilities, rlimits, hostname,
//!   the user namespace's sync, Landlock, seccomp); `mount` — its filesystem.
//! * `parent` — the parent side: signal masks, pidfds, `waitid`, the reaper's private fd
//!   table, probes.

mod child;
mod clone;
mod fork;
mod jail;
mod mount;
mod parent;

pub(crate) use child::{ChildPlan, CloseMode, RawStage};
pub(crate) use clone::{ChildStack, CloneKind, clone_child};
pub(crate) use fork::{Forked, exit_now, fork_with_pidfd};
pub(crate) use jail::{
    CAP_IDX_AMBIENT, CAP_IDX_AMBIENT_CLEAR, CAP_IDX_BOUNDING, CAP_IDX_CAPSET, CAP_IDX_KEEPCAPS,
    INIT_NUMBER_LEN, LANDLOCK_IDX_RESTRICT, RawJail, RawLandlockRule, RawRlimit,
};
pub(crate) use mount::{Create, MountOp, OpKind, RawFs};
pub(crate) use parent::*;

/// `CLONE_INTO_CGROUP` (Linux 5.7). Defined here because the `libc` crate's constant does
/// not fit its declared type on some versions.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_CLEAR_SIGHAND` (Linux 5.5), defined here for the same reason.
pub const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// The symbolic name of an errno value, for error messages (`ENOENT`).
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EUSERS => "EUSERS",
        libc::ELIBBAD => "ELIBBAD",
        _ => "E?",
    }
}
