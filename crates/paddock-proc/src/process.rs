//! The [`Process`] handle.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::reaper::{self, ExitSlot};
use crate::{ExitStatus, sys};

/// Result of [`Process::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The kernel accepted the signal for the (still existing) process.
    Delivered,
    /// The process has already exited (and was reaped, or its status is known); nothing was
    /// sent. Not an error: the caller's goal (the process not running) already holds.
    AlreadyExited,
}

/// A spawned child.
///
/// # Signalling and the pidfd
///
/// [`Process::signal`] always sends with `pidfd_send_signal`, so a signal can never reach
/// another process that reused the pid. Where the pidfd comes from is the caller's choice
/// ([`Command::keep_pidfd`](crate::Command::keep_pidfd)):
///
/// * **Default: no fd held.** Each `signal` opens a pidfd with `pidfd_open` while holding
///   the reaper's table lock — race-free, because the reaper reaps a registered child only
///   under that lock, so while this child is registered its pid still names it (at worst
///   as a zombie) — releases the lock, sends, and closes the pidfd. Costs two extra system
///   calls per signal, and keeps the supervisor's fd table small: every later spawn copies
///   that table into the child and closes it again at `execve`, so holding one fd per live
///   child (10,000 sandboxes: 10,000 fds) would make every spawn slower.
/// * **`keep_pidfd(true)`:** the `CLONE_PIDFD` fd (or the `pidfd_open` result on the
///   legacy-clone path) is held here, available as [`Process::pidfd`] (for `poll`/epoll,
///   `pidfd_getfd`, ...), and `signal` uses it directly, without the table lock.
///
/// Dropping a `Process` neither kills nor waits for the child: the reaper still reaps it
/// when it exits (nothing becomes a zombie), and the status is discarded.
#[derive(Debug)]
pub struct Process {
    pub(crate) pid: i32,
    pub(crate) slot: Arc<ExitSlot>,
    pub(crate) pipes: Vec<(RawFd, OwnedFd)>,
    pub(crate) pidfd: Option<OwnedFd>,
}

impl Process {
    /// The child's pid in the caller's pid namespace. Only meaningful while the child has
    /// not been reaped (until a `wait*` returns); use [`Process::signal`] or
    /// [`Process::open_pidfd`] for anything that must be safe against pid reuse.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd held for the child, when it was spawned with
    /// [`Command::keep_pidfd(true)`](crate::Command::keep_pidfd); `None` otherwise. It
    /// refers to this child for its whole lifetime (also after it was reaped), is
    /// close-on-exec, and polls readable (`POLLIN`) once the child has exited.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Opens a new pidfd (O_CLOEXEC) for the child, bound to it for the fd's lifetime (it
    /// becomes readable, `POLLIN`, when the child exits). Fails with `ESRCH` once the child
    /// has been reaped.
    pub fn open_pidfd(&self) -> io::Result<OwnedFd> {
        if let Some(fd) = &self.pidfd {
            if self.slot.get().is_some() {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            return fd.try_clone();
        }
        self.open_pidfd_locked()
    }

    /// `pidfd_open` under the table lock, only while this child is registered (unreaped).
    fn open_pidfd_locked(&self) -> io::Result<OwnedFd> {
        let t = reaper::lock_table();
        if !t.holds(self.pid, &self.slot) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Race-free: registered and unreaped while we hold the lock.
        sys::pidfd_open(self.pid)
    }

    /// Send `sig` with `pidfd_send_signal` (see the type's docs for where the pidfd comes
    /// from). Returns `Ok(Delivery::AlreadyExited)` (not an error) when the process has
    /// already been reaped; a zombie not yet reaped still gets `Delivered` (the signal has
    /// no effect on it). Any other failure is an error; `sig` must be 1..=31 or a
    /// real-time signal in `libc::SIGRTMIN()..=libc::SIGRTMAX()`, anything else (0, the
    /// real-time signals glibc keeps for itself) is `EINVAL`.
    pub fn signal(&self, sig: i32) -> io::Result<Delivery> {
        if self.slot.get().is_some() {
            return Ok(Delivery::AlreadyExited);
        }
        let opened;
        let pidfd = match &self.pidfd {
            Some(fd) => fd.as_fd(),
            None => match self.open_pidfd_locked() {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Ok(Delivery::AlreadyExited);
                }
                Err(e) => return Err(e),
            },
        };
        match sys::pidfd_send_signal(pidfd, sig) {
            Ok(()) => Ok(Delivery::Delivered),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Delivery::AlreadyExited),
            Err(e) => Err(e),
        }
    }

    /// Send SIGKILL (see [`Process::signal`]).
    pub fn kill(&self) -> io::Result<Delivery> {
        self.signal(libc::SIGKILL)
    }

    /// Wait asynchronously until the reaper has reaped the child and return its status.
    /// Does not poll: it sleeps on a `tokio::sync::Notify` the reaper fires. Works on any
    /// executor and may be called many times (and concurrently).
    pub async fn wait(&self) -> ExitStatus {
        self.slot.wait().await
    }

    /// The exit status if the child has already been reaped, without blocking.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.slot.get()
    }

    /// Block the calling thread until the child has been reaped.
    pub fn wait_blocking(&self) -> ExitStatus {
        self.slot
            .wait_blocking(None)
            .expect("untimed wait returns a status")
    }

    /// Block up to `timeout`; `None` if the child is still running then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        self.slot.wait_blocking(Some(timeout))
    }

    /// Take the parent's end of the pipe mapped to the child's fd `target`
    /// ([`Stdio::Pipe`](crate::Stdio::Pipe) and friends), once.
    pub fn take_pipe(&mut self, target: RawFd) -> Option<OwnedFd> {
        let i = self.pipes.iter().position(|(t, _)| *t == target)?;
        Some(self.pipes.swap_remove(i).1)
    }

    /// The parent's (write) end of the child's stdin pipe, once.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.take_pipe(0)
    }

    /// The parent's (read) end of the child's stdout pipe, once.
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.take_pipe(1)
    }

    /// The parent's (read) end of the child's stderr pipe, once.
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.take_pipe(2)
    }
}
