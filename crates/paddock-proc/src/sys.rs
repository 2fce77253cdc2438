//! Raw system calls: `clone3`/`clone`, the code that runs in the child between clone and
//! `execve`, `waitid`, pidfds and signal masks.
//!
//! This is one of the two modules of the crate that contain `unsafe` (the other is none:
//! everything else is safe code built on the functions here). Every block carries a
//! `// SAFETY:` comment.

use std::ffi::{c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::ExitStatus;

/// `CLONE_INTO_CGROUP` (Linux 5.7). Defined here because the `libc` crate's constant does
/// not fit its declared type on some versions.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_CLEAR_SIGHAND` (Linux 5.5), defined here for the same reason.
pub const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VM: u64 = libc::CLONE_VM as u64;
const CLONE_VFORK: u64 = libc::CLONE_VFORK as u64;
/// `sizeof(struct clone_args)` up to and including `cgroup` (`CLONE_ARGS_SIZE_VER2`).
const CLONE_ARGS_SIZE_VER2: usize = 88;
/// `CLONE_ARGS_SIZE_VER0`: without `set_tid` and `cgroup`, for kernels that reject the
/// larger struct with `E2BIG`.
const CLONE_ARGS_SIZE_VER0: usize = 64;
const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// `struct clone_args` from `<linux/sched.h>`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

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

/// Which `close_range` the kernel has, probed with empty ranges (no fd has the highest
/// number, so nothing is touched): `Err` carries the errno of the refused variant.
pub(crate) fn probe_close_mode() -> (CloseMode, Option<io::Error>) {
    // SAFETY: close_range on an empty range (first == last == u32::MAX, beyond any fd)
    // closes and changes nothing; it only tells whether the kernel accepts the call.
    let probe = |flags: u32| unsafe {
        if libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, flags) == 0 {
            None
        } else {
            Some(io::Error::last_os_error())
        }
    };
    let Some(e) = probe(CLOSE_RANGE_CLOEXEC) else {
        return (CloseMode::CloseRangeCloexec, None);
    };
    if probe(0).is_none() {
        return (CloseMode::CloseRange, Some(e));
    }
    (CloseMode::Fcntl, Some(e))
}

/// How to create the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloneKind {
    /// `clone3` with `CLONE_PIDFD`, and `CLONE_INTO_CGROUP` when `cgroup` is given.
    Clone3 {
        into_cgroup: bool,
        clear_sighand: bool,
    },
    /// The legacy `clone` system call, fork-like; no pidfd.
    Legacy,
}

/// Result of a successful clone in the parent.
pub(crate) struct Cloned {
    pub pid: libc::pid_t,
    pub pidfd: Option<OwnedFd>,
}

/// Create the child. In the child this never returns: it runs [`child_main`] and either
/// execs or `_exit(127)`s after reporting the failing stage on `plan.err_fd`.
///
/// The caller must keep every pointer in `plan` valid for the duration of the call and must
/// block all signals around it (see [`block_all_signals`]).
pub(crate) fn clone_child(
    kind: CloneKind,
    ns_flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    plan: &ChildPlan,
) -> Result<Cloned, rustix::io::Errno> {
    match kind {
        CloneKind::Clone3 {
            into_cgroup,
            clear_sighand,
        } => {
            let mut pidfd: c_int = -1;
            let mut args = CloneArgs {
                flags: CLONE_PIDFD | ns_flags,
                pidfd: &mut pidfd as *mut c_int as u64,
                exit_signal: libc::SIGCHLD as u64,
                ..Default::default()
            };
            if clear_sighand {
                args.flags |= CLONE_CLEAR_SIGHAND;
            }
            let mut size = CLONE_ARGS_SIZE_VER0;
            if into_cgroup {
                if let Some(cg) = cgroup {
                    args.flags |= CLONE_INTO_CGROUP;
                    args.cgroup = cg.as_raw_fd() as u64;
                    size = CLONE_ARGS_SIZE_VER2;
                }
            }
            let ret = match clone3_vfork(&mut args, size, plan) {
                Ok(pid) => pid,
                // Not tried here, or the kernel refused the vfork flags (or, as for
                // `clone3_fork` too, another flag): clone like `fork`.
                Err(e @ (rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL)) => {
                    let pid = clone3_fork(&mut args, size, plan)?;
                    if e == rustix::io::Errno::INVAL {
                        VFORK_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    pid
                }
                Err(e) => return Err(e),
            };
            // SAFETY: the kernel stored a new, owned pidfd (CLONE_PIDFD) in `pidfd`.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned {
                pid: ret as libc::pid_t,
                pidfd: Some(pidfd),
            })
        }
        CloneKind::Legacy => {
            let flags = ns_flags | libc::SIGCHLD as u64;
            // SAFETY: legacy clone(2) without CLONE_VM and with a null stack behaves like
            // fork(): the child continues on a private copy of this stack. The tid pointers
            // are null and unused because no CLONE_*TID flag is set.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    flags as libc::c_ulong,
                    0usize,
                    std::ptr::null_mut::<c_int>(),
                    std::ptr::null_mut::<c_int>(),
                    0usize,
                )
            };
            if ret < 0 {
                return Err(rustix::io::Errno::from_raw_os_error(errno()));
            }
            if ret == 0 {
                // SAFETY: as above, we are the child with a private copy of `plan`.
                unsafe { child_main(plan) }
            }
            Ok(Cloned {
                pid: ret as libc::pid_t,
                pidfd: None,
            })
        }
    }
}

/// `clone3` like `fork()`: the child gets a private copy of the address space and continues
/// on a copy of this stack, then runs [`child_main`]. Returns the child's pid.
fn clone3_fork(
    args: &mut CloneArgs,
    size: usize,
    plan: &ChildPlan,
) -> Result<libc::pid_t, rustix::io::Errno> {
    args.flags &= !(CLONE_VM | CLONE_VFORK);
    args.stack = 0;
    args.stack_size = 0;
    // SAFETY: clone3 with a valid, fully initialised clone_args of `size` bytes, no
    // CLONE_VM and no stack: the child gets a private copy of the address space and
    // continues on a copy of this stack, like fork(). `args.pidfd` is a valid out pointer.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args as *mut CloneArgs, size) };
    if ret < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(errno()));
    }
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; `plan` is our copy of the parent's
        // prepared plan and all its pointers are valid in our address space.
        unsafe { child_main(plan) }
    }
    Ok(ret as libc::pid_t)
}

/// Stack of the child of a [`clone3_vfork`]: [`child_main`] needs little (no allocation,
/// a few libc calls, `execve`).
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// Whether `clone3(CLONE_VM | CLONE_VFORK)` was refused (`EINVAL`) where the same clone
/// without those flags worked; it is then never tried again.
static VFORK_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `clone3` like `posix_spawn`'s `vfork`: the child shares this address space (no page
/// tables copied, no copy-on-write faults afterwards in this process's threads) and runs
/// [`child_main`] on a stack of its own, while this thread is suspended by the kernel
/// until the child has called `execve` or exited. Returns the child's pid.
///
/// `Err(NOSYS)` without trying on architectures without a trampoline below or after the
/// kernel refused the flags once; the caller then clones like `fork`.
fn clone3_vfork(
    args: &mut CloneArgs,
    size: usize,
    plan: &ChildPlan,
) -> Result<libc::pid_t, rustix::io::Errno> {
    use std::sync::atomic::Ordering::Relaxed;
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) || VFORK_REFUSED.load(Relaxed) {
        return Err(rustix::io::Errno::NOSYS);
    }
    // u128 elements: the stack is 16-byte aligned at both ends, as both ABIs want.
    let mut stack: Box<[std::mem::MaybeUninit<u128>]> =
        Box::new_uninit_slice(CHILD_STACK_SIZE / 16);
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = stack.as_mut_ptr() as u64;
    args.stack_size = CHILD_STACK_SIZE as u64;
    // SAFETY: `args` is a valid, fully initialised clone_args of `size` bytes whose stack
    // is `stack`, which outlives the child's use of it: with CLONE_VFORK this call returns
    // only after the child has exec'd or exited. The child runs `child_entry` on that
    // stack and never returns into this function; it only makes async-signal-safe calls,
    // writes only its stack, `plan.scratch` and errno (this thread is suspended meanwhile),
    // and has its own fd table, fs and signal handlers (no CLONE_FILES/FS/SIGHAND).
    let ret = unsafe { clone3_on_stack(args, size, child_entry, plan) };
    drop(stack);
    if ret < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(-ret as c_int));
    }
    Ok(ret as libc::pid_t)
}

/// The child's entry point on its own stack (see [`clone3_vfork`]).
///
/// # Safety
/// Only as the child of [`clone3_on_stack`], with the `plan` the parent passed.
unsafe extern "C" fn child_entry(plan: *const ChildPlan) -> ! {
    // SAFETY: the parent passed a valid plan and is suspended until we exec or exit.
    unsafe { child_main(&*plan) }
}

/// The raw `clone3` system call; in the child (return value 0, on the new stack the
/// kernel switched to) it calls `entry(plan)`, which never returns. Returns the child's
/// pid or `-errno` in the parent.
///
/// # Safety
/// `args` must describe a valid clone with a stack, and `entry` must never return.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: *mut CloneArgs,
    size: usize,
    entry: unsafe extern "C" fn(*const ChildPlan) -> !,
    plan: *const ChildPlan,
) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract. In the child the registers are the parent's, so
    // `entry` and `plan` are still in r12/r13; the stack pointer is the top of the new
    // stack, aligned to 16 bytes before the call as the ABI requires.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args,
            in("rsi") size,
            in("r12") entry,
            in("r13") plan,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// See the x86_64 version.
///
/// # Safety
/// `args` must describe a valid clone with a stack, and `entry` must never return.
#[cfg(target_arch = "aarch64")]
unsafe fn clone3_on_stack(
    args: *mut CloneArgs,
    size: usize,
    entry: unsafe extern "C" fn(*const ChildPlan) -> !,
    plan: *const ChildPlan,
) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract. In the child the registers are the parent's, so
    // `entry` and `plan` are still in x9/x10; the kernel set sp to the top of the new
    // stack, which is 16-byte aligned (see `clone3_vfork`).
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x30, xzr",
            "mov x0, x10",
            "blr x9",
            "brk #0",
            "2:",
            inlateout("x0") args as isize => ret,
            in("x1") size,
            in("x8") libc::SYS_clone3,
            in("x9") entry,
            in("x10") plan,
            options(nostack),
        );
    }
    ret
}

/// Not used: [`clone3_vfork`] does not call it on other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn clone3_on_stack(
    _args: *mut CloneArgs,
    _size: usize,
    _entry: unsafe extern "C" fn(*const ChildPlan) -> !,
    _plan: *const ChildPlan,
) -> isize {
    -(libc::ENOSYS as isize)
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child side. Only async-signal-safe raw libc calls: no allocation, no locks, no
/// logging, no unwinding.
///
/// # Safety
/// Must only be called in a freshly cloned child with a valid `plan`: fork-like, or sharing
/// the parent's memory while the parent is suspended until exec (`CLONE_VFORK`).
#[inline(never)]
unsafe fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: (for the whole body) every call below is a raw, async-signal-safe libc call
    // on integers or on pointers into memory the parent prepared and that is valid in this
    // address space; nothing allocates or takes a lock. The only memory written outside
    // this stack is `plan.scratch` and errno, neither of which the suspended parent reads
    // before it resumes.
    unsafe {
        let fail = |stage: RawStage, idx: u32| -> ! {
            let e = *libc::__errno_location();
            let mut buf = [0u8; 12];
            buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
            buf[4..8].copy_from_slice(&e.to_ne_bytes());
            buf[8..12].copy_from_slice(&idx.to_ne_bytes());
            libc::write(plan.err_fd, buf.as_ptr().cast(), buf.len());
            libc::_exit(127)
        };

        // 1. Signal dispositions, then the mask (the parent blocked everything around
        //    the clone, so no parent handler can have run in here).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        if plan.reset_all_handlers {
            for sig in 1..65 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    // Errors (glibc-reserved signals 32/33) are expected and ignored.
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
        } else if libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut()) != 0 {
            fail(RawStage::Signals, 0);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(RawStage::Signals, 0);
        }

        // 2. Fallback cgroup migration: write "0" (= this process) to cgroup.procs.
        if plan.procs_fd >= 0 && libc::write(plan.procs_fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(RawStage::Cgroup, 0);
        }

        // 3. New session.
        if plan.setsid && libc::setsid() < 0 {
            fail(RawStage::Setsid, 0);
        }

        // 4. Parent-death signal; close the race with a parent that already died.
        if plan.pdeathsig != 0 {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.pdeathsig as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                fail(RawStage::ParentDeath, 0);
            }
            if !plan.new_pid_ns && libc::getppid() != plan.parent_pid {
                libc::syscall(libc::SYS_kill, libc::getpid(), plan.pdeathsig);
                libc::_exit(127);
            }
        }

        // 4b. A new network namespace starts with its loopback device down: bring it up
        //     (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP), as `ip link set lo up` does.
        //     Before any setns: a namespace joined by fd is configured by its owner.
        if plan.loopback_up {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if sock < 0 {
                fail(RawStage::Loopback, 0);
            }
            let mut ifr: libc::ifreq = core::mem::zeroed();
            ifr.ifr_name[0] = b'l' as libc::c_char;
            ifr.ifr_name[1] = b'o' as libc::c_char;
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
                fail(RawStage::Loopback, 1);
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) != 0 {
                fail(RawStage::Loopback, 2);
            }
            libc::close(sock);
        }

        // 5. Join namespaces.
        for i in 0..plan.ns_fds_len {
            if libc::setns(*plan.ns_fds.add(i), 0) != 0 {
                fail(RawStage::Setns, i as u32);
            }
        }

        // 6. fd map: first duplicate every source above the highest target (so a later
        //    dup2 cannot clobber a source another mapping still needs), then dup2 each
        //    duplicate onto its target (dup2 clears close-on-exec on the target).
        for i in 0..plan.fd_map_len {
            let (src, _) = *plan.fd_map.add(i);
            let d = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, plan.above_targets);
            if d < 0 {
                fail(RawStage::FdMap, i as u32);
            }
            *plan.scratch.add(i) = d;
        }
        for i in 0..plan.fd_map_len {
            let (_, target) = *plan.fd_map.add(i);
            if libc::dup2(*plan.scratch.add(i), target) < 0 {
                fail(RawStage::FdMap, i as u32);
            }
        }

        // 7. Every other fd >= 3 (but the error pipe) becomes close-on-exec or is closed.
        for i in 0..plan.gaps_len {
            let (lo, hi) = *plan.gaps.add(i);
            match plan.close_mode {
                CloseMode::CloseRangeCloexec | CloseMode::CloseRange => {
                    let flags = if plan.close_mode == CloseMode::CloseRange {
                        0
                    } else {
                        CLOSE_RANGE_CLOEXEC
                    };
                    if libc::syscall(libc::SYS_close_range, lo, hi, flags) != 0 {
                        fail(RawStage::CloseFds, i as u32);
                    }
                }
                CloseMode::Fcntl => {
                    // u64: `hi` may be u32::MAX.
                    let end = (hi as u64).min((plan.fd_limit as u64).saturating_sub(1));
                    let mut fd = lo as u64;
                    while fd <= end {
                        if libc::fcntl(fd as c_int, libc::F_SETFD, libc::FD_CLOEXEC) != 0
                            && *libc::__errno_location() != libc::EBADF
                        {
                            fail(RawStage::CloseFds, i as u32);
                        }
                        fd += 1;
                    }
                }
            }
        }

        // 8. Working directory.
        if !plan.cwd.is_null() && libc::chdir(plan.cwd) != 0 {
            fail(RawStage::Chdir, 0);
        }

        // 9. Exec.
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(RawStage::Exec, 0)
    }
}

/// A saved signal mask, restored by [`restore_signals`].
pub(crate) struct SavedMask(libc::sigset_t);

/// Block every signal in the calling thread, returning the previous mask.
pub(crate) fn block_all_signals() -> SavedMask {
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask are given valid pointers.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        SavedMask(old)
    }
}

/// Restore a mask saved by [`block_all_signals`].
pub(crate) fn restore_signals(saved: SavedMask) {
    // SAFETY: `saved.0` is a mask previously returned by pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved.0, std::ptr::null_mut());
    }
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: c_int) -> io::Result<()> {
    // SAFETY: plain system call on a valid fd with a null siginfo.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The pid of an exited child, without reaping it and without blocking
/// (`waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`); `None` when none has exited.
pub(crate) fn wait_any_exited_nohang_nowait() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: siginfo_t is plain data; waitid writes into it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 {
            return Err(io::Error::last_os_error());
        }
        let pid = info.si_pid();
        Ok((pid != 0).then_some(pid))
    }
}

/// Reaps the child behind `pidfd` if it has exited (`waitid(P_PIDFD, WEXITED | WNOHANG)`);
/// `None` while it runs.
pub(crate) fn reap_pidfd_nohang(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    const P_PIDFD: libc::idtype_t = 3;
    loop {
        // SAFETY: siginfo_t is plain data; waitid writes into it; `pidfd` is a valid fd.
        let res = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG;
            if libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) != 0 {
                Err(io::Error::last_os_error())
            } else if info.si_pid() == 0 {
                Ok(None)
            } else {
                Ok(Some(decode(&info)))
            }
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Gives the calling thread a private copy of the fd table (`unshare(CLONE_FILES)`) and
/// closes every fd in that copy except 0, 1, 2 and `keep`. The originals in the table the
/// other threads share are untouched.
/// Fails (changing nothing) where `close_range` is missing (Linux < 5.9): a private copy
/// that could not be emptied would hold every fd of the process open.
pub(crate) fn private_fd_table(keep: RawFd) -> io::Result<()> {
    // SAFETY: an empty range (no fd has the highest number): closes nothing, only tells
    // whether the kernel has close_range.
    if unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: only the reaper thread calls this, at its start; afterwards it uses only fds
    // it opens itself, `keep` and 0, 1, 2 (it hands everything that might touch another
    // fd, such as waking a future, to another thread), so no fd number it uses can mean
    // a different file than its owner thinks.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FILES) }?;
    let close = |lo: u32, hi: u32| -> io::Result<()> {
        if lo > hi {
            return Ok(());
        }
        // SAFETY: closes only fds of this thread's private copy (see above), none of
        // which it uses.
        if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let keep = keep as u32;
    if keep > 3 {
        close(3, keep - 1)?;
    }
    close(keep.saturating_add(1).max(3), u32::MAX)
}

/// Borrows an fd that stays open for the rest of the process (the reaper's eventfd copy).
pub(crate) fn borrow_forever(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller passes an fd it never closes, so it stays valid for 'static.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Reap the exited child `pid` (`waitid(P_PID, pid, WEXITED)`).
pub(crate) fn reap(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid writes into it.
        let res = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(decode(&info))
            }
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn decode(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: waitid filled `info` for a CLD_* event, so si_status is the valid union member.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        libc::CLD_DUMPED => ExitStatus::Signaled {
            signal: status,
            core_dumped: true,
        },
        _ => ExitStatus::Signaled {
            signal: status,
            core_dumped: false,
        },
    }
}

/// Whether the kernel reaps this process's children by itself because of `SIGCHLD`'s
/// disposition: `Some("SIG_IGN")` or `Some("SA_NOCLDWAIT")`, else `None`.
pub(crate) fn sigchld_autoreaps() -> Option<&'static str> {
    // SAFETY: sigaction with a null new action only reads the current one into `old`,
    // which is plain data.
    let old = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0 {
            return None;
        }
        old
    };
    if old.sa_sigaction == libc::SIG_IGN {
        Some("SIG_IGN")
    } else if old.sa_flags & libc::SA_NOCLDWAIT != 0 {
        Some("SA_NOCLDWAIT")
    } else {
        None
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if ret != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// SIGKILL a child by pid. Only call while holding the reaper's table lock before the
/// child is registered: then it cannot have been reaped, so the pid cannot be reused.
pub(crate) fn kill_unreaped_child(pid: libc::pid_t) {
    // SAFETY: kill(2) with integer arguments; the caller guarantees the pid is our
    // unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// `getpid()`.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// `access(path, X_OK) == 0` for a NUL-terminated path.
pub(crate) fn executable(path: &std::ffi::CStr) -> bool {
    // SAFETY: `path` is a valid NUL-terminated string.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

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

/// Registers an owned fd with the tokio reactor for `interest`.
pub(crate) fn register_readable(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<crate::foreign::Registered> {
    // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`, which owns it from here on;
    // nothing else can close or replace it while it is registered.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}
