//! Creating the child: `clone3` like `posix_spawn` (`CLONE_VM | CLONE_VFORK`, on a stack of
//! its own), `clone3` like `fork`, and the legacy `clone`.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rustix::io::Errno;

use super::child::{ChildPlan, child_main};
use super::{CLONE_CLEAR_SIGHAND, CLONE_INTO_CGROUP};

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VM: u64 = libc::CLONE_VM as u64;
const CLONE_VFORK: u64 = libc::CLONE_VFORK as u64;
/// `sizeof(struct clone_args)` up to and including `cgroup` (`CLONE_ARGS_SIZE_VER2`).
const CLONE_ARGS_SIZE_VER2: usize = 88;
/// `CLONE_ARGS_SIZE_VER0`: without `set_tid` and `cgroup`, for kernels that reject the
/// larger struct with `E2BIG`.
pub(super) const CLONE_ARGS_SIZE_VER0: usize = 64;

/// `struct clone_args` from `<linux/sched.h>`.
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
    pub(super) cgroup: u64,
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

/// Create the child (never sharing this address space when `fork_like`). In the child this never returns: it runs [`child_main`] and either
/// execs or `_exit(127)`s after reporting the failing stage on `plan.err_fd`.
///
/// # Safety
/// * Every pointer in `plan` must be valid as [`ChildPlan`] documents, and the memory
///   behind them must not be changed or freed until this returns (with `CLONE_VFORK` the
///   child reads and writes it while this thread is suspended).
/// * Every signal must be blocked in the calling thread (see
///   [`block_all_signals`](super::block_all_signals)): a handler of the parent running in
///   a child that shares its memory, before the child has reset the dispositions, would
///   change the parent's state behind its back.
pub(crate) unsafe fn clone_child(
    kind: CloneKind,
    fork_like: bool,
    ns_flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    plan: &ChildPlan,
) -> Result<Cloned, Errno> {
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
            // SAFETY: the caller's contract (valid plan, signals blocked) is ours.
            let first = if fork_like {
                Err(Errno::NOSYS)
            } else {
                // SAFETY: as above.
                unsafe { clone3_vfork(&mut args, size, plan) }
            };
            let ret = match first {
                Ok(pid) => pid,
                // Not tried here, or the kernel refused the vfork flags (or, as for
                // `clone3_fork` too, another flag): clone like `fork`.
                Err(e @ (Errno::NOSYS | Errno::INVAL)) => {
                    // SAFETY: as above.
                    let pid = unsafe { clone3_fork(&mut args, size, plan) }?;
                    if e == Errno::INVAL {
                        VFORK_REFUSED.store(true, Relaxed);
                    }
                    pid
                }
                Err(e) => return Err(e),
            };
            // SAFETY: the kernel stored a new, owned pidfd (CLONE_PIDFD) in `pidfd`.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned {
                pid: ret,
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
                return Err(last_errno());
            }
            if ret == 0 {
                // SAFETY: we are the fork-like child with a private copy of `plan` and of
                // the memory it points to; signals are blocked (the caller's contract).
                unsafe { child_main(plan) }
            }
            Ok(Cloned {
                pid: ret as libc::pid_t,
                pidfd: None,
            })
        }
    }
}

/// The errno of the last failed libc call, for `libc::syscall`'s `-1` returns.
fn last_errno() -> Errno {
    Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// `clone3` like `fork()`: the child gets a private copy of the address space and continues
/// on a copy of this stack, then runs [`child_main`]. Returns the child's pid.
///
/// # Safety
/// As for [`clone_child`].
unsafe fn clone3_fork(
    args: &mut CloneArgs,
    size: usize,
    plan: &ChildPlan,
) -> Result<libc::pid_t, Errno> {
    args.flags &= !(CLONE_VM | CLONE_VFORK);
    args.stack = 0;
    args.stack_size = 0;
    // SAFETY: clone3 with a valid, fully initialised clone_args of `size` bytes, no
    // CLONE_VM and no stack: the child gets a private copy of the address space and
    // continues on a copy of this stack, like fork(). `args.pidfd` is a valid out pointer.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args as *mut CloneArgs, size) };
    if ret < 0 {
        return Err(last_errno());
    }
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; `plan` is our copy of the parent's
        // prepared plan and all its pointers are valid in our address space; signals are
        // blocked (the caller's contract).
        unsafe { child_main(plan) }
    }
    Ok(ret as libc::pid_t)
}

/// Usable stack of the child of a [`clone3_vfork`]: [`child_main`] needs little (no
/// allocation, a few libc calls, `execve`). A multiple of the page size.
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// Whether `clone3(CLONE_VM | CLONE_VFORK)` was refused (`EINVAL`) where the same clone
/// without those flags worked; it is then never tried again.
static VFORK_REFUSED: AtomicBool = AtomicBool::new(false);

/// The stack of a vfork child: a private anonymous mapping (`MAP_STACK`, `MAP_NORESERVE`:
/// only the pages the child touches are ever backed) of one guard page plus
/// [`CHILD_STACK_SIZE`]. The guard page is the lowest one (the stack grows down) and is
/// `PROT_NONE`, so an overflow kills the child with `SIGSEGV` instead of writing into
/// whatever memory of the parent lies below. Unmapped on drop (see `CACHED_STACK`).
pub(crate) struct ChildStack {
    base: *mut std::ffi::c_void,
    len: usize,
    guard: usize,
}

thread_local! {
    /// The calling thread's vfork stack, kept between spawns and unmapped when the thread
    /// ends. Mapping, guarding, faulting in and unmapping one per spawn cost about 15 µs
    /// (1-2% of a spawn in `examples/spawn_bench`; the `munmap` of pages the child touched
    /// also flushes the TLBs of the CPUs this process's threads ran on). A thread that has
    /// spawned keeps 68 KiB of address space, of which only the few pages a child touched
    /// are backed.
    static CACHED_STACK: std::cell::Cell<Option<ChildStack>> = const { std::cell::Cell::new(None) };
}

impl ChildStack {
    /// Maps a stack: a guard page and [`CHILD_STACK_SIZE`] usable bytes.
    pub(crate) fn map() -> Result<ChildStack, Errno> {
        use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
        let guard = rustix::param::page_size();
        let len = guard + CHILD_STACK_SIZE.next_multiple_of(guard);
        // SAFETY: a new anonymous mapping at an address the kernel chooses (null hint, no
        // MAP_FIXED): no existing memory is affected.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::STACK | MapFlags::NORESERVE,
            )
        }?;
        // From here on, dropping `stack` unmaps it.
        let stack = ChildStack { base, len, guard };
        // SAFETY: the lowest page of the mapping just created, which nothing refers to.
        unsafe { rustix::mm::mprotect(base, guard, MprotectFlags::empty()) }?;
        Ok(stack)
    }

    /// The lowest usable address (just above the guard page) and the usable size.
    pub(crate) fn usable(&self) -> (u64, u64) {
        (
            self.base as u64 + self.guard as u64,
            (self.len - self.guard) as u64,
        )
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made by `map`, to which no reference exists; nothing
        // runs on it any more: every vfork child that used it had exec'd or exited before
        // its clone3 returned in the parent (CLONE_VFORK), and the stack is out of its
        // thread's slot only during such a call.
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// `clone3` like `posix_spawn`'s `vfork`: the child shares this address space (no page
/// tables copied, no copy-on-write faults afterwards in this process's threads) and runs
/// [`child_main`] on a [`ChildStack`] of its own, while this thread is suspended by the
/// kernel until the child has called `execve` or exited. Returns the child's pid.
///
/// `Err(NOSYS)` without trying on architectures without a trampoline below, after the
/// kernel refused the flags once, or when the stack cannot be mapped; the caller then
/// clones like `fork`.
///
/// # Safety
/// As for [`clone_child`].
unsafe fn clone3_vfork(
    args: &mut CloneArgs,
    size: usize,
    plan: &ChildPlan,
) -> Result<libc::pid_t, Errno> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) || VFORK_REFUSED.load(Relaxed) {
        return Err(Errno::NOSYS);
    }
    // This thread's stack, taken out of its slot while in use (so even a nested spawn
    // could never share it), mapped on the thread's first vfork spawn.
    let stack = match CACHED_STACK.try_with(|c| c.take()).ok().flatten() {
        Some(stack) => stack,
        None => match ChildStack::map() {
            Ok(stack) => stack,
            Err(_) => return Err(Errno::NOSYS),
        },
    };
    let (lowest, usable) = stack.usable();
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = lowest;
    args.stack_size = usable;
    // SAFETY: `args` is a valid, fully initialised clone_args of `size` bytes whose stack
    // is `stack` (page-aligned at both ends, so 16-byte aligned as both ABIs want), which
    // outlives the child's use of it: with CLONE_VFORK this call returns only after the
    // child has exec'd or exited (also when a signal kills it), and `stack` is reused or
    // unmapped only after that. The child runs `child_entry` on that stack and never returns into
    // this function; it only makes async-signal-safe calls, writes only its stack,
    // `plan.scratch` and errno (this thread is suspended meanwhile), and has its own fd
    // table, fs and signal handlers (no CLONE_FILES/FS/SIGHAND). Signals are blocked (the
    // caller's contract).
    let ret = unsafe { clone3_on_stack(args, size, child_entry, plan) };
    // Nothing runs on it any more (see above): keep it for this thread's next spawn (or,
    // in a thread that is ending, unmap it now).
    let _ = CACHED_STACK.try_with(move |c| c.set(Some(stack)));
    if ret < 0 {
        return Err(Errno::from_raw_os_error(-ret as c_int));
    }
    Ok(ret as libc::pid_t)
}

/// The init's clone of the program (see [`start_init`](super::jail::start_init)):
/// `clone3(CLONE_VM | CLONE_VFORK)` with `SIGCHLD`, the child on the stack
/// `[lowest, lowest + size)`, running [`program_entry`]. Returns the child's pid once it has
/// exec'd or exited, or the errno (`ENOSYS` where there is no trampoline).
///
/// # Safety
/// In a process of its own address space (the init): the stack must be mapped, writable,
/// 16-byte aligned at its top and used by nothing else; `plan` must be valid as
/// [`ChildPlan`] documents; every signal must be blocked.
pub(super) unsafe fn clone_program(
    lowest: u64,
    size: u64,
    plan: &ChildPlan,
) -> Result<libc::pid_t, c_int> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return Err(libc::ENOSYS);
    }
    let mut args = CloneArgs {
        flags: CLONE_VM | CLONE_VFORK,
        exit_signal: libc::SIGCHLD as u64,
        stack: lowest,
        stack_size: size,
        ..Default::default()
    };
    // SAFETY: a valid clone_args of its VER0 size with a stack (the caller's contract);
    // the child runs `program_entry` on it, never returns into this function, and this
    // process is suspended until it has exec'd or exited (CLONE_VFORK).
    let ret = unsafe { clone3_on_stack(&mut args, CLONE_ARGS_SIZE_VER0, program_entry, plan) };
    if ret < 0 {
        return Err(-ret as c_int);
    }
    Ok(ret as libc::pid_t)
}

/// The entry point of the init's program child on its own stack (see [`clone_program`]):
/// signals unblocked, then the rest of the spawn.
///
/// # Safety
/// Only as the child of [`clone_program`], with the `plan` the init passed.
unsafe extern "C" fn program_entry(plan: *const ChildPlan) -> ! {
    // SAFETY: the init passed a valid plan and is suspended until we exec or exit.
    let plan = unsafe { &*plan };
    super::jail::unblock_in_program(plan.err_fd);
    // SAFETY: as above; we are the program's process.
    unsafe { super::child::child_rest(plan) }
}

/// The child's entry point on its own stack (see [`clone3_vfork`]).
///
/// # Safety
/// Only as the child of [`clone3_on_stack`], with the `plan` the parent passed.
unsafe extern "C" fn child_entry(plan: *const ChildPlan) -> ! {
    // SAFETY: the parent passed a valid plan and is suspended until we exec or exit;
    // signals are blocked.
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
