//! A plain fork with a pidfd, for [`fork_helper`](crate::fork_helper): the child is a copy
//! of a single-threaded process and goes on running ordinary Rust code.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::clone::CloneArgs;

const CLONE_PIDFD: u64 = 0x1000;

/// Where the call returned.
pub(crate) enum Forked {
    /// In the parent: the child's pid and pidfd.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// `clone3(CLONE_PIDFD)` with `SIGCHLD` as the exit signal: `fork()` with a pidfd.
///
/// # Safety
/// The calling process must have exactly one thread. The child then has a consistent copy
/// of the whole address space (no lock is held by a thread that does not exist in it), and
/// may run any code; with more threads it could only run async-signal-safe code.
pub(crate) unsafe fn fork_with_pidfd() -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with a valid, fully initialised clone_args of its VER0 size (no
    // stack, no CLONE_VM: the child continues on its own copy of this stack, like fork);
    // `args.pidfd` points at `pidfd`, live for the call. The process is single-threaded
    // (the caller's contract), so the child's copy of the heap and of every lock is
    // consistent.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            super::clone::CLONE_ARGS_SIZE_VER0,
        )
    };
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            // SAFETY: on success the kernel stored a new pidfd, owned by nobody else.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Ends the calling (forked) process at once with `code`: no exit handlers, no flushing
/// of buffers copied from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}
