//! The only `unsafe` of the benchmark: a bare `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)` +
//! `execve`, the floor the other implementations are measured against (the same approach
//! as `paddock-proc/examples/spawn_bench.rs`).
//!
//! Only the helper subprocess calls [`spawn_into`] (from its main thread, or from
//! `floor-parallel`'s threads): a fork-like clone followed in the child by nothing but
//! `execve` and `_exit`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use paddock_proc::CLONE_INTO_CGROUP;

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

/// A program with its arguments and environment, converted to C strings once, before any
/// clone, so the child only has to call `execve`.
pub struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    envp_p: Vec<*const libc::c_char>,
}

impl Prepared {
    /// `argv[0]` is `path`; the environment is this process's.
    pub fn new(path: &str, args: &[&str]) -> Prepared {
        let path_c = CString::new(path).expect("no NUL in path");
        let argv: Vec<CString> = std::iter::once(path)
            .chain(args.iter().copied())
            .map(|a| CString::new(a).expect("no NUL in argument"))
            .collect();
        let envp: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut b = k.as_bytes().to_vec();
                b.push(b'=');
                b.extend_from_slice(OsStr::as_bytes(&v));
                CString::new(b).expect("no NUL in environment")
            })
            .collect();
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Prepared {
            argv_p: ptrs(&argv),
            envp_p: ptrs(&envp),
            path: path_c,
            _argv: argv,
            _envp: envp,
        }
    }
}

/// Spawns `prog` straight into the cgroup `cg` and returns its pid and pidfd.
pub fn spawn_into(cg: BorrowedFd<'_>, prog: &Prepared) -> io::Result<(i32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack) with a valid, fully initialised
    // clone_args of the size passed. The child's copy of the address space may hold locks
    // of the helper's other threads (floor-parallel), but the child takes none: it only
    // calls execve and _exit, both async-signal-safe.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child only execve and _exit run, both async-signal-safe, on
        // NUL-terminated strings and NULL-terminated pointer arrays prepared before the
        // clone and still alive (the child has a copy of `prog`).
        unsafe {
            libc::execve(
                prog.path.as_ptr(),
                prog.argv_p.as_ptr(),
                prog.envp_p.as_ptr(),
            );
            libc::_exit(127);
        }
    }
    // SAFETY: CLONE_PIDFD stored a new pidfd (O_CLOEXEC) that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((pid as i32, fd))
}
