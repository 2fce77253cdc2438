//! [`ForeignProcess`]: a process held by pidfd that is not this process's child — for
//! example the main process of a sandbox that a previous supervisor started and a new one
//! adopts after a restart.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{Delivery, sys};

/// A process that is not our child, held by pidfd. Its exit can be awaited but its exit
/// status cannot be read (only its parent can reap it).
#[derive(Debug)]
pub struct ForeignProcess {
    pid: i32,
    pidfd: OwnedFd,
}

impl ForeignProcess {
    /// Opens `pid` by pidfd and checks that it is the process that was recorded: when
    /// `start_time` is given it must equal field 22 of `/proc/<pid>/stat` (clock ticks since
    /// boot), so a PID reused by an unrelated process is never taken for it. Returns
    /// `Ok(None)` when no such process is alive.
    pub fn open(pid: i32, start_time: Option<u64>) -> io::Result<Option<ForeignProcess>> {
        if pid <= 0 {
            return Ok(None);
        }
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        };
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (_, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); starttime is field 22.
        if fields.first() == Some(&"Z") {
            return Ok(None);
        }
        if let Some(expected) = start_time
            && fields.get(19).and_then(|s| s.parse::<u64>().ok()) != Some(expected)
        {
            return Ok(None);
        }
        let p = ForeignProcess { pid, pidfd };
        // The /proc read above described the process behind the pidfd only if that process
        // had not exited by then (a live process keeps its PID).
        if p.has_exited() {
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// The PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether it has exited (its pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// Sends `sig` by pidfd; `AlreadyExited` when it is gone. `EINVAL` for a signal number
    /// [`Process::signal`](crate::Process::signal) refuses.
    pub fn signal(&self, sig: i32) -> io::Result<Delivery> {
        match sys::pidfd_send_signal(self.pidfd.as_fd(), sig) {
            Ok(()) => Ok(Delivery::Delivered),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(Delivery::AlreadyExited),
            Err(e) => Err(e),
        }
    }

    /// Waits (on the tokio reactor, no polling) until the process has exited.
    pub async fn exited(&self) -> io::Result<()> {
        if self.has_exited() {
            return Ok(());
        }
        let fd = sys::register_readable(self.pidfd.try_clone()?, Interest::READABLE)?;
        let mut guard = fd.readable().await?;
        guard.retain_ready();
        Ok(())
    }
}

pub(crate) type Registered = AsyncFd<OwnedFd>;
