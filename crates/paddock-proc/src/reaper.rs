//! The process-global reaper: the only place in the process that calls `wait*` for
//! children.
//!
//! A dedicated thread (started lazily on the first spawn, or by
//! [`set_child_subreaper`](crate::set_child_subreaper)) loops:
//!
//! 1. `waitid(P_ALL, 0, WEXITED | WNOWAIT)` (blocking, without the table lock) learns the pid
//!    of an exited child *without reaping it*, so the pid cannot be reused yet;
//! 2. it locks the child table, looks the pid up and reaps exactly that child with
//!    `waitid(P_PID, pid, WEXITED)`;
//! 3. it delivers the status to the registered [`Process`](crate::Process)'s exit slot, or,
//!    when the pid is not registered, treats it as an **orphan** (a descendant reparented to
//!    us because we are a subreaper): it counts it and broadcasts an [`OrphanExit`].
//!
//! On `ECHILD` it parks on a condition variable until a spawn registers a child (with a
//! one-second backstop for children created by other means).
//!
//! The spawner holds the table lock from the clone until the child is inserted, so the
//! reaper can never reap a child before it is registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::{ExitStatus, sys};

/// Exit of a process that was not spawned by this crate's spawner (typically a descendant
/// reparented to us because we are a child subreaper), reaped by the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanExit {
    /// Its pid (already reaped: the number may be reused from now on).
    pub pid: i32,
    /// How it ended.
    pub status: ExitStatus,
}

/// Where the reaper delivers one registered child's exit status.
#[derive(Debug, Default)]
pub(crate) struct ExitSlot {
    status: Mutex<Option<ExitStatus>>,
    cv: Condvar,
    notify: Notify,
}

impl ExitSlot {
    pub(crate) fn get(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    fn deliver(&self, st: ExitStatus) {
        *lock(&self.status) = Some(st);
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn wait_blocking(&self, timeout: Option<Duration>) -> Option<ExitStatus> {
        let mut g = lock(&self.status);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if let Some(s) = *g {
                return Some(s);
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    pub(crate) async fn wait(&self) -> ExitStatus {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a delivery in between is not lost.
            notified.as_mut().enable();
            if let Some(s) = self.get() {
                return s;
            }
            notified.await;
        }
    }
}

pub(crate) struct Table {
    children: HashMap<i32, Arc<ExitSlot>>,
    seq: u64,
}

impl Table {
    /// Whether `pid` is registered with exactly `slot`, that is, still the unreaped child
    /// the slot was made for (a reused pid would be registered with another slot).
    pub(crate) fn holds(&self, pid: i32, slot: &Arc<ExitSlot>) -> bool {
        self.children
            .get(&pid)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Register a freshly cloned (not yet reaped) child. Must be called with the lock that
    /// was held across the clone.
    pub(crate) fn insert(&mut self, pid: i32) -> Arc<ExitSlot> {
        let slot = Arc::new(ExitSlot::default());
        self.children.insert(pid, slot.clone());
        self.seq = self.seq.wrapping_add(1);
        slot
    }
}

struct Reaper {
    table: Mutex<Table>,
    /// Wakes the parked reaper when a child was registered.
    parked: Condvar,
    orphans: broadcast::Sender<OrphanExit>,
    orphans_reaped: AtomicU64,
    children_reaped: AtomicU64,
    started: std::sync::Once,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| Reaper {
        table: Mutex::new(Table {
            children: HashMap::new(),
            seq: 0,
        }),
        parked: Condvar::new(),
        orphans: broadcast::channel(ORPHAN_CHANNEL_CAPACITY).0,
        orphans_reaped: AtomicU64::new(0),
        children_reaped: AtomicU64::new(0),
        started: std::sync::Once::new(),
    })
}

/// Capacity of the orphan broadcast channel; slow subscribers lose the oldest events
/// (and see `RecvError::Lagged`).
pub const ORPHAN_CHANNEL_CAPACITY: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start the reaper thread if it is not running yet.
pub(crate) fn ensure_started() {
    let r = reaper();
    r.started.call_once(|| {
        std::thread::Builder::new()
            .name("paddock-reaper".into())
            .spawn(move || run(r))
            .expect("cannot start the paddock reaper thread");
    });
}

/// Lock the child table (held by the spawner across clone → insert).
pub(crate) fn lock_table() -> MutexGuard<'static, Table> {
    lock(&reaper().table)
}

/// Wake the reaper if it is parked because it had no children.
pub(crate) fn wake() {
    reaper().parked.notify_all();
}

fn run(r: &'static Reaper) {
    loop {
        let seq0 = lock(&r.table).seq;
        match sys::wait_any_exited_nowait() {
            Ok(pid) => {
                let mut t = lock(&r.table);
                let status = match sys::reap(pid) {
                    Ok(s) => s,
                    Err(e) => {
                        // Someone else reaped it (std::process / tokio::process used in
                        // this process despite the crate docs).
                        tracing::warn!(pid, error = %e, "reaper: child vanished before reaping");
                        continue;
                    }
                };
                match t.children.remove(&pid) {
                    Some(slot) => {
                        drop(t);
                        r.children_reaped.fetch_add(1, Ordering::Relaxed);
                        slot.deliver(status);
                    }
                    None => {
                        drop(t);
                        r.orphans_reaped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(pid, %status, "reaped orphan");
                        // No subscribers is fine.
                        let _ = r.orphans.send(OrphanExit { pid, status });
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                let mut t = lock(&r.table);
                while t.seq == seq0 {
                    let (g, to) = r
                        .parked
                        .wait_timeout(t, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner());
                    t = g;
                    if to.timed_out() {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(error = %e, "reaper: waitid failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Subscribe to exits of orphans (unregistered descendants) reaped by the reaper.
///
/// Only events after the call are received. The channel is bounded
/// ([`ORPHAN_CHANNEL_CAPACITY`]); a subscriber that falls behind gets `Lagged`.
pub fn subscribe_orphans() -> broadcast::Receiver<OrphanExit> {
    reaper().orphans.subscribe()
}

/// Number of orphans (unregistered descendants) the reaper has reaped so far.
pub fn orphans_reaped() -> u64 {
    reaper().orphans_reaped.load(Ordering::Relaxed)
}

/// Number of registered (spawned by this crate) children the reaper has reaped so far.
pub fn children_reaped() -> u64 {
    reaper().children_reaped.load(Ordering::Relaxed)
}

/// Number of spawned children registered and not reaped yet.
pub fn children_running() -> usize {
    lock(&reaper().table).children.len()
}

/// Make this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so orphaned
/// descendants of spawned processes are reparented to it instead of to init, and start the
/// reaper so they are reaped at once (see [`subscribe_orphans`]).
pub fn set_child_subreaper() -> std::io::Result<()> {
    sys::set_child_subreaper()?;
    ensure_started();
    Ok(())
}
