//! What happens to a lifecycle once its stop finished: the last rotation of its log, and
//! how long it stays in the registry ([`crate::Config::retain_stopped`]). A lifecycle that
//! leaves the registry without a forget (an older one whose stop ended, one replaced by a
//! restart of its ID) is unreachable, so its record and log are deleted then. Also the
//! admission count ([`Supervisor::live`], [`Supervisor::admitted`]).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::Retention;
use crate::ids::LifecycleId;
use crate::lifecycle::Sandbox;
use crate::registry::Finished;
use crate::spec::SandboxId;
use crate::state::{LifecycleState, State};
use crate::supervisor::{Inner, Supervisor};

/// Whether a lifecycle in this state counts as live for admission: it holds a cgroup
/// with a payload started in it. A lifecycle being adopted (`Recorded`) is not counted
/// until it is entered.
pub(crate) fn counts_live(s: &LifecycleState) -> bool {
    !matches!(s, LifecycleState::Recorded { .. })
        && matches!(
            s.state(),
            State::Running | State::Stopping | State::Quarantined
        )
}

impl Supervisor {
    /// Lifecycles that are running, stopping or quarantined — every one that holds a
    /// cgroup with a started payload; creating ones are not counted (a caller admitting
    /// starts counts its own in flight). Kept by every state change: O(1), for admission.
    pub fn live(&self) -> usize {
        self.inner.live.load(SeqCst)
    }

    /// Counts a start the caller admits, until the lifecycle it starts
    /// ([`Supervisor::start_reserved`]) leaves `Creating` or the reservation is dropped
    /// unused. With `memory`, the `memory_max` that start commits, in bytes.
    ///
    /// A caller that checks [`Supervisor::admitted`] against a limit and then reserves,
    /// both under one lock of its own, never admits past the limit; and, unlike a count
    /// of its own kept until the start returns, it does not count a started lifecycle
    /// twice (once live, once in flight), so parallel starts are not refused early.
    pub fn reserve(&self, memory: u64) -> Reservation {
        let pool = Arc::clone(&self.inner.reserved);
        pool.count.fetch_add(1, SeqCst);
        pool.memory.fetch_add(memory, SeqCst);
        Reservation { pool, memory }
    }

    /// The starts reserved and not yet live, plus [`Supervisor::live`], and the memory
    /// the reservations commit (bytes; add the live ones' from
    /// [`Supervisor::occupancy`]). A lifecycle that goes live while this is read may be
    /// counted twice, never not at all.
    pub fn admitted(&self) -> (usize, u64) {
        // Reservations first: a lifecycle is counted live before its reservation is
        // released.
        let memory = self.inner.reserved.memory.load(SeqCst);
        let reserved = self.inner.reserved.count.load(SeqCst);
        (reserved + self.live(), memory)
    }

    /// One pass over every lifecycle held: how many are in each state, how many of the
    /// running ones are paused, and the memory the live ones (those [`Supervisor::live`]
    /// counts) commit — the sum of their `memory_max` in force (as updated since their
    /// start). O(lifecycles held), each state read under its own short lock; no lock is
    /// held across the pass, so concurrent changes may or may not be seen.
    pub fn occupancy(&self) -> Occupancy {
        let mut o = Occupancy::default();
        for sb in self.inner.registry.all() {
            let (state, paused, live) = sb.with_state(|s| (s.state(), s.paused(), counts_live(s)));
            let i = State::ALL
                .iter()
                .position(|x| *x == state)
                .expect("State::ALL holds every state");
            o.by_state[i].1 += 1;
            o.paused += usize::from(paused && state == State::Running);
            if live {
                match sb.limits.lock().memory_max {
                    Some(m) => o.memory_committed = o.memory_committed.saturating_add(m),
                    None => o.live_without_memory_max += 1,
                }
            }
        }
        o
    }

    /// Keeps [`Supervisor::live`] across a state change (called by `enter`).
    pub(crate) fn count_live(&self, left: &LifecycleState, now: &LifecycleState) {
        match (counts_live(left), counts_live(now)) {
            (false, true) => {
                self.inner.live.fetch_add(1, SeqCst);
            }
            (true, false) => {
                self.inner.live.fetch_sub(1, SeqCst);
            }
            _ => {}
        }
    }

    /// A lifecycle's stop finished (stopped or failed): its log gets its last rotation;
    /// an older lifecycle leaves its ID's retiring list (record and log deleted), the
    /// current one is kept as [`crate::Config::retain_stopped`] says.
    pub(crate) fn finished(&self, sb: &Sandbox) {
        if let Some(logs) = &self.inner.logs {
            logs.finished(sb.id.as_str(), sb.lifecycle);
        }
        // Hooks may do slow I/O (a durable store): never under the registry lock.
        match self.inner.registry.finished(sb) {
            Finished::Pruned => self.dropped_from_registry(&sb.id, sb.lifecycle),
            Finished::Retained => {
                self.inner.retention_wake.notify_one();
                self.prune_stopped();
            }
            Finished::Gone => {}
        }
    }

    /// A finished lifecycle left the registry without a forget (an older one whose stop
    /// ended, or one replaced by a restart of its ID): no request can reach it any more,
    /// so its record and log are deleted.
    pub(crate) fn dropped_from_registry(&self, id: &SandboxId, lc: LifecycleId) {
        self.inner.cfg.hooks.on_forget(id, lc);
        self.delete_log_later(id, lc);
    }

    /// Deletes a lifecycle's log on a blocking thread (file system calls have no bound on
    /// their duration), or at once outside a tokio runtime.
    fn delete_log_later(&self, id: &SandboxId, lc: LifecycleId) {
        if self.inner.logs.is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let (sup, id) = (self.clone(), id.clone());
                rt.spawn_blocking(move || sup.delete_log(&id, lc));
            }
            Err(_) => self.delete_log(id, lc),
        }
    }

    /// Forgets the finished lifecycles [`crate::Config::retain_stopped`] no longer keeps
    /// (the oldest past the count, those older than the age), deleting their logs;
    /// returns when the next one expires by age.
    fn prune_stopped(&self) -> Option<Instant> {
        let r = self.inner.cfg.retain_stopped;
        if r == Retention::FOREVER {
            return None;
        }
        let (victims, next) = self.inner.registry.expired(r, Instant::now());
        for (id, lc) in victims {
            // A lifecycle restarted or forgotten meanwhile is left alone (NotFound).
            if self.forget_lifecycle(&id, Some(lc)).is_ok() {
                self.inner.counters.retention_pruned.fetch_add(1, Relaxed);
                self.delete_log_later(&id, lc);
                tracing::info!(sandbox = %id, lifecycle = %lc, "forgot a stopped sandbox (retention)");
            }
        }
        next
    }

    /// Starts the task that forgets finished lifecycles by age, when there is an age and a
    /// tokio runtime (without one, only the count applies).
    pub(crate) fn start_retention(&self) {
        if self.inner.cfg.retain_stopped.max_age.is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(retention_task(
                    Arc::downgrade(&self.inner),
                    self.inner.retention_wake.clone(),
                ));
            }
            Err(_) => tracing::warn!(
                "no tokio runtime: stopped sandboxes are pruned by count only, not by age"
            ),
        }
    }

    /// The last `max` bytes of a lifecycle's log, its rotated files included, in order
    /// (empty when it has none or there is no log directory). Blocking file system
    /// calls: call it from a blocking thread.
    pub fn read_log(
        &self,
        id: &SandboxId,
        lifecycle: LifecycleId,
        max: u64,
    ) -> std::io::Result<Vec<u8>> {
        match &self.inner.logs {
            Some(l) => l.read_tail(id.as_str(), lifecycle, max),
            None => Ok(Vec::new()),
        }
    }
}

/// Forgets finished lifecycles as they pass [`Retention::max_age`]: sleeps until the
/// oldest expires (or a lifecycle is retained), holding only a weak reference, and ends
/// with the supervisor.
async fn retention_task(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = match inner.upgrade() {
            Some(inner) => Supervisor { inner }.prune_stopped(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// What [`Supervisor::occupancy`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    /// How many lifecycles are in each state, in the order of [`State::ALL`].
    pub by_state: [(State, usize); State::ALL.len()],
    /// How many running lifecycles are paused.
    pub paused: usize,
    /// The sum of the `memory_max` in force of every live lifecycle (running, stopping or
    /// quarantined), in bytes.
    pub memory_committed: u64,
    /// How many live lifecycles have no `memory_max` (they commit nothing).
    pub live_without_memory_max: usize,
}

impl Default for Occupancy {
    fn default() -> Self {
        Occupancy {
            by_state: State::ALL.map(|s| (s, 0)),
            paused: 0,
            memory_committed: 0,
            live_without_memory_max: 0,
        }
    }
}

impl Occupancy {
    /// How many lifecycles are in `state`.
    pub fn count(&self, state: State) -> usize {
        self.by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// The reserved starts of a supervisor ([`Supervisor::reserve`]).
#[derive(Debug, Default)]
pub(crate) struct Reserved {
    count: AtomicUsize,
    memory: AtomicU64,
}

/// One admitted start, counted by [`Supervisor::admitted`] until dropped: by its
/// lifecycle when it leaves `Creating`, or by the caller if the start never made one.
#[derive(Debug)]
#[must_use = "a reservation counts only while it is held"]
pub struct Reservation {
    pool: Arc<Reserved>,
    memory: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.memory.fetch_sub(self.memory, SeqCst);
        self.pool.count.fetch_sub(1, SeqCst);
    }
}
