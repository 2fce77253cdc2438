//! The parent side: signal masks around the clone, pidfds, `waitid`, the reaper's private fd
//! table, and small probes.
//!
//! pidfds, signals, `waitid(P_PIDFD)`, `waitid(P_PID)`, the subreaper flag, `kill` and
//! `access` go through rustix. libc remains where rustix has no safe equivalent: the signal
//! mask and the `SIGCHLD` disposition, `close_range` (rustix's is `unsafe` too), and the
//! `waitid(P_ALL, WNOWAIT)` peek, whose result is the pid (`si_pid`), which rustix's
//! `WaitIdStatus` does not expose.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus};

use super::child::{CLOSE_RANGE_CLOEXEC, CloseMode};
use crate::ExitStatus;

/// Which `close_range` the kernel has, probed with empty ranges (no fd has the highest
/// number, so nothing is touched): `Err` carries the errno of the refused variant.
pub(crate) fn probe_close_mode() -> (CloseMode, Option<io::Error>) {
    crate::command::choose_close_mode(close_range_probe(CLOSE_RANGE_CLOEXEC), || {
        close_range_probe(0)
    })
}

/// Whether the kernel accepts `close_range(.., flags)`, tried on an empty range.
fn close_range_probe(flags: u32) -> io::Result<()> {
    // SAFETY: close_range on an empty range (first == last == u32::MAX, beyond any fd)
    // closes and changes nothing; it only tells whether the kernel accepts the call.
    if unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

/// `pid` as a rustix `Pid`; `EINVAL` for 0 and negative numbers (as the kernel would say).
fn pid(pid: libc::pid_t) -> io::Result<Pid> {
    if pid <= 0 {
        return Err(Errno::INVAL.into());
    }
    Pid::from_raw(pid).ok_or_else(|| Errno::INVAL.into())
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(p: libc::pid_t) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(pid(p)?, PidfdFlags::empty())?)
}

/// The signal numbered `sig`: 1..=31, or a real-time signal libc leaves to applications
/// (`SIGRTMIN()..=SIGRTMAX()`). Anything else (0, the real-time signals glibc reserves for
/// itself, numbers past `SIGRTMAX`) is `EINVAL`.
pub(crate) fn signal(sig: i32) -> io::Result<Signal> {
    if let Some(s) = Signal::from_named_raw(sig) {
        return Ok(s);
    }
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) {
        // SAFETY: a real-time signal number in libc's SIGRTMIN()..=SIGRTMAX(), so valid,
        // non-zero, and not one of the numbers libc reserves for itself (those lie below
        // SIGRTMIN()).
        return Ok(unsafe { Signal::from_raw_unchecked(sig) });
    }
    Err(Errno::INVAL.into())
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`; `EINVAL` for a number [`signal`] refuses.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal(sig)?)?)
}

/// The pid of an exited child, without reaping it and without blocking
/// (`waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`); `None` when none has exited.
///
/// libc, not rustix: the answer is `si_pid`, which rustix's `WaitIdStatus` does not expose.
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
    loop {
        match rustix::process::waitid(
            WaitId::PidFd(pidfd),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(st) => return Ok(st.as_ref().map(decode)),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reap the exited child `pid` (`waitid(P_PID, pid, WEXITED)`).
pub(crate) fn reap(p: libc::pid_t) -> io::Result<ExitStatus> {
    let id = pid(p)?;
    loop {
        match rustix::process::waitid(WaitId::Pid(id), WaitIdOptions::EXITED) {
            Ok(Some(st)) => return Ok(decode(&st)),
            // A blocking wait returns a status or an error; never nothing.
            Ok(None) => return Err(Errno::CHILD.into()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn decode(st: &WaitIdStatus) -> ExitStatus {
    if let Some(code) = st.exit_status() {
        ExitStatus::Exited(code)
    } else if let Some(signal) = st.terminating_signal() {
        ExitStatus::Signaled {
            signal,
            core_dumped: st.dumped(),
        }
    } else {
        // Not reached: only WEXITED is waited for, so the child exited or was killed.
        ExitStatus::Unknown
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
    // SAFETY: only the reaper thread calls this, at its start. From then on it uses only
    // the fds it opens itself (its epoll fd and pidfds) and `keep`: it does not log, does
    // not wake futures, and calls nothing else that might use an fd some other code opened
    // (a `tracing` subscriber's log file, a waker's eventfd); all of that it hands to the
    // delivery thread, which uses the shared table. So no fd number it uses can mean a
    // different file than its owner thinks, and no file is opened where only it sees it.
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

/// Borrows an fd for the rest of the calling thread's life (the reaper's copy of its
/// wake-up eventfd).
///
/// # Safety
/// `fd` must be open in the calling thread's fd table and stay open for as long as the
/// returned value, or anything made from it, is used; the `'static` lifetime only spares
/// the caller a lifetime parameter. The reaper thread uses it until it ends, and its copy
/// of the eventfd is closed only when that private fd table goes away with the thread.
pub(crate) unsafe fn borrow_forever(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller's contract.
    unsafe { BorrowedFd::borrow_raw(fd) }
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
    // rustix passes the pid as prctl's second argument, which the kernel reads as a
    // boolean: any `Some` sets the flag.
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// SIGKILL a child by pid. Only call while holding the reaper's table lock before the
/// child is registered: then it cannot have been reaped, so the pid cannot be reused.
pub(crate) fn kill_unreaped_child(p: libc::pid_t) {
    if let Ok(p) = pid(p) {
        let _ = rustix::process::kill_process(p, Signal::KILL);
    }
}

/// `access(path, X_OK) == 0`.
pub(crate) fn executable(path: &std::ffi::CStr) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every signal a caller may name converts (1..=31 and the application's real-time
    /// signals); 0, glibc's reserved real-time signals and numbers past SIGRTMAX are EINVAL.
    #[test]
    fn signal_numbers() {
        for sig in (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            assert_eq!(signal(sig).map(Signal::as_raw).ok(), Some(sig), "{sig}");
        }
        for sig in [0, -1, 32, 33, libc::SIGRTMAX() + 1, 1000] {
            if sig >= libc::SIGRTMIN() && sig <= libc::SIGRTMAX() {
                continue;
            }
            assert_eq!(
                signal(sig).map_err(|e| e.raw_os_error()).err(),
                Some(Some(libc::EINVAL)),
                "{sig}"
            );
        }
    }
}
