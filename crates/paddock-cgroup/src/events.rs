//! Waiting on `cgroup.events` without sleeping.
//!
//! The kernel raises `POLLPRI` on an open `cgroup.events` whenever `populated` or `frozen`
//! changes. [`EventsWatch`] registers that fd with the tokio reactor (epoll, `EPOLLPRI`), and
//! every wait follows the kernel documentation's rules: read once before the first wait so
//! the notification is armed, and re-read after every wake-up because notifications
//! coalesce. A slow re-check ([`BACKSTOP`]) guards against a lost notification; it is a
//! safety net, not the mechanism.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::dir::{Dir, read_fd};
use crate::stats::Events;
use crate::{Error, Result};

/// How often a wait re-reads `cgroup.events` even without a notification.
pub const BACKSTOP: Duration = Duration::from_millis(100);

/// An open `cgroup.events` registered for `POLLPRI` readiness.
///
/// Needs a tokio runtime with I/O and time enabled; [`EventsWatch::open`] returns an error
/// naming the problem when there is none.
#[derive(Debug)]
pub struct EventsWatch {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl EventsWatch {
    pub(crate) fn open(dir: &Dir) -> Result<Self> {
        let path = dir.path.join("cgroup.events");
        let fd = rustix::fs::openat(
            &dir.fd,
            "cgroup.events",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", &path, e))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::io(
                "watch (needs a tokio runtime)",
                &path,
                Errno::NOSYS,
            ));
        }
        // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`, which owns it from here on;
        // nothing else can close or replace it while it is registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::PRIORITY) }.map_err(|e| {
                Error::io(
                    "epoll_ctl",
                    &path,
                    Errno::from_io_error(&e.into_parts().1).unwrap_or(Errno::IO),
                )
            })?;
        Ok(EventsWatch { fd, path })
    }

    /// Reads the current state (this also re-arms the notification).
    pub fn read(&self) -> Result<Events> {
        let text =
            read_fd(self.fd.get_ref().as_fd()).map_err(|e| Error::io("read", &self.path, e))?;
        Events::parse(&text)
    }

    /// Waits until `pred` holds for the state in `cgroup.events`, or `timeout` passes.
    /// Returns the state that satisfied it, or `None` on timeout. Cancel-safe: dropping the
    /// future leaves nothing behind.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(Events) -> bool,
    ) -> Result<Option<Events>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.read()?;
            if pred(ev) {
                return Ok(Some(ev));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let slice = (deadline - now).min(BACKSTOP);
            match tokio::time::timeout(slice, self.fd.ready(Interest::PRIORITY)).await {
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(e)) => {
                    return Err(Error::io(
                        "poll",
                        &self.path,
                        Errno::from_io_error(&e).unwrap_or(Errno::IO),
                    ));
                }
                Err(_elapsed) => {}
            }
        }
    }

    /// Waits for `populated 0`; `Ok(true)` when it came before the timeout.
    pub async fn wait_unpopulated(&self, timeout: Duration) -> Result<bool> {
        Ok(self.wait_for(timeout, |e| !e.populated).await?.is_some())
    }

    /// Waits for `frozen` to equal `frozen`; `Ok(true)` when it did before the timeout.
    pub async fn wait_frozen(&self, frozen: bool, timeout: Duration) -> Result<bool> {
        Ok(self
            .wait_for(timeout, |e| e.frozen == frozen)
            .await?
            .is_some())
    }
}
