//! The child side of a jail: what [`child_main`](super::child::child_main) runs for a
//! [`RawJail`] between the clone and `execve`.
//!
//! Same rules as `child.rs`: async-signal-safe raw calls only (no allocation, no locks, no
//! formatting, no panics), every argument prepared by the parent
//! (`jail::prepare::PreparedJail`). Credentials are changed with the raw `setgroups`,
//! `setresgid` and `setresuid` system calls: glibc's wrappers broadcast the change to every
//! thread of the process with signals (`nptl` "setxid"), which is wrong in a child that
//! shares the parent's memory and not async-signal-safe.
//!
//! Order, in two hooks:
//! * [`before_fds`] (after `setns` and the loopback): wait for the user namespace's maps;
//!   the hostname; the filesystem ([`super::mount`]); the init fork ([`start_init`]: the
//!   clone child stays as pid 1 of the new PID namespace, the program goes on in its child).
//! * [`before_exec`] (after the fd map, the fd closing and `chdir`): rlimits; the
//!   capability bounding set; `PR_SET_KEEPCAPS`; `setgroups`/`setresgid`/`setresuid`;
//!   `capset`; the ambient set (cleared, then the kept set raised for a non-root uid);
//!   `PR_SET_NO_NEW_PRIVS`; Landlock (the child rules, then `landlock_restrict_self`); the
//!   seccomp filter, last. Without `no_new_privs`, Landlock and seccomp come first instead,
//!   while the child is still privileged (see [`restrict`]).
//!
//! Over 600 lines: the jail's child-side steps run in one fixed order under one set of
//! async-signal-safety rules, and read best as one sequence.

use std::ffi::{c_char, c_int};
use std::os::fd::RawFd;

use super::child::{RawStage, fail, fail_errno, last_errno};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `prctl` options the `libc` crate does not define on every target.
const PR_CAPBSET_DROP: c_int = 24;
const PR_SET_KEEPCAPS: c_int = 8;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_RAISE: libc::c_ulong = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;
/// `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// `LANDLOCK_RULE_PATH_BENEATH`.
const LANDLOCK_RULE_PATH_BENEATH: libc::c_ulong = 1;

/// Index offsets of [`RawStage::Capabilities`] reports: which call failed.
pub(crate) const CAP_IDX_KEEPCAPS: u32 = 0;
pub(crate) const CAP_IDX_CAPSET: u32 = 1;
pub(crate) const CAP_IDX_AMBIENT_CLEAR: u32 = 2;
/// `+ n`: dropping capability `n` from the bounding set.
pub(crate) const CAP_IDX_BOUNDING: u32 = 100;
/// `+ n`: raising capability `n` in the ambient set.
pub(crate) const CAP_IDX_AMBIENT: u32 = 200;
/// Index of [`RawStage::Landlock`] for `landlock_restrict_self` (else the child rule's).
pub(crate) const LANDLOCK_IDX_RESTRICT: u32 = u32::MAX;

/// One `prlimit` of the child.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRlimit {
    pub resource: u32,
    /// `struct rlimit64 { rlim_cur, rlim_max }`.
    pub limits: [u64; 2],
}

/// One Landlock rule the child adds after its mounts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawLandlockRule {
    /// NUL-terminated path in the program's view.
    pub path: *const c_char,
    /// `LANDLOCK_ACCESS_FS_*` bits.
    pub access: u64,
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel declares it).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Everything a jailed child does beyond a plain spawn, as raw pointers and integers into
/// the parent's `PreparedJail` (valid in the child as [`super::ChildPlan`]'s are).
#[derive(Debug)]
pub(crate) struct RawJail {
    /// User namespace: the read end of the sync pipe (the child waits for one byte once the
    /// parent has written the maps) and the parent's write end (closed first, so a parent
    /// that gives up means EOF); both -1 without a user namespace.
    pub sync_read: RawFd,
    pub sync_write: RawFd,
    /// `sethostname` argument, or null.
    pub hostname: *const u8,
    pub hostname_len: usize,
    /// The filesystem plan, or null.
    pub fs: *const super::mount::RawFs,
    /// Fork an init (pid 1 of the new PID namespace) that runs the program as its child.
    pub init: bool,
    /// The lowest usable address and the size of the stack the init's program child runs
    /// on (see [`start_init`]); 0 when there is none (the init then forks the program).
    pub init_stack: u64,
    pub init_stack_size: u64,
    /// The init image's memfd (`jail::init_image`), or -1: with it, the init execs
    /// `paddock-init` once the program has started ([`start_init`]) instead of running
    /// [`init_loop`] itself, so it may share the spawner's memory until then.
    pub init_image: RawFd,
    /// The image's argv (see `init/paddock-init.c`), NULL-terminated; `init_argv[1]` and
    /// `init_argv[2]` point to `init_numbers` and `init_numbers + INIT_NUMBER_LEN`, which
    /// the init fills with the program's pid and the error pipe's fd number.
    pub init_argv: *const *const c_char,
    /// An empty environment (a NULL-terminated array).
    pub init_envp: *const *const c_char,
    /// Two buffers of [`INIT_NUMBER_LEN`] bytes, written only by the init (in its own copy
    /// of the memory, or while the spawner is suspended).
    pub init_numbers: *mut u8,
    pub rlimits: *const RawRlimit,
    pub rlimits_len: usize,
    /// Change the credentials (`setresgid`, `setresuid`, and `setgroups` when `set_groups`).
    pub set_ids: bool,
    pub set_groups: bool,
    pub uid: u32,
    pub gid: u32,
    pub groups: *const libc::gid_t,
    pub groups_len: usize,
    /// Set the capabilities to `cap_set` (bounding, permitted, effective, inheritable,
    /// ambient); `cap_last` is the kernel's highest capability number.
    pub set_caps: bool,
    pub cap_set: u64,
    pub cap_last: u32,
    /// `PR_SET_KEEPCAPS` before the uid change.
    pub keep_caps: bool,
    /// Raise `cap_set` in the ambient set (a non-root uid: else `execve` drops them).
    pub ambient: bool,
    pub no_new_privs: bool,
    /// The Landlock ruleset (numbered above every fd-map target), or -1.
    pub landlock_fd: RawFd,
    pub landlock_rules: *const RawLandlockRule,
    pub landlock_rules_len: usize,
    /// The seccomp program, or null.
    pub seccomp: *const libc::sock_fprog,
}

/// Steps before the fd map: the user namespace's maps, the hostname, the filesystem.
///
/// # Safety
/// As [`child_main`](super::child::child_main): in the freshly cloned child, with every
/// pointer of `j` valid as [`RawJail`] documents.
pub(super) unsafe fn before_fds(j: &RawJail, err_fd: RawFd) {
    if j.sync_read >= 0 {
        // SAFETY: closes this child's copy of the parent's end of the sync pipe (the
        // parent keeps its own), an fd number of this child's own table.
        unsafe { libc::close(j.sync_write) };
        let mut b = 0u8;
        loop {
            // SAFETY: read(2) of one byte into a valid byte on this stack.
            let r = unsafe { libc::read(j.sync_read, (&mut b as *mut u8).cast(), 1) };
            if r == 1 {
                break;
            }
            if r == 0 {
                // The parent closed the pipe without the byte: it could not write the maps.
                fail_errno(err_fd, RawStage::UserNsSync, 0, libc::ECHILD);
            }
            if last_errno() != libc::EINTR {
                fail(err_fd, RawStage::UserNsSync, 0);
            }
        }
        // SAFETY: closes the read end, which nothing else in this child uses.
        unsafe { libc::close(j.sync_read) };
    }

    if !j.hostname.is_null() {
        // SAFETY: sethostname with a pointer to `hostname_len` bytes the parent prepared.
        if unsafe { libc::syscall(libc::SYS_sethostname, j.hostname, j.hostname_len) } != 0 {
            fail(err_fd, RawStage::Hostname, 0);
        }
    }

    if !j.fs.is_null() {
        // SAFETY: `fs` points to the parent's plan, valid as `RawFs` documents.
        unsafe { super::mount::run(&*j.fs, err_fd) };
    }
}

/// The signals the init passes on to the program.
const FORWARDED: [c_int; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Start the program as a child of this process (pid 1 of the new PID namespace), which
/// becomes the init: never returns in the init. The program goes on with the rest of the
/// spawn ([`child_rest`](super::child::child_rest)): on the vfork-like path in its own
/// call on the stack the parent prepared (`init_stack`), on the fork path by returning
/// from this function.
///
/// The vfork-like path (`clone3(CLONE_VM | CLONE_VFORK)` on that stack) copies nothing;
/// the init is suspended until the program has exec'd or exited. Without a stack, or where
/// the kernel or the architecture refuses it, a raw `clone(SIGCHLD)` (not glibc's `fork`,
/// which runs atfork handlers and takes locks) forks the program. No seccomp filter is
/// installed yet, so `clone3` cannot have been denied by one.
///
/// Then, with the init image (`init_image >= 0`), the init execs it ([`exec_image`]): the
/// image drops the init's privileges and runs the init's loop in memory of its own, so
/// this process may be a vfork-like child sharing the spawner's memory (it changes nothing
/// shared before its `execve`: not the memory's `dumpable` flag, not its credentials).
/// Without the image this process must be a fork-like copy (the spawner's policy makes it
/// one): it names itself, becomes non-dumpable, drops its privileges
/// ([`drop_init_privileges`]) and runs [`init_loop`].
///
/// Every signal is blocked in the init before the clone (so a signal cannot slip in before
/// the init waits for it: pid 1 ignores unhandled signals, but not blocked ones, which
/// stay pending for `sigwaitinfo`, across the image's `execve` too); the program unblocks
/// them.
///
/// # Safety
/// As [`child_main`](super::child::child_main), in the freshly cloned child, with `plan`
/// and `j` valid; fork-like unless `j.init_image >= 0`.
pub(super) unsafe fn start_init(plan: &super::ChildPlan, j: &RawJail, err_fd: RawFd) {
    // SAFETY: `sigset_t` is plain data; all-zero bytes are valid.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset on a valid set on this stack.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: sigprocmask with a valid set and a null old-set pointer.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()) } != 0 {
        fail(err_fd, RawStage::Init, 0);
    }
    if j.init_image < 0 {
        name_init(err_fd);
    }
    let mut program = None;
    if j.init_stack != 0 {
        // SAFETY: the stack was mapped by the parent before the clone that made this
        // process and is used by nothing else (this process has its own copy of it, or
        // shares it with the suspended spawner); the child runs `program_entry(plan)` on
        // it and never returns; `plan` is valid in this address space, which the child
        // shares while this process is suspended.
        match unsafe { super::clone::clone_program(j.init_stack, j.init_stack_size, plan) } {
            Ok(pid) => program = Some(pid),
            // Not possible here: fork as below.
            Err(e) if e == libc::ENOSYS || e == libc::EINVAL || e == libc::E2BIG => {}
            Err(_) => fail(err_fd, RawStage::Init, 1),
        }
    }
    let program = match program {
        Some(pid) => pid,
        None => {
            // SAFETY: legacy clone(2) without CLONE_VM and with a null stack behaves like
            // fork(): the child continues on a private copy of this stack and address
            // space. No CLONE_*TID flag is set, so the tid pointers are unused.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::SIGCHLD as libc::c_ulong,
                    0usize,
                    std::ptr::null_mut::<c_int>(),
                    std::ptr::null_mut::<c_int>(),
                    0usize,
                )
            };
            if pid < 0 {
                fail(err_fd, RawStage::Init, 1);
            }
            if pid == 0 {
                unblock_in_program(err_fd);
                return;
            }
            pid as libc::pid_t
        }
    };
    if j.init_image >= 0 {
        // SAFETY: as this function's contract, with the program started.
        unsafe { exec_image(j, program, err_fd) }
    }
    drop_init_privileges(j, err_fd);
    init_loop(program, &all)
}

/// Bytes of each of the init image's two number arguments (`RawJail::init_numbers`).
pub(crate) const INIT_NUMBER_LEN: usize = 16;

/// `v` (>= 0) in decimal, NUL-terminated, into the `INIT_NUMBER_LEN` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for `INIT_NUMBER_LEN` bytes of writes.
unsafe fn write_decimal(buf: *mut u8, v: i64) {
    let mut digits = [0u8; 20];
    let mut n = v.max(0) as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == INIT_NUMBER_LEN - 1 {
            break;
        }
    }
    let mut at = 0;
    while len > 0 {
        len -= 1;
        // SAFETY: `at` < INIT_NUMBER_LEN - 1, within the caller's buffer.
        unsafe { *buf.add(at) = digits[len] };
        at += 1;
    }
    // SAFETY: `at` <= INIT_NUMBER_LEN - 1.
    unsafe { *buf.add(at) = 0 };
}

/// The init becomes `paddock-init` (`init/paddock-init.c`): its argv gets the program's pid
/// and the error pipe's number, the error pipe stays open across the `execve` (the image
/// reports its privilege drop on it, then closes it, which ends the spawner's wait), and
/// `execveat(image, "", AT_EMPTY_PATH)`. A failure is [`RawStage::Init`] index 10 (the
/// pipe) or 9 (the exec; the spawner then stops using the image); the init then exits,
/// which ends the namespace and the program with it.
///
/// # Safety
/// As [`start_init`]; `j.init_image >= 0`, with `init_argv`, `init_envp` and
/// `init_numbers` valid as [`RawJail`] documents.
unsafe fn exec_image(j: &RawJail, program: libc::pid_t, err_fd: RawFd) -> ! {
    // SAFETY: the parent's two buffers of INIT_NUMBER_LEN bytes each.
    unsafe {
        write_decimal(j.init_numbers, program as i64);
        write_decimal(j.init_numbers.add(INIT_NUMBER_LEN), err_fd as i64);
    }
    // SAFETY: fcntl(F_SETFD) on an fd of this process's own table (not shared with the
    // spawner: no CLONE_FILES), with an integer argument.
    if unsafe { libc::fcntl(err_fd, libc::F_SETFD, 0) } != 0 {
        fail(err_fd, RawStage::Init, 10);
    }
    // SAFETY: execveat of the sealed memfd with an empty NUL-terminated path, and argv and
    // envp NULL-terminated arrays of NUL-terminated strings the parent prepared.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            j.init_image,
            c"".as_ptr(),
            j.init_argv,
            j.init_envp,
            libc::AT_EMPTY_PATH,
        )
    };
    fail(err_fd, RawStage::Init, 9)
}

/// In the init's child (the program): every signal unblocked again.
pub(super) fn unblock_in_program(err_fd: RawFd) {
    // SAFETY: `sigset_t` is plain data; all-zero bytes are valid (an empty set).
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset on a valid set on this stack.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: sigprocmask with a valid set and a null old-set pointer.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) } != 0 {
        fail(err_fd, RawStage::Init, 2);
    }
}

/// The init's name and its memory made non-dumpable, before the program is started (so
/// neither is ever seen otherwise from inside the namespace; the program's `execve`
/// resets both for itself).
fn name_init(err_fd: RawFd) {
    // SAFETY: prctl(PR_SET_NAME) with a pointer to a NUL-terminated static string.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            INIT_NAME.as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        fail(err_fd, RawStage::Init, 3);
    }
}

/// `PR_SET_NAME`'s argument: what `ps` shows for the init (it would show the name of the
/// parent's thread that spawned it otherwise).
const INIT_NAME: &[u8; 13] = b"paddock-init\0";

/// The init gives up what it does not need before it waits (named `paddock-init` and not
/// dumpable already, [`name_init`]: its memory is a copy of the spawning process's, which
/// nothing in the jail may read through `ptrace` or `/proc/1/mem`): the jail's uid and gid
/// (so nothing in the sandbox runs as the caller); no capabilities; `no_new_privs`. Until
/// then the program, already running, sees a root pid 1 it can neither signal nor trace (it
/// has neither the init's uid nor its capabilities, and the init is not dumpable). A failure
/// is reported as [`RawStage::Init`] (index 4 and up) and ends the init, and with it the
/// namespace.
fn drop_init_privileges(j: &RawJail, err_fd: RawFd) {
    if j.set_ids {
        if j.set_groups {
            // SAFETY: raw setgroups with an empty list (a null pointer is not read).
            let r = unsafe {
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
            };
            if r != 0 {
                fail(err_fd, RawStage::Init, 4);
            }
        }
        // SAFETY: raw setresgid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresgid, j.gid, j.gid, j.gid) } != 0 {
            fail(err_fd, RawStage::Init, 5);
        }
        // SAFETY: raw setresuid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresuid, j.uid, j.uid, j.uid) } != 0 {
            fail(err_fd, RawStage::Init, 6);
        }
    }
    // `struct __user_cap_header_struct { version, pid }` and two empty data structs.
    let header: [u32; 2] = [CAPABILITY_VERSION_3, 0];
    let data = [0u32; 6];
    // SAFETY: raw capset of this thread with a valid header and data on this stack.
    if unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) } != 0 {
        fail(err_fd, RawStage::Init, 7);
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(err_fd, RawStage::Init, 8);
    }
}

/// The init: holds no fd, forwards [`FORWARDED`] signals to the program, reaps every
/// child, and exits with the program's status once it is reaped (`128 + signal` when a
/// signal killed it); the kernel then kills what is left of the namespace.
fn init_loop(program: libc::pid_t, all: &libc::sigset_t) -> ! {
    // Nothing of the spawn's (the error pipe, stdio, the Landlock ruleset) stays open in
    // the init: the program has its own copies.
    // SAFETY: close_range over this process's own fd table, with integer arguments.
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } != 0 {
        for fd in 0..1024 {
            // SAFETY: close of an fd number of this process's own table.
            unsafe { libc::close(fd) };
        }
    }
    loop {
        // SAFETY: `siginfo_t` is plain data; all-zero bytes are valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: rt_sigtimedwait with the full set, a valid siginfo out pointer on this
        // stack, no timeout, and the kernel's sigset size (8 bytes).
        let sig = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                all as *const libc::sigset_t,
                &mut info as *mut libc::siginfo_t,
                std::ptr::null::<libc::timespec>(),
                8usize,
            )
        } as c_int;
        if sig == libc::SIGCHLD {
            loop {
                let mut status: c_int = 0;
                // SAFETY: wait4 for any child with a valid status out pointer and no
                // rusage.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_wait4,
                        -1 as libc::pid_t,
                        &mut status as *mut c_int,
                        libc::WNOHANG,
                        std::ptr::null_mut::<libc::rusage>(),
                    )
                } as libc::pid_t;
                if r <= 0 {
                    break;
                }
                if r == program {
                    let code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        128 + libc::WTERMSIG(status)
                    };
                    // SAFETY: _exit ends the init (and with it the namespace).
                    unsafe { libc::_exit(code) };
                }
            }
        } else if FORWARDED.contains(&sig) {
            // SAFETY: kill(2) of the program with integer arguments (a raw system call).
            unsafe { libc::syscall(libc::SYS_kill, program, sig) };
        }
    }
}

/// Steps after `chdir`, just before `execve`: rlimits, capabilities and credentials,
/// no_new_privs, then Landlock and seccomp ([`restrict`]; before the capabilities and
/// credentials instead when there is no `no_new_privs`).
///
/// # Safety
/// As [`before_fds`].
pub(super) unsafe fn before_exec(j: &RawJail, err_fd: RawFd) {
    // SAFETY: (this and the next two slices) the parent built each pointer from a live Vec
    // of the given length (dangling and aligned when empty), unchanged until the exec.
    let rlimits = unsafe { std::slice::from_raw_parts(j.rlimits, j.rlimits_len) };
    // SAFETY: see above.
    let groups = unsafe { std::slice::from_raw_parts(j.groups, j.groups_len) };
    // SAFETY: see above.
    let rules = unsafe { std::slice::from_raw_parts(j.landlock_rules, j.landlock_rules_len) };

    for (i, r) in rlimits.iter().enumerate() {
        // SAFETY: prlimit64 on this process (pid 0) with a valid `struct rlimit64` (two
        // u64) on the parent's prepared array and a null old-limit pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                r.resource,
                r.limits.as_ptr(),
                std::ptr::null_mut::<u64>(),
            )
        };
        if rc != 0 {
            fail(err_fd, RawStage::Rlimit, i as u32);
        }
    }

    if !j.no_new_privs {
        // SAFETY: as below.
        unsafe { restrict(j, rules, err_fd) };
    }

    if j.set_caps {
        // The bounding set first, while still privileged (CAP_SETPCAP).
        for cap in 0..=j.cap_last.min(63) {
            if j.cap_set & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let r = unsafe { libc::prctl(PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if r != 0 {
                    fail(err_fd, RawStage::Capabilities, CAP_IDX_BOUNDING + cap);
                }
            }
        }
        // SAFETY: prctl with integer arguments.
        if j.keep_caps && unsafe { libc::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            fail(err_fd, RawStage::Capabilities, CAP_IDX_KEEPCAPS);
        }
    }

    if j.set_ids {
        if j.set_groups {
            // SAFETY: raw setgroups with a pointer to `groups_len` gids the parent prepared
            // (dangling but unread when empty); a raw system call on this thread only.
            let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
            if r != 0 {
                fail(err_fd, RawStage::Credentials, 0);
            }
        }
        // SAFETY: raw setresgid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresgid, j.gid, j.gid, j.gid) } != 0 {
            fail(err_fd, RawStage::Credentials, 1);
        }
        // SAFETY: raw setresuid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresuid, j.uid, j.uid, j.uid) } != 0 {
            fail(err_fd, RawStage::Credentials, 2);
        }
    }

    if j.set_caps {
        let lo = j.cap_set as u32;
        let hi = (j.cap_set >> 32) as u32;
        // `struct __user_cap_header_struct { version, pid }`.
        let header: [u32; 2] = [CAPABILITY_VERSION_3, 0];
        // Two `struct __user_cap_data_struct { effective, permitted, inheritable }`.
        let data: [u32; 6] = [lo, lo, lo, hi, hi, hi];
        // SAFETY: raw capset of this thread (pid 0) with a valid header and the two data
        // structs version 3 wants, both on this stack.
        if unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) } != 0 {
            fail(err_fd, RawStage::Capabilities, CAP_IDX_CAPSET);
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
        if r != 0 {
            fail(err_fd, RawStage::Capabilities, CAP_IDX_AMBIENT_CLEAR);
        }
        for cap in 0..=j.cap_last.min(63) {
            if j.ambient && j.cap_set & (1u64 << cap) != 0 {
                // SAFETY: prctl with integer arguments.
                let r = unsafe {
                    libc::prctl(
                        PR_CAP_AMBIENT,
                        PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if r != 0 {
                    fail(err_fd, RawStage::Capabilities, CAP_IDX_AMBIENT + cap);
                }
            }
        }
    }

    // SAFETY: prctl with integer arguments.
    if j.no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(err_fd, RawStage::NoNewPrivs, 0);
    }

    if j.no_new_privs {
        // SAFETY: (both) the caller's contract: in the child, `j` valid as documented.
        unsafe { restrict(j, rules, err_fd) };
    }
}

/// Landlock (the child rules, then `landlock_restrict_self`) and the seccomp filter. Both
/// need `no_new_privs` or `CAP_SYS_ADMIN`: with `no_new_privs` they come last, right before
/// `execve`; without it, while the child is still privileged — before the capabilities and
/// credentials change, as runc installs seccomp early when `noNewPrivileges` is off (the
/// filter must then allow what the remaining steps call: `prctl`, `capset`, `setresuid`,
/// `setresgid`, `setgroups`, `execve`; the default profile does).
///
/// # Safety
/// As [`before_fds`]; `rules` are `j`'s Landlock child rules.
unsafe fn restrict(j: &RawJail, rules: &[RawLandlockRule], err_fd: RawFd) {
    if j.landlock_fd >= 0 {
        for (i, rule) in rules.iter().enumerate() {
            // SAFETY: open(2) of a NUL-terminated path the parent prepared.
            let fd = unsafe {
                libc::open(
                    rule.path,
                    libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
                )
            };
            if fd < 0 {
                fail(err_fd, RawStage::Landlock, i as u32);
            }
            let attr = PathBeneathAttr {
                allowed_access: rule.access,
                parent_fd: fd,
            };
            // SAFETY: landlock_add_rule with a valid packed attribute on this stack.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    j.landlock_fd,
                    LANDLOCK_RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr,
                    0,
                )
            };
            if r != 0 {
                fail(err_fd, RawStage::Landlock, i as u32);
            }
            // SAFETY: closes the fd opened above.
            unsafe { libc::close(fd) };
        }
        // SAFETY: landlock_restrict_self with integer arguments.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, j.landlock_fd, 0) } != 0 {
            fail(err_fd, RawStage::Landlock, LANDLOCK_IDX_RESTRICT);
        }
    }

    if !j.seccomp.is_null() {
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with the parent's `sock_fprog`, whose
        // instructions live in the parent's prepared Vec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                j.seccomp,
            )
        };
        if r != 0 {
            fail(err_fd, RawStage::Seccomp, 0);
        }
    }
}
