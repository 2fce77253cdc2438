//! Waiting on `cgroup.events` without sleeping.
//!
//! The kernel raises `POLLPRI` on an open `cgroup.events` whenever `populated` or `frozen`
//! changes. [`EventsWatch`] registers that fd with the tokio reactor (epoll, `EPOLLPRI`), and
//! every wait follows the kernel documentation's rules: read once before the first wait so
//! the notification is armed, and re-read after every wake-up because notifications
//! coalesce. A slow re-check ([`BACKSTOP`]) guards against a lost notification; it is a
//! safety net, not the mechanism.
//!
//! The kernel rate-limits these notifications to one per 10 ms per file
//! (`CGROUP_FILE_NOTIFY_MIN_INTV`): a change that follows another within 10 ms is announced
//! only when the interval ends, although the file already shows it. A kill or stop that
//! comes right after a process was started would therefore see `populated 0` up to 10 ms
//! late. [`ExitWatch`] closes that gap: it holds pidfds of the processes being waited for,
//! whose readiness (`POLLIN` at exit) is immediate, and a wait given one re-reads
//! `cgroup.events` as soon as all of them have exited.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
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
///
/// Opening only opens the file; the fd is registered with the reactor on the first wait, so
/// a caller that finds what it needs in the first [`EventsWatch::read`] pays no more.
#[derive(Debug)]
pub struct EventsWatch {
    // Declared, so dropped, before `file`: deregistered while the fd is still open.
    registered: std::sync::OnceLock<AsyncFd<FileFd>>,
    /// Serialises the first registration (two `epoll_ctl(ADD)` of one fd would fail).
    registering: std::sync::Mutex<()>,
    file: OwnedFd,
    path: PathBuf,
}

/// The number of [`EventsWatch`]'s own fd, registered with the reactor as it is (no
/// duplicate to make and close).
#[derive(Debug)]
struct FileFd(RawFd);

impl AsRawFd for FileFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
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
        Ok(EventsWatch {
            registered: std::sync::OnceLock::new(),
            registering: std::sync::Mutex::new(()),
            file: fd,
            path,
        })
    }

    /// The file's fd registered with the reactor for `POLLPRI`, on first use.
    fn registered(&self) -> Result<&AsyncFd<FileFd>> {
        if let Some(fd) = self.registered.get() {
            return Ok(fd);
        }
        let _one = self.registering.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = self.registered.get() {
            return Ok(fd);
        }
        let err = |e: &std::io::Error| {
            Error::io(
                "epoll_ctl",
                &self.path,
                Errno::from_io_error(e).unwrap_or(Errno::IO),
            )
        };
        let raw = FileFd(self.file.as_raw_fd());
        // SAFETY: `raw` is the number of `self.file`, which stays open and is never replaced
        // while the `AsyncFd` lives: the field is private and immutable, and `registered` is
        // declared before `file`, so the `AsyncFd` (deregistering the fd) is dropped first.
        let fd = unsafe { AsyncFd::register_with_interest(raw, Interest::PRIORITY) }
            .map_err(|e| err(&e.into_parts().1))?;
        Ok(self.registered.get_or_init(|| fd))
    }

    /// Reads the current state (this also re-arms the notification).
    pub fn read(&self) -> Result<Events> {
        let text = read_fd(self.file.as_fd()).map_err(|e| Error::io("read", &self.path, e))?;
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
        self.wait_inner(timeout, pred, None).await
    }

    async fn wait_inner(
        &self,
        timeout: Duration,
        pred: impl Fn(Events) -> bool,
        exits: Option<&ExitWatch>,
    ) -> Result<Option<Events>> {
        let deadline = Instant::now() + timeout;
        let mut exits = exits.filter(|e| !e.fds.is_empty());
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
            let fd = self.registered()?;
            tokio::select! {
                r = fd.ready(Interest::PRIORITY) => match r {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        return Err(Error::io(
                            "poll",
                            &self.path,
                            Errno::from_io_error(&e).unwrap_or(Errno::IO),
                        ));
                    }
                },
                // Every tracked process has exited: re-read now instead of waiting for a
                // rate-limited notification. Only once; afterwards the events decide.
                () = async {
                    match exits {
                        Some(e) => e.all_exited().await,
                        None => std::future::pending().await,
                    }
                } => exits = None,
                () = tokio::time::sleep(slice) => {}
            }
        }
    }

    /// Waits for `populated 0`; `Ok(true)` when it came before the timeout.
    pub async fn wait_unpopulated(&self, timeout: Duration) -> Result<bool> {
        Ok(self.wait_for(timeout, |e| !e.populated).await?.is_some())
    }

    /// Like [`EventsWatch::wait_unpopulated`], also woken when every process in `exits`
    /// has exited (see the module documentation for why).
    pub async fn wait_unpopulated_tracking(
        &self,
        exits: &ExitWatch,
        timeout: Duration,
    ) -> Result<bool> {
        Ok(self
            .wait_inner(timeout, |e| !e.populated, Some(exits))
            .await?
            .is_some())
    }

    /// Waits for `frozen` to equal `frozen`; `Ok(true)` when it did before the timeout.
    pub async fn wait_frozen(&self, frozen: bool, timeout: Duration) -> Result<bool> {
        Ok(self
            .wait_for(timeout, |e| e.frozen == frozen)
            .await?
            .is_some())
    }
}

/// The most processes an [`ExitWatch`] tracks; beyond that, `cgroup.events` alone decides.
pub const MAX_TRACKED_EXITS: usize = 64;

/// Pidfds of processes whose exits wake an [`EventsWatch`] wait (see the module
/// documentation). Needs a tokio runtime with I/O enabled.
#[derive(Debug, Default)]
pub struct ExitWatch {
    fds: Vec<AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    /// An empty watch.
    pub fn new() -> Self {
        ExitWatch::default()
    }

    /// Tracks the process behind `pidfd` (ignored past [`MAX_TRACKED_EXITS`]).
    pub fn add(&mut self, pidfd: OwnedFd) {
        if self.fds.len() >= MAX_TRACKED_EXITS {
            return;
        }
        // SAFETY: `pidfd` is an `OwnedFd` moved into the `AsyncFd`, which owns it from here
        // on; nothing else can close or replace it while it is registered.
        if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            self.fds.push(fd);
        }
    }

    /// Opens pidfds for `pids` (at most [`MAX_TRACKED_EXITS`]; PIDs that are gone are
    /// skipped). A PID reused in between only makes a wait rely on `cgroup.events` alone.
    pub fn for_pids(pids: &[i32]) -> Self {
        let mut w = ExitWatch::new();
        for &pid in pids.iter().take(MAX_TRACKED_EXITS) {
            if let Some(p) = rustix::process::Pid::from_raw(pid)
                && let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
            {
                w.add(fd);
            }
        }
        w
    }

    /// How many processes are tracked.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Waits until at least one tracked process has exited; never returns when none is
    /// tracked. Cancel-safe.
    pub(crate) async fn any_exited(&self) {
        if self.fds.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for fd in &self.fds {
                // Errors count as exited, as in `all_exited`.
                if fd.poll_read_ready(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Stops tracking the processes that have exited.
    pub(crate) fn remove_exited(&mut self) {
        self.fds
            .retain(|fd| !crate::cgroup::pidfd_exited(fd.get_ref().as_fd()));
    }

    async fn all_exited(&self) {
        for fd in &self.fds {
            // A pidfd polls readable once its process has exited; errors count as exited.
            let _ = fd.readable().await;
        }
    }
}
