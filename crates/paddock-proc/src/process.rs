//! The [`Process`] handle.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
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
/// Signalling is safe against pid reuse without holding a pidfd: the reaper reaps a
/// registered child only under its table lock, and [`Process::signal`] sends under that
/// lock only while this very child is still registered, so the pid still names it (at
/// worst as a zombie). Holding no fd per child keeps the supervisor's fd table small, and
/// with it the cost of every later spawn (the child copies that table and closes it at
/// `execve`).
///
/// Dropping a `Process` neither kills nor waits for the child: the reaper still reaps it
/// when it exits (nothing becomes a zombie), and the status is discarded.
#[derive(Debug)]
pub struct Process {
    pub(crate) pid: i32,
    pub(crate) slot: Arc<ExitSlot>,
    pub(crate) pipes: Vec<(RawFd, OwnedFd)>,
}

impl Process {
    /// The child's pid in the caller's pid namespace. Only meaningful while the child has
    /// not been reaped (until a `wait*` returns); use [`Process::signal`] or
    /// [`Process::open_pidfd`] for anything that must be safe against pid reuse.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Opens a new pidfd (O_CLOEXEC) for the child, bound to it for the fd's lifetime (it
    /// becomes readable, `POLLIN`, when the child exits). Fails with `ESRCH` once the child
    /// has been reaped.
    pub fn open_pidfd(&self) -> io::Result<OwnedFd> {
        let t = reaper::lock_table();
        if !t.holds(self.pid, &self.slot) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Race-free: registered and unreaped while we hold the lock.
        sys::pidfd_open(self.pid)
    }

    /// Send `sig`. Returns `Ok(Delivery::AlreadyExited)` (not an error) when the process
    /// has already been reaped; a zombie not yet reaped still gets `Delivered` (the signal
    /// has no effect on it). Any other failure is an error.
    pub fn signal(&self, sig: i32) -> io::Result<Delivery> {
        if self.slot.get().is_some() {
            return Ok(Delivery::AlreadyExited);
        }
        let t = reaper::lock_table();
        if !t.holds(self.pid, &self.slot) {
            return Ok(Delivery::AlreadyExited);
        }
        // Race-free: this child is registered and unreaped while we hold the lock, so
        // `pid` cannot have been reused.
        match sys::signal_pid(self.pid, sig) {
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
