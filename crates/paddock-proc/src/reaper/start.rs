//! Starting the reaper, its health, and the log lines its thread hands to the delivery
//! thread.
//!
//! **Failure policy.** Start-up (the wake-up eventfd, the two threads, the reaper thread's
//! epoll set) fails with [`SpawnError::ReaperStart`], naming the operation and the errno;
//! nothing is left behind and the next spawn (or [`start_reaper`]) tries again. A reaper
//! thread or delivery thread that ends (only a panic can end either) is recorded once and
//! for good: [`reaper_health`] reports it, and every later spawn fails with
//! [`SpawnError::ReaperDead`] instead of starting children nobody would reap or report.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;

use super::{Delivery, Reaper, WAKE, deliver, lock, reaper, run, warn_lost};
use crate::{SpawnError, sys};

/// The reaper's start-up and liveness, part of the process-global `Reaper`.
pub(super) struct State {
    /// Both threads started (fast path of [`ensure_started`]).
    running: AtomicBool,
    /// The first thread that ended, and why; never cleared.
    dead: OnceLock<(&'static str, String)>,
    /// Serialises start-ups; holds the last failed one, `(operation, errno)`.
    start: Mutex<Option<(&'static str, i32)>>,
}

impl State {
    pub(super) const fn new() -> State {
        State {
            running: AtomicBool::new(false),
            dead: OnceLock::new(),
            start: Mutex::new(None),
        }
    }
}

/// What [`reaper_health`] reports about the process-global reaper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaperHealth {
    /// Not started yet: nothing has been spawned (the first spawn starts it).
    NotStarted,
    /// The last start-up failed (`op` with `errno`, as in [`SpawnError::ReaperStart`]); the
    /// next spawn, or [`start_reaper`], tries again.
    StartFailed {
        /// The operation that failed (`eventfd`, `spawn the reaper thread`, ...).
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// Both threads are running: children are reaped and their exits delivered.
    Running,
    /// `thread` ended (it panicked): exits are no longer reaped or no longer delivered, and
    /// every spawn fails with [`SpawnError::ReaperDead`]. Only a restart of the process
    /// recovers.
    Dead {
        /// `paddock-reaper` or `paddock-deliver`.
        thread: &'static str,
        /// The panic message.
        reason: String,
    },
}

impl ReaperHealth {
    /// Whether spawning works as far as the reaper is concerned: `NotStarted` or `Running`.
    /// A readiness check (`/readyz`) reports not ready otherwise.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::NotStarted | Self::Running)
    }
}

impl fmt::Display for ReaperHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("not started"),
            Self::StartFailed { op, errno } => write!(
                f,
                "start-up failed: {op}: {} (os error {errno})",
                sys::errno_name(*errno)
            ),
            Self::Running => f.write_str("running"),
            Self::Dead { thread, reason } => write!(f, "dead: {thread} ended: {reason}"),
        }
    }
}

/// The state of the process-global reaper (the threads that reap and report every child of
/// this process; see the crate docs). Cheap: a few atomic loads, a lock only after a failed
/// start-up. Meant for health checks: [`ReaperHealth::is_healthy`] is false once a start-up
/// has failed (until one succeeds) and forever once a reaper thread has died.
pub fn reaper_health() -> ReaperHealth {
    let r = reaper();
    if let Some((thread, reason)) = r.state.dead.get() {
        return ReaperHealth::Dead {
            thread,
            reason: reason.clone(),
        };
    }
    if r.state.running.load(Ordering::Acquire) {
        return ReaperHealth::Running;
    }
    match *lock(&r.state.start) {
        Some((op, errno)) => ReaperHealth::StartFailed { op, errno },
        None => ReaperHealth::NotStarted,
    }
}

/// Starts the reaper if it is not running (every spawn does this first). `Ok` when it
/// runs; [`SpawnError::ReaperStart`] when start-up failed (nothing is left behind; the next
/// call tries again); [`SpawnError::ReaperDead`] once a reaper thread has died.
pub fn start_reaper() -> Result<(), SpawnError> {
    ensure_started()
}

/// See [`start_reaper`].
pub(crate) fn ensure_started() -> Result<(), SpawnError> {
    let r = reaper();
    if let Some(e) = dead_error(r) {
        return Err(e);
    }
    if r.state.running.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut last = lock(&r.state.start);
    if r.state.running.load(Ordering::Acquire) {
        return Ok(());
    }
    match start(r) {
        Ok(wake) => {
            // Set only here, under the start lock, after a successful start: once.
            let _ = r.wake_fd.set(wake);
            *last = None;
            r.state.running.store(true, Ordering::Release);
            // A thread may have died between its start and here.
            dead_error(r).map_or(Ok(()), Err)
        }
        Err((op, errno)) => {
            *last = Some((op, errno));
            Err(SpawnError::ReaperStart { op, errno })
        }
    }
}

fn dead_error(r: &Reaper) -> Option<SpawnError> {
    r.state
        .dead
        .get()
        .map(|(thread, reason)| SpawnError::ReaperDead {
            thread,
            reason: reason.clone(),
        })
}

/// Record that `thread` ended (the first report wins); returns the reason. Logs nothing
/// and wakes nothing: the reaper thread calls this, and must not (see [`ReaperLog`]).
fn died(r: &'static Reaper, thread: &'static str, panic: Option<Box<dyn Any + Send>>) -> String {
    let reason = match &panic {
        Some(p) => match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
            (Some(s), _) => format!("panicked: {s}"),
            (_, Some(s)) => format!("panicked: {s}"),
            _ => "panicked".to_owned(),
        },
        None => "returned".to_owned(),
    };
    let _ = r.state.dead.set((thread, reason.clone()));
    reason
}

fn log_death(thread: &'static str, reason: &str) {
    tracing::error!(
        thread,
        reason,
        "the child reaper died: children are no longer reaped or reported, and spawns fail; \
         restart the process"
    );
}

type StartError = (&'static str, i32);

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Create the wake-up eventfd and start both threads; wait until the reaper thread has its
/// private fd table and its epoll set. Returns the eventfd (of the shared fd table).
fn start(r: &'static Reaper) -> Result<OwnedFd, StartError> {
    let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| ("eventfd", e.raw_os_error()))?;
    let wake_raw = wake.as_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel::<Delivery>();
    // If anything below fails, `tx` is dropped, which ends the delivery thread.
    std::thread::Builder::new()
        .name("paddock-deliver".into())
        .spawn(move || deliver_thread(r, rx))
        .map_err(|e| ("spawn the reaper's delivery thread", errno_of(&e)))?;
    // The reaper thread copies the fd table when it starts: wait until it has closed its
    // copies, so no other fd of this process stays open in it even briefly after this
    // returns (a pipe whose other end must see EOF, say).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
    std::thread::Builder::new()
        .name("paddock-reaper".into())
        .spawn(move || reaper_thread(r, wake_raw, tx, ready_tx))
        .map_err(|e| ("spawn the reaper thread", errno_of(&e)))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(wake),
        Ok(Err(e)) => Err(e),
        // It panicked during set-up (and recorded that).
        Err(_) => Err(("set up the reaper thread", libc::EIO)),
    }
}

fn deliver_thread(r: &'static Reaper, rx: Receiver<Delivery>) {
    // Ends normally only when every sender is gone: after a failed start-up, or after the
    // reaper thread ended (and reported that through the channel first).
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| deliver(r, rx))).err();
    let reason = panic.map(|p| died(r, "paddock-deliver", Some(p)));
    // No sweep will be reported any more: let `reap_orphans` callers see that. Before the
    // log line, which may panic again if a subscriber was what panicked.
    r.swept.notify_waiters();
    if let Some(reason) = reason {
        log_death("paddock-deliver", &reason);
    }
}

fn reaper_thread(
    r: &'static Reaper,
    wake_raw: RawFd,
    tx: Sender<Delivery>,
    ready: Sender<Result<(), StartError>>,
) {
    // Kept outside the unwinding closure, to report a death through the delivery thread.
    let report = tx.clone();
    let res = std::panic::catch_unwind(AssertUnwindSafe(move || {
        let (ep, wake) = match set_up(wake_raw, &tx) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return false;
            }
        };
        let _ = ready.send(Ok(()));
        run(r, ep, wake, tx);
        true
    }));
    let panic = match res {
        // A failed set-up: the starter reports it. Returning drops the last sender, which
        // ends the delivery thread.
        Ok(false) => return,
        Ok(true) => None,
        Err(p) => Some(p),
    };
    let reason = died(r, "paddock-reaper", panic);
    log(
        &report,
        ReaperLog::Died {
            thread: "paddock-reaper",
            reason,
        },
    );
}

/// The reaper thread's set-up: its private fd table, its epoll set with the eventfd in it.
fn set_up(
    wake_raw: RawFd,
    tx: &Sender<Delivery>,
) -> Result<(OwnedFd, BorrowedFd<'static>), StartError> {
    // From here on this thread uses only fds it opens itself and its copy of the eventfd,
    // and it logs only through the delivery thread (see the module docs of `reaper`).
    if let Err(e) = sys::private_fd_table(wake_raw) {
        log(tx, ReaperLog::NoPrivateFdTable(e));
    }
    if let Some(why) = sys::sigchld_autoreaps() {
        log(tx, ReaperLog::SigchldAutoreaps(why));
    }
    // SAFETY: `wake_raw` is open in this thread's fd table: in its private copy (made by
    // `private_fd_table`, which kept it), closed only when the thread ends; or, if there is
    // no private copy, in the shared table, where the starter closes it only after this
    // thread has reported a failed set-up and stopped using it, and never after a
    // successful one (it is kept in `Reaper::wake_fd` for the life of the process).
    let wake = unsafe { sys::borrow_forever(wake_raw) };
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| ("epoll_create1", e.raw_os_error()))?;
    epoll::add(
        &ep,
        wake,
        epoll::EventData::new_u64(WAKE),
        epoll::EventFlags::IN,
    )
    .map_err(|e| ("epoll_ctl(EPOLL_CTL_ADD, eventfd)", e.raw_os_error()))?;
    Ok((ep, wake))
}

/// A line the reaper thread wants logged. It never calls `tracing` itself: a subscriber
/// may write to, or open, fds, and in the reaper thread's private fd table an fd number of
/// the shared one is closed or names one of its own pidfds, and a file it opened would be
/// invisible to every other thread (a rolling log file opened there, say). The delivery
/// thread, in the shared table, emits these lines in order with the exits.
#[derive(Debug)]
pub(super) enum ReaperLog {
    NoPrivateFdTable(io::Error),
    SigchldAutoreaps(&'static str),
    EpollAdd {
        pid: i32,
        error: Errno,
    },
    PidfdOpen {
        pid: i32,
        error: io::Error,
    },
    EpollWait(Errno),
    WaitPidfd {
        pid: i32,
        error: io::Error,
    },
    SweepWaitid(io::Error),
    VanishedBeforeReaping {
        pid: i32,
        error: io::Error,
    },
    ChildLost {
        pid: i32,
    },
    Died {
        thread: &'static str,
        reason: String,
    },
}

/// Hand `line` to the delivery thread (from the reaper thread).
pub(super) fn log(tx: &Sender<Delivery>, line: ReaperLog) {
    let _ = tx.send(Delivery::Log(line));
}

impl ReaperLog {
    /// Log it (in the delivery thread).
    pub(super) fn emit(self) {
        match self {
            Self::NoPrivateFdTable(e) => tracing::warn!(
                error = %e,
                "reaper: cannot make a private fd table; its pidfds stay in the shared one, \
                 which every spawn copies"
            ),
            Self::SigchldAutoreaps(why) => tracing::warn!(
                "SIGCHLD is {why} in this process: the kernel reaps children itself, so their \
                 exit statuses are lost (wait returns ExitStatus::Unknown); restore SIGCHLD's \
                 default disposition before using paddock-proc"
            ),
            Self::EpollAdd { pid, error } => tracing::error!(
                pid,
                error = %error,
                "reaper: epoll_ctl failed; the child is reaped by the sweep"
            ),
            Self::PidfdOpen { pid, error } => tracing::error!(
                pid,
                error = %error,
                "reaper: pidfd_open failed; the child is reaped by the sweep"
            ),
            Self::EpollWait(error) => {
                tracing::error!(error = %error, "reaper: epoll_wait failed")
            }
            Self::WaitPidfd { pid, error } => tracing::error!(
                pid,
                error = %error,
                "reaper: waitid(P_PIDFD) failed; the child is reaped by the sweep"
            ),
            Self::SweepWaitid(error) => tracing::error!(error = %error, "reaper: waitid failed"),
            Self::VanishedBeforeReaping { pid, error } => {
                tracing::warn!(pid, error = %error, "reaper: child vanished before reaping")
            }
            Self::ChildLost { pid } => warn_lost(pid),
            Self::Died { thread, reason } => log_death(thread, &reason),
        }
    }
}
