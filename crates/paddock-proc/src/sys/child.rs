//! The child side: what runs between the clone and `execve`.
//!
//! Only async-signal-safe calls: no allocation, no locks, no logging, no unwinding. The
//! calls are libc's thin system-call wrappers (`sigaction`, `sigprocmask`, `write`,
//! `setsid`, `prctl`, `getppid`, `getpid`, `socket`, `ioctl`, `close`, `setns`, `fcntl`,
//! `dup2`, `chdir`, `execve`, `_exit`, and `syscall` for `kill` and `close_range`), all on the
//! POSIX list of async-signal-safe functions or single Linux system calls. They stay libc
//! calls rather than rustix ones on purpose: rustix does not document its functions as
//! async-signal-safe (with its `use-libc` backend, and on targets without the raw backend,
//! they are libc calls plus conversions), and its path arguments make an allocating
//! conversion one `&str` away; here every argument is already a raw integer or a
//! NUL-terminated pointer prepared by the parent. `tests/child_no_alloc.rs` checks that
//! nothing in here allocates, on the vfork and the fork-like path.

use std::ffi::{c_char, c_int};
use std::os::fd::RawFd;

/// `CLOSE_RANGE_CLOEXEC` (Linux 5.11).
pub(super) const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// Stage of the child's setup at which it failed; sent back through the error pipe.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawStage {
    Signals = 1,
    Cgroup = 2,
    Setsid = 3,
    ParentDeath = 4,
    Setns = 5,
    FdMap = 6,
    CloseFds = 7,
    Chdir = 8,
    Exec = 9,
    Loopback = 10,
    UserNsSync = 11,
    Hostname = 12,
    Filesystem = 13,
    Init = 14,
    Rlimit = 15,
    Capabilities = 16,
    Credentials = 17,
    NoNewPrivs = 18,
    Landlock = 19,
    Seccomp = 20,
}

impl RawStage {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Signals,
            2 => Self::Cgroup,
            3 => Self::Setsid,
            4 => Self::ParentDeath,
            5 => Self::Setns,
            6 => Self::FdMap,
            7 => Self::CloseFds,
            8 => Self::Chdir,
            9 => Self::Exec,
            10 => Self::Loopback,
            11 => Self::UserNsSync,
            12 => Self::Hostname,
            13 => Self::Filesystem,
            14 => Self::Init,
            15 => Self::Rlimit,
            16 => Self::Capabilities,
            17 => Self::Credentials,
            18 => Self::NoNewPrivs,
            19 => Self::Landlock,
            20 => Self::Seccomp,
            _ => return None,
        })
    }
}

/// Everything the child needs, prepared (and allocated) by the parent before the clone.
/// Holds only raw pointers and integers; the pointed-to memory is owned by the parent's
/// `Prepared` value and outlives the clone call (the child shares it, suspending the
/// parent, or has a copy-on-write copy).
pub(crate) struct ChildPlan {
    pub path: *const c_char,
    pub argv: *const *const c_char,
    pub envp: *const *const c_char,
    /// NUL-terminated directory, or null for "do not chdir".
    pub cwd: *const c_char,
    /// `(source fd, target fd)` pairs.
    pub fd_map: *const (RawFd, RawFd),
    pub fd_map_len: usize,
    /// Scratch space of `fd_map_len` ints for the high duplicates (written only in the
    /// child, while the parent is suspended or in the child's own copy of the memory).
    pub scratch: *mut RawFd,
    /// Inclusive ranges of fds (>= 3) to mark close-on-exec.
    pub gaps: *const (u32, u32),
    pub gaps_len: usize,
    /// Lowest fd number above every target.
    pub above_targets: RawFd,
    pub ns_fds: *const RawFd,
    pub ns_fds_len: usize,
    /// Pre-opened `cgroup.procs` of the target (fallback path), or -1.
    pub procs_fd: RawFd,
    /// Write end of the O_CLOEXEC error pipe; numbered above every target.
    pub err_fd: RawFd,
    pub setsid: bool,
    /// Parent-death signal, or 0.
    pub pdeathsig: c_int,
    pub parent_pid: libc::pid_t,
    pub new_pid_ns: bool,
    /// Bring the loopback device of the new network namespace up (`CLONE_NEWNET` given).
    pub loopback_up: bool,
    /// Reset every signal handler (needed when `CLONE_CLEAR_SIGHAND` was not used).
    pub reset_all_handlers: bool,
    /// How to keep the fds in `gaps` from reaching the program.
    pub close_mode: CloseMode,
    /// With [`CloseMode::Fcntl`]: one above the highest fd number that can be open (read
    /// in the parent); fds from here on are not looked at.
    pub fd_limit: u32,
    /// The jail's steps, or null for none (then the child does exactly what it did before
    /// jails existed: two null checks more).
    pub jail: *const super::jail::RawJail,
}

/// How the child keeps the fds in its `gaps` from reaching the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// `close_range(lo, hi, CLOSE_RANGE_CLOEXEC)` (Linux 5.11): marks them close-on-exec.
    CloseRangeCloexec,
    /// `close_range(lo, hi, 0)` (Linux 5.9): closes them (the error pipe is not in a gap).
    CloseRange,
    /// `fcntl(fd, F_SETFD, FD_CLOEXEC)` on every fd of a gap below `fd_limit` (any kernel).
    Fcntl,
}

/// The calling thread's `errno`.
///
/// In a vfork child this is the errno of the suspended parent thread (the child runs with
/// that thread's TLS); the parent does not read errno across the clone (the raw `clone3`
/// returns `-errno` in a register), so the child may overwrite it.
pub(super) fn last_errno() -> c_int {
    // SAFETY: __errno_location returns a valid, aligned pointer to the calling thread's
    // errno; reading it is async-signal-safe.
    unsafe { *libc::__errno_location() }
}

/// Report `(stage, errno, idx)` on the error pipe and exit with status 127.
pub(super) fn fail(err_fd: RawFd, stage: RawStage, idx: u32) -> ! {
    fail_errno(err_fd, stage, idx, last_errno())
}

/// [`fail`] with an explicit errno.
pub(super) fn fail_errno(err_fd: RawFd, stage: RawStage, idx: u32, e: c_int) -> ! {
    let mut buf = [0u8; 12];
    buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&e.to_ne_bytes());
    buf[8..12].copy_from_slice(&idx.to_ne_bytes());
    // SAFETY: write(2) of a 12-byte buffer on this stack to an fd number (a bad fd is
    // EBADF, not undefined behaviour). A short or failed write leaves the parent with a
    // short report or EOF, which it handles.
    unsafe { libc::write(err_fd, buf.as_ptr().cast(), buf.len()) };
    // SAFETY: _exit ends the child at once, without atexit handlers, destructors or stdio
    // flushing (all of which would touch the parent's state in a vfork child).
    unsafe { libc::_exit(127) }
}

/// The child side. In this order: signal dispositions and mask; the cgroup join (fallback
/// paths); `setsid`; the parent-death signal; loopback up (new network namespace);
/// `setns`; the fd map; close-on-exec for every other fd; `chdir`; `execve`. Any failure
/// reports `(stage, errno, index)` on `plan.err_fd` and exits with 127.
///
/// # Safety
/// Must only be called in a freshly cloned child with a valid `plan`: fork-like, or sharing
/// the parent's memory while the parent thread is suspended until exec (`CLONE_VFORK`). All
/// signals must be blocked (the parent blocked them around the clone), so no handler of the
/// parent runs in the child before the dispositions are reset. Every pointer in `plan` must
/// point to what its field documents, valid in this address space.
#[inline(never)]
pub(super) unsafe fn child_main(plan: &ChildPlan) -> ! {
    let err_fd = plan.err_fd;

    // SAFETY: the parent built the pointer from a live Vec of the given length (a dangling,
    // aligned pointer when empty) and does not touch it until the child has exec'd or
    // exited (vfork) — or the child has its own copy of it (fork-like).
    let ns_fds = unsafe { std::slice::from_raw_parts(plan.ns_fds, plan.ns_fds_len) };

    // 1. Signal dispositions, then the mask (the parent blocked everything around the
    //    clone, so no parent handler can have run in here).
    // SAFETY: `struct sigaction` is plain data for which all-zero bytes are valid (an
    // empty mask, no flags, handler 0 = SIG_DFL).
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    if plan.reset_all_handlers {
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: sigaction with a valid new action on this stack and a null old
                // action. Errors (glibc-reserved signals 32/33) are expected and ignored.
                unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
            }
        }
    } else {
        // SAFETY: as above, for SIGPIPE only (CLONE_CLEAR_SIGHAND reset the handlers;
        // an ignored disposition survives it).
        if unsafe { libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut()) } != 0 {
            fail(err_fd, RawStage::Signals, 0);
        }
    }
    // SAFETY: `sigset_t` is plain data; all-zero bytes are a valid (empty) set.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset on a valid set on this stack.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: sigprocmask with a valid set and a null old-set pointer.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) } != 0 {
        fail(err_fd, RawStage::Signals, 0);
    }

    // 2. Fallback cgroup migration: write "0" (= this process) to cgroup.procs.
    // SAFETY: write(2) of a 1-byte static buffer to an fd number.
    if plan.procs_fd >= 0 && unsafe { libc::write(plan.procs_fd, b"0".as_ptr().cast(), 1) } != 1 {
        fail(err_fd, RawStage::Cgroup, 0);
    }

    // 3. New session.
    // SAFETY: setsid has no memory arguments.
    if plan.setsid && unsafe { libc::setsid() } < 0 {
        fail(err_fd, RawStage::Setsid, 0);
    }

    // 4. Parent-death signal; close the race with a parent that already died.
    if plan.pdeathsig != 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.pdeathsig as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r != 0 {
            fail(err_fd, RawStage::ParentDeath, 0);
        }
        // SAFETY: getppid has no arguments.
        if !plan.new_pid_ns && unsafe { libc::getppid() } != plan.parent_pid {
            // SAFETY: getpid has no arguments (a raw system call in glibc >= 2.25, which
            // caches nothing).
            let me = unsafe { libc::getpid() };
            // SAFETY: kill(2) of this very process with integer arguments.
            unsafe { libc::syscall(libc::SYS_kill, me, plan.pdeathsig) };
            // SAFETY: as in `fail`.
            unsafe { libc::_exit(127) };
        }
    }

    // 4b. A new network namespace starts with its loopback device down: bring it up
    //     (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP), as `ip link set lo up` does.
    //     Before any setns: a namespace joined by fd is configured by its owner.
    if plan.loopback_up {
        // SAFETY: socket(2) with integer arguments.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            fail(err_fd, RawStage::Loopback, 0);
        }
        // SAFETY: `struct ifreq` is plain data; all-zero bytes are valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        // SAFETY: SIOCGIFFLAGS writes the flags into the valid `ifr` on this stack.
        if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr) } != 0 {
            fail(err_fd, RawStage::Loopback, 1);
        }
        // SAFETY: the union member SIOCGIFFLAGS just filled; plain integer access.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the valid `ifr`.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &ifr) } != 0 {
            fail(err_fd, RawStage::Loopback, 2);
        }
        // SAFETY: closes the socket this function opened, which nothing else uses.
        unsafe { libc::close(sock) };
    }

    // 5. Join namespaces.
    for (i, &fd) in ns_fds.iter().enumerate() {
        // SAFETY: setns with integer arguments.
        if unsafe { libc::setns(fd, 0) } != 0 {
            fail(err_fd, RawStage::Setns, i as u32);
        }
    }

    // 5b. The jail's steps before the fd map (user namespace maps, hostname, filesystem),
    //     then the init: in the init this never returns; the program goes on below
    //     (or, on the init's vfork-like clone, in `child_rest` on a stack of its own).
    if !plan.jail.is_null() {
        // SAFETY: a non-null `jail` points to the parent's `RawJail`, valid as documented.
        let jail = unsafe { &*plan.jail };
        // SAFETY: as above; we are the freshly cloned child.
        unsafe { super::jail::before_fds(jail, err_fd) };
        if jail.init {
            // SAFETY: as above; the plan is valid in this process (see `start_init`).
            unsafe { super::jail::start_init(plan, jail, err_fd) };
        }
    }

    // SAFETY: the caller's contract, passed on.
    unsafe { child_rest(plan) }
}

/// Steps 6 to 9 of [`child_main`]: the fd map, closing the other fds, the working
/// directory, the jail's last steps, and `execve`. Never returns.
///
/// # Safety
/// As [`child_main`], in the process that becomes the program (the clone's child, or
/// the init's child).
pub(super) unsafe fn child_rest(plan: &ChildPlan) -> ! {
    let err_fd = plan.err_fd;
    // SAFETY: (this and the next two slices) the parent built each pointer from a live Vec
    // of the given length (a dangling, aligned pointer when empty) and does not touch those
    // Vecs until the child has exec'd or exited (vfork) — or the child has its own copy of
    // them (fork-like; the init's vfork-like child shares the init's copy while the init
    // waits). `scratch` is written only here.
    let fd_map = unsafe { std::slice::from_raw_parts(plan.fd_map, plan.fd_map_len) };
    // SAFETY: see above.
    let scratch = unsafe { std::slice::from_raw_parts_mut(plan.scratch, plan.fd_map_len) };
    // SAFETY: see above.
    let gaps = unsafe { std::slice::from_raw_parts(plan.gaps, plan.gaps_len) };

    // 6. fd map: first duplicate every source above the highest target (so a later dup2
    //    cannot clobber a source another mapping still needs), then dup2 each duplicate
    //    onto its target (dup2 clears close-on-exec on the target).
    for (i, &(src, _)) in fd_map.iter().enumerate() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) with integer arguments; the new fd belongs to
        // this child's own fd table.
        let d = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, plan.above_targets) };
        if d < 0 {
            fail(err_fd, RawStage::FdMap, i as u32);
        }
        scratch[i] = d;
    }
    for (i, &(_, target)) in fd_map.iter().enumerate() {
        // SAFETY: dup2 with integer arguments, in this child's own fd table (no
        // CLONE_FILES), so no fd of the parent changes.
        if unsafe { libc::dup2(scratch[i], target) } < 0 {
            fail(err_fd, RawStage::FdMap, i as u32);
        }
    }

    // 7. Every other fd >= 3 (but the error pipe) becomes close-on-exec or is closed.
    for (i, &(lo, hi)) in gaps.iter().enumerate() {
        match plan.close_mode {
            CloseMode::CloseRangeCloexec | CloseMode::CloseRange => {
                let flags = if plan.close_mode == CloseMode::CloseRange {
                    0
                } else {
                    CLOSE_RANGE_CLOEXEC
                };
                // SAFETY: close_range on this child's own fd table; the gaps exclude the
                // mapped targets and the error pipe, which the child still needs.
                if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, flags) } != 0 {
                    fail(err_fd, RawStage::CloseFds, i as u32);
                }
            }
            CloseMode::Fcntl => {
                // u64: `hi` may be u32::MAX.
                let end = (hi as u64).min((plan.fd_limit as u64).saturating_sub(1));
                let mut fd = lo as u64;
                while fd <= end {
                    // SAFETY: fcntl(F_SETFD) with integer arguments.
                    if unsafe { libc::fcntl(fd as c_int, libc::F_SETFD, libc::FD_CLOEXEC) } != 0
                        && last_errno() != libc::EBADF
                    {
                        fail(err_fd, RawStage::CloseFds, i as u32);
                    }
                    fd += 1;
                }
            }
        }
    }

    // 8. Working directory.
    // SAFETY: `cwd` is a NUL-terminated string the parent prepared (checked non-null).
    if !plan.cwd.is_null() && unsafe { libc::chdir(plan.cwd) } != 0 {
        fail(err_fd, RawStage::Chdir, 0);
    }

    // 8b. The jail's steps after chdir: rlimits, credentials, capabilities, no_new_privs,
    //     Landlock, seccomp.
    if !plan.jail.is_null() {
        // SAFETY: as in 5b.
        unsafe { super::jail::before_exec(&*plan.jail, err_fd) };
    }

    // 9. Exec.
    // SAFETY: `path` is NUL-terminated and `argv`/`envp` are null-terminated arrays of
    // NUL-terminated strings, all prepared by the parent. On success nothing after this
    // runs; the old address space (shared with the parent under vfork) is released.
    unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
    fail(err_fd, RawStage::Exec, 0)
}
