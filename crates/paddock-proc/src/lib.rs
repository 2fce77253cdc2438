//! Processes for paddock: spawn a program directly into a cgroup with
//! `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)`, hold it by pidfd, signal it, and reap it in
//! exactly one place.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::os::fd::AsFd;
//! use paddock_proc::{Command, Stdio};
//! let cg = std::fs::File::open("/sys/fs/cgroup/unified/sandboxes/a")?; // a leaf cgroup
//! let mut p = Command::new("/bin/sh")
//!     .args(["-c", "exit 7"])
//!     .stdout(Stdio::Null)
//!     .spawn_in(cg.as_fd())?;
//! assert_eq!(p.wait_blocking().code(), Some(7));
//! # Ok(()) }
//! ```
//!
//! # The reaper — read this before using the crate
//!
//! **Only one place in the process calls `wait*` for children, so no exit status is
//! stolen.** The first spawn starts a process-global reaper thread. It waits for each child
//! it spawned on that child's pidfd (O(1) per exit however many children live) and reaps it
//! with `waitid(P_PIDFD, WNOHANG)`. Every [`ORPHAN_SWEEP`], or when asked
//! ([`reap_orphans`], [`request_orphan_sweep`]), it sweeps for the other exited children:
//! `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)` only peeks (names an exited child without
//! reaping it), then that child is reaped with `waitid(P_PID)` under the table lock, so a
//! registered child's entry and its reaping change together. Each status goes to the
//! matching [`Process`] or, for unregistered children, to [`subscribe_orphans`]. The
//! reaper works in a private fd table (see the `reaper` module), so its pidfds are not
//! inherited by spawns; for the same reason it never logs or wakes futures itself, but
//! hands statuses and log lines to a delivery thread, so a `tracing` subscriber (or waker)
//! only ever runs with the process's real fd table.
//!
//! The reaper's start-up can fail (no fd for its eventfd or epoll set, no thread): the
//! spawn then fails with [`SpawnError::ReaperStart`] and the next one tries again. If one of
//! its threads dies (a panic, say in a `tracing` subscriber), every later spawn fails with
//! [`SpawnError::ReaperDead`]. [`reaper_health`] reports both, for a readiness check.
//!
//! If something else reaps a registered child anyway (`SIGCHLD` set to `SIG_IGN` or
//! `SA_NOCLDWAIT`, which makes the kernel reap children itself, or a foreign `wait*`), the
//! reaper notices (its pidfd polls readable and `waitid` says `ECHILD`), removes the entry
//! and wakes the waiters with [`ExitStatus::Unknown`]; it warns at its start when
//! `SIGCHLD`'s disposition is one of those.
//!
//! Consequently, **in a process that uses paddock-proc, do not use
//! `std::process::Command::{wait, status, output}` or `tokio::process` for children**: the
//! reaper reaps those children too, and their own `wait` then fails with `ECHILD` (their
//! status is reported as an orphan instead). Run helper programs (for example
//! `ip netns add`) with [`Command::output`] / [`Command::status`] / [`run_to_completion`],
//! which spawn through the reaper (into the caller's current cgroup when no cgroup is given).
//!
//! Children created with an exit signal other than `SIGCHLD` (raw `clone` "clone children")
//! are invisible to the reaper, which waits without `__WALL`.
//!
//! # What a spawn guarantees
//!
//! * With [`Command::spawn_in`], the child is in the target cgroup from its first
//!   instruction (`CLONE_INTO_CGROUP`); on the fallback paths it moves itself there (writes
//!   `0` to a pre-opened `cgroup.procs`) before anything else and before `execve`.
//! * Between clone and `execve` the child runs only async-signal-safe raw system calls, in
//!   this order: reset signal handlers (all of them when `CLONE_CLEAR_SIGHAND` is
//!   unavailable; `SIGPIPE` always) and unblock all signals; join the cgroup (fallback);
//!   `setsid`; parent-death signal; `setns`; apply the fd map; mark every other fd >= 3
//!   close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`; before Linux 5.11 closed with
//!   `close_range(lo, hi, 0)`, before 5.9 an `fcntl(F_SETFD, FD_CLOEXEC)` loop up to the
//!   highest fd open in the parent, read from `/proc/self/fd` before the clone); `chdir`;
//!   `execve`.
//! * If any step fails, the child reports `(stage, errno)` through an `O_CLOEXEC` pipe and
//!   exits; `spawn` returns [`SpawnError::Child`] (e.g. `exec /bin/nosuch: ENOENT (os error
//!   2)`) only after the child has been reaped, so nothing is left running and no zombie.
//! * fds not mapped (other than 0, 1, 2 when they are left inherited) are not inherited.
//!
//! # How the child is created
//!
//! On x86_64 and aarch64 the `clone3` is made like `posix_spawn`'s: `CLONE_VM |
//! CLONE_VFORK`, the child running on a stack of its own until `execve`, while the calling
//! thread is suspended. No page tables are copied and the caller's other threads take no
//! copy-on-write faults afterwards, which in a busy multi-threaded supervisor is most of
//! the cost of a fork. The child's stack is a private anonymous mapping (64 KiB,
//! `MAP_STACK | MAP_NORESERVE`) with a `PROT_NONE` guard page below it, so an overflow
//! kills the child instead of writing into the parent's memory; one per spawning thread,
//! reused only after the clone has returned (with `CLONE_VFORK`: after the child has
//! exec'd or exited), unmapped when the thread ends.
//! Elsewhere, if the kernel refuses those flags (`EINVAL`, then never tried again), or if
//! the stack cannot be mapped, the clone is fork-like. Neither kind of child allocates
//! (`tests/child_no_alloc.rs` checks both).
//!
//! # Fallbacks
//!
//! Detected once per process and cached (logged with `tracing` at `warn`):
//! `CLONE_CLEAR_SIGHAND` rejected (`EINVAL`) → reset handlers by hand; `E2BIG` (no
//! `CLONE_INTO_CGROUP`) → clone3 without it plus the `cgroup.procs` write; `ENOSYS`/`EPERM`
//! from clone3 (seccomp) → legacy `clone` plus the `cgroup.procs` write plus `pidfd_open`
//! (by the spawner under the table lock with [`Command::keep_pidfd`], else by the reaper
//! after registration; race-free either way: the reaper cannot reap the child before it is
//! registered, so the pid cannot be reused); `close_range` without `CLOSE_RANGE_CLOEXEC`
//! or missing → the fallbacks above. `EOPNOTSUPP` from `CLONE_INTO_CGROUP` retries that one
//! spawn with the `cgroup.procs` write (a threaded target itself is accepted by the kernel;
//! a "domain invalid" one then fails with `join cgroup (write cgroup.procs): EOPNOTSUPP`).
//! `EBUSY` is a configuration error, [`SpawnError::CgroupNotLeaf`].
//!
//! # Signals
//!
//! [`Process::signal`] sends with `pidfd_send_signal`, with the pidfd held by the `Process`
//! ([`Command::keep_pidfd`]) or one opened for the call under the reaper's lock (the
//! default, which keeps no fd per live child; see [`Process`]).

#![cfg(target_os = "linux")]

mod command;
mod foreign;
mod helper;
pub mod jail;
mod process;
mod reaper;
mod sys;

use std::fmt;

#[doc(hidden)]
pub use command::{CloseMethod, SpawnCapabilities, spawn_capabilities};
pub use command::{
    Command, Namespaces, Output, SpawnPath, Stage, Stdio, netns_fd, run_to_completion,
};
pub use foreign::ForeignProcess;
pub use helper::fork_helper;
pub use process::{Delivery, Process};
pub use reaper::{
    ORPHAN_CHANNEL_CAPACITY, ORPHAN_SWEEP, OrphanExit, OrphanReap, ReaperHealth, children_reaped,
    children_running, orphans_reaped, reap_orphans, reap_orphans_of, reaper_health,
    request_orphan_sweep, set_child_subreaper, start_reaper, subscribe_orphans,
};
pub use sys::{CLONE_INTO_CGROUP, errno_name};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` with this code (0..=255).
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether a core dump was written.
        core_dumped: bool,
    },
    /// The child has exited, but its status could not be read because something else in
    /// this process reaped it first: `SIGCHLD` set to `SIG_IGN` or `SA_NOCLDWAIT` (the
    /// kernel then reaps children itself), or a `wait*` call outside this crate (see the
    /// crate docs). The reaper logs a warning for each such child; waiters are woken with
    /// this value instead of waiting forever.
    Unknown,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, Self::Exited(0))
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exited(c) => Some(*c),
            Self::Signaled { .. } | Self::Unknown => None,
        }
    }

    /// The killing signal, if a signal killed it.
    pub fn signal(&self) -> Option<i32> {
        match self {
            Self::Signaled { signal, .. } => Some(*signal),
            Self::Exited(_) | Self::Unknown => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(c) => write!(f, "exit code {c}"),
            Self::Signaled {
                signal,
                core_dumped: false,
            } => write!(f, "killed by signal {signal}"),
            Self::Signaled {
                signal,
                core_dumped: true,
            } => {
                write!(f, "killed by signal {signal} (core dumped)")
            }
            Self::Unknown => write!(f, "exited, status unknown (reaped outside paddock-proc)"),
        }
    }
}

/// Why a spawn failed. In every case nothing is left running and no zombie remains.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The child was created but a setup step failed before `execve` took effect.
    #[error("{stage}{}{}: {} (os error {errno})", if context.is_empty() { "" } else { " " }, context, errno_name(*errno))]
    Child {
        /// The failing step.
        stage: Stage,
        /// The errno it failed with.
        errno: i32,
        /// What it was working on (the program for `exec`, the directory for `chdir`, ...).
        context: String,
        /// The pid the failed child had; it has been reaped when the error is returned.
        pid: i32,
    },
    /// The target cgroup has controllers enabled in its own `cgroup.subtree_control`, so
    /// by the no-internal-process rule it cannot hold processes (`EBUSY`).
    #[error(
        "cannot spawn into the target cgroup: it has controllers enabled in its own \
         cgroup.subtree_control, so by cgroup v2's no-internal-process rule it cannot hold \
         processes (EBUSY); spawn into a leaf cgroup below it instead (or clear its \
         subtree_control)"
    )]
    CgroupNotLeaf,
    /// A system call in the parent failed.
    #[error("{op}: {source}")]
    Os {
        /// What the parent was doing.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An argument, environment entry or path contains a NUL byte, or the fd map is invalid.
    #[error("invalid spawn request: {0}")]
    Invalid(String),
    /// The process-global reaper could not be started, so nothing was spawned; the next
    /// spawn (or [`start_reaper`]) tries again.
    #[error(
        "cannot start the child reaper: {op}: {} (os error {errno}); nothing was spawned. \
         The process is probably at its limit of open files (ulimit -n) or of threads: \
         raise the limit or lower the load; the next spawn tries again",
        errno_name(*errno)
    )]
    ReaperStart {
        /// What failed: `eventfd`, `spawn the reaper thread`, `epoll_create1`, ...
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// A thread of the process-global reaper has ended (see [`ReaperHealth::Dead`]):
    /// children could no longer be reaped or reported, so nothing was spawned.
    #[error(
        "the child reaper is dead ({thread} {reason}); nothing was spawned, since no child \
         could be reaped or reported any more; restart the process"
    )]
    ReaperDead {
        /// `paddock-reaper` or `paddock-deliver`.
        thread: &'static str,
        /// How it ended (the panic message).
        reason: String,
    },
}

impl SpawnError {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Child { errno, .. } => Some(*errno),
            Self::CgroupNotLeaf => Some(libc::EBUSY),
            Self::Os { source, .. } => source.raw_os_error(),
            Self::ReaperStart { errno, .. } => Some(*errno),
            Self::Invalid(_) | Self::ReaperDead { .. } => None,
        }
    }

    /// The child-side stage that failed, for [`SpawnError::Child`].
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Self::Child { stage, .. } => Some(*stage),
            _ => None,
        }
    }
}
