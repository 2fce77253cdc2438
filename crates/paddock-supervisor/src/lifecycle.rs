//! One lifecycle of a sandbox ([`Sandbox`]), and [`Supervisor::enter`]: the one place a
//! lifecycle's state changes, together with every side effect of the change — the record
//! handed to the hooks, the counters, the log line, the event, the stop's outcome, and the
//! registry's bookkeeping (registering an adopted lifecycle, pruning a retired one,
//! forgetting a failed start).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use paddock_cgroup::CgroupName;
use paddock_proc::{ForeignProcess, Process};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::Error;
use crate::events::{Event, EventKind, MainExit, StopReport, now_ms};
use crate::hooks::{Persisting, Record};
use crate::ids::{LifecycleId, cgroup_name};
use crate::registry::Admission;
use crate::spec::{SandboxId, SandboxSpec};
use crate::state::{InvalidTransition, LifecycleState, State, Transition, transition};
use crate::supervisor::Supervisor;

/// One lifecycle of one sandbox.
/// The `tracing` target of the WARN a failed start logs ("sandbox start failed"). A caller
/// that reports the start's error itself (the `paddock run` command) can filter it out, so
/// that the cause is printed once.
pub const START_FAILED_TARGET: &str = "paddock_supervisor::start_failed";

pub(crate) struct Sandbox {
    pub(crate) id: SandboxId,
    pub(crate) lifecycle: LifecycleId,
    pub(crate) spec: SandboxSpec,
    pub(crate) created_at_ms: u64,
    pub(crate) cgroup_path: PathBuf,
    /// The cgroup's name under the root. No directory fd is held between operations (a
    /// node with 10 000 sandboxes would otherwise hold 10 000 more fds); each operation
    /// opens the cgroup by this validated name, relative to the root's fd.
    pub(crate) cgroup_name: CgroupName,
    /// The main process, once spawned (or re-opened by an adoption).
    pub(crate) main: OnceLock<MainProcess>,
    /// How the main process ended, once it has.
    pub(crate) main_exit: OnceLock<MainExit>,
    /// Held while `main_exit` is set and its `main_exited` event emitted
    /// ([`Supervisor::announce_main_exit`]), so that a stop which finds the exit known
    /// also finds its event out: `stopped` is the last event of a lifecycle.
    pub(crate) main_announce: Mutex<()>,
    /// The state. Private to this module: only [`Supervisor::enter`] changes it.
    state: Mutex<LifecycleState>,
    /// Serialises start, stop (its beginning), pause and resume of this lifecycle.
    pub(crate) op: tokio::sync::Mutex<()>,
    /// The stop's outcome: `Some` once stopped, quarantined or failed; sent by `enter`
    /// after every other side effect of that transition, so a waiter that wakes finds them
    /// done.
    pub(crate) outcome: watch::Sender<Option<StopReport>>,
    /// Cuts a running grace period short (a kill arriving during a graceful stop).
    pub(crate) escalate: Notify,
    /// What its jail is; its `dynamic_uid` is held for this lifecycle until its cgroup is
    /// gone.
    pub(crate) jail: Option<crate::jail::JailStatus>,
    /// The deadline (ms since the epoch), if any. Changed only by `apply`, under the state
    /// lock, with a [`Transition::DeadlineSet`].
    deadline_at_ms: Mutex<Option<u64>>,
    /// Wakes the deadline's timer when the deadline moved.
    pub(crate) deadline_moved: Notify,
    /// Whether the deadline's timer was started (`Supervisor::arm_deadline`).
    pub(crate) deadline_armed: std::sync::atomic::AtomicBool,
    /// How many restarts of the ID this lifecycle is, and how many since the backoff was
    /// last reset (`restart`).
    pub(crate) restart_count: u32,
    pub(crate) restart_since_reset: u32,
    /// The restart decided when this lifecycle's stop ended (`Supervisor::decide_restart`).
    pub(crate) restart_pending: Mutex<Option<crate::PendingRestart>>,
    /// Set by an explicit stop, kill, deadline or shutdown: no restart follows.
    pub(crate) restarts_cancelled: std::sync::atomic::AtomicBool,
    /// The caller's admission reservation ([`Supervisor::reserve`]), held while the
    /// lifecycle is creating and released when it leaves that state: by then
    /// [`Supervisor::live`] counts it (or it failed), so it is never counted twice.
    pub(crate) reservation: Mutex<Option<crate::retention::Reservation>>,
    /// The limits in force: the spec's, as changed by updates since
    /// ([`Supervisor::update_limits`]); the record's and the info's spec carry these.
    pub(crate) limits: Mutex<crate::spec::Limits>,
    /// Its `veth` network (set when its lease is taken, or by an adoption from the
    /// record).
    pub(crate) net: OnceLock<crate::netspec::NetStatus>,
    /// How far its network got (`net::NET_NONE`, `NET_LEASED`, `NET_MADE`).
    pub(crate) net_made: std::sync::atomic::AtomicU8,
}

/// The main process: our child, or one adopted from a previous supervisor process.
#[derive(Clone)]
pub(crate) struct MainProcess {
    pub(crate) pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22), when it could be read.
    pub(crate) start_time: Option<u64>,
    handle: MainHandle,
}

#[derive(Clone)]
enum MainHandle {
    Child(Arc<Process>),
    Adopted(Arc<ForeignProcess>),
}

impl MainProcess {
    /// Our child.
    pub(crate) fn child(p: Arc<Process>, start_time: Option<u64>) -> Self {
        MainProcess {
            pid: p.pid(),
            start_time,
            handle: MainHandle::Child(p),
        }
    }

    /// A process re-opened after a restart.
    pub(crate) fn adopted(p: ForeignProcess, start_time: Option<u64>) -> Self {
        MainProcess {
            pid: p.pid(),
            start_time,
            handle: MainHandle::Adopted(Arc::new(p)),
        }
    }

    /// Waits for it to exit. An adopted process's status cannot be read
    /// ([`MainExit::UNKNOWN`]).
    pub(crate) async fn wait(&self) -> MainExit {
        match &self.handle {
            MainHandle::Child(p) => MainExit::from(p.wait().await),
            MainHandle::Adopted(p) => {
                let _ = p.exited().await;
                MainExit::UNKNOWN
            }
        }
    }
}

/// The span of one lifecycle: lines logged inside it (also by the cgroup layer, which knows
/// neither) carry the sandbox's ID and lifecycle ID, so the lines themselves never repeat
/// them. Every public operation on a lifecycle enters it once; internal functions never do.
/// It is a root span (no parent): a task a lifecycle's operation spawns in its own span
/// (the exit watch, a stop) would otherwise nest a second copy inside the first, and its
/// lines would carry `sandbox{…}:sandbox{…}:`.
pub(crate) fn sandbox_span(id: &str, lc: LifecycleId) -> tracing::Span {
    tracing::info_span!(parent: None, "sandbox", sandbox = %id, lifecycle = %lc)
}

impl Sandbox {
    /// A lifecycle in its initial state (`Creating` for a start, `Recorded` for an
    /// adoption).
    pub(crate) fn new(
        spec: SandboxSpec,
        lifecycle: LifecycleId,
        created_at_ms: u64,
        cgroup_path: PathBuf,
        cgroup_name: CgroupName,
        initial: LifecycleState,
        jail: Option<crate::jail::JailStatus>,
    ) -> Self {
        let spec_limits = spec.limits.clone();
        Sandbox {
            id: spec.id.clone(),
            lifecycle,
            spec,
            created_at_ms,
            cgroup_path,
            cgroup_name,
            main: OnceLock::new(),
            main_exit: OnceLock::new(),
            main_announce: Mutex::new(()),
            state: Mutex::new(initial),
            op: tokio::sync::Mutex::new(()),
            outcome: watch::channel(None).0,
            escalate: Notify::new(),
            jail,
            deadline_at_ms: Mutex::new(None),
            deadline_moved: Notify::new(),
            deadline_armed: std::sync::atomic::AtomicBool::new(false),
            restart_count: 0,
            restart_since_reset: 0,
            restart_pending: Mutex::new(None),
            restarts_cancelled: std::sync::atomic::AtomicBool::new(false),
            reservation: Mutex::new(None),
            limits: Mutex::new(spec_limits),
            net: OnceLock::new(),
            net_made: std::sync::atomic::AtomicU8::new(crate::net::NET_NONE),
        }
    }

    /// The lifecycle with its initial deadline (ms since the epoch), before it is shared.
    pub(crate) fn with_deadline(self, at_ms: Option<u64>) -> Self {
        *self.deadline_at_ms.lock() = at_ms;
        self
    }

    /// The lifecycle as restart number `count` of its ID (`since_reset` since the backoff
    /// was last reset), before it is shared.
    pub(crate) fn with_restarts(mut self, count: u32, since_reset: u32) -> Self {
        self.restart_count = count;
        self.restart_since_reset = since_reset;
        self
    }

    /// The lifecycle holding the admission reservation `r` until it leaves `Creating`.
    pub(crate) fn with_reservation(self, r: Option<crate::retention::Reservation>) -> Self {
        *self.reservation.lock() = r;
        self
    }

    /// The deadline (ms since the epoch), if any.
    pub(crate) fn deadline_at_ms(&self) -> Option<u64> {
        *self.deadline_at_ms.lock()
    }

    /// The dynamic uid this lifecycle holds, if any.
    pub(crate) fn dynamic_uid(&self) -> Option<u32> {
        self.jail.as_ref().and_then(|j| j.dynamic_uid)
    }

    /// The span every operation on this lifecycle runs in (see [`sandbox_span`]).
    pub(crate) fn span(&self) -> tracing::Span {
        sandbox_span(self.id.as_str(), self.lifecycle)
    }

    /// The wire state.
    pub(crate) fn state(&self) -> State {
        self.state.lock().state()
    }

    /// Reads the state (the lock is held while `f` runs: keep it short).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&LifecycleState) -> R) -> R {
        f(&self.state.lock())
    }

    /// The main process's PID, once known.
    pub(crate) fn main_pid(&self) -> Option<i32> {
        self.main.get().map(|m| m.pid)
    }

    /// The spec with the limits in force.
    pub(crate) fn spec_now(&self) -> SandboxSpec {
        let mut spec = self.spec.clone();
        spec.limits = self.limits.lock().clone();
        spec
    }

    /// The durable record of the lifecycle as it is now.
    pub(crate) fn record(&self) -> Record {
        let state = self.state.lock().clone();
        self.record_in(&state)
    }

    /// The durable record of the lifecycle in `state`.
    fn record_in(&self, state: &LifecycleState) -> Record {
        Record {
            spec: self.spec_now(),
            lifecycle: self.lifecycle,
            state: state.state(),
            paused: state.paused(),
            cgroup: cgroup_name(self.id.as_str(), self.lifecycle),
            main_pid: self.main_pid(),
            main_start_time: self.main.get().and_then(|m| m.start_time),
            stop_reason: state.stop_reason(),
            created_at_ms: self.created_at_ms,
            jail: self.jail.clone(),
            deadline_at_ms: self.deadline_at_ms(),
            restart_count: self.restart_count,
            restart_since_reset: self.restart_since_reset,
            restart_pending: *self.restart_pending.lock(),
            network: self.net.get().cloned(),
        }
    }

    /// Applies `t` to the state under its lock; returns the state left and the state
    /// entered.
    fn apply(&self, t: Transition) -> Result<(LifecycleState, LifecycleState), InvalidTransition> {
        let mut state = self.state.lock();
        let change = only_data(&t);
        let next = transition(&state, t)?;
        match change {
            Some(DataChange::Deadline(at)) => *self.deadline_at_ms.lock() = Some(at),
            Some(DataChange::RestartSettled { .. }) => *self.restart_pending.lock() = None,
            Some(DataChange::Limits(l)) => *self.limits.lock() = *l,
            None => {}
        }
        let left = std::mem::replace(&mut *state, next.clone());
        Ok((left, next))
    }

    /// Waits until the stop's outcome is published (stopped, quarantined or failed).
    pub(crate) async fn await_outcome(
        &self,
        mut rx: watch::Receiver<Option<StopReport>>,
    ) -> Result<StopReport, Error> {
        let published = rx.wait_for(Option::is_some).await.ok();
        published
            .and_then(|r| r.clone())
            .ok_or_else(|| Error::InvalidState {
                id: self.id.clone(),
                state: self.state(),
                op: "wait for the stop's outcome",
            })
    }
}

/// What [`Supervisor::enter`] did.
pub(crate) struct Entered {
    /// The state the lifecycle left.
    pub(crate) left: LifecycleState,
    /// The hooks' write of the new state's record (`None` when the hooks keep no records).
    /// Dropping it does not cancel the write; [`Supervisor::enter_recorded`] hands back
    /// the outcome of a write it already waited for.
    pub(crate) recorded: Option<Persisting>,
}

impl Supervisor {
    /// Moves `sb` by `t` and does every side effect of the move: the new state's record to
    /// the hooks (not waited for; returned), then (by the state entered) the registry,
    /// counters, log line, events and the stop's outcome. A transition that does not apply
    /// changes nothing and does nothing.
    pub(crate) fn enter(
        &self,
        sb: &Arc<Sandbox>,
        t: Transition,
    ) -> Result<Entered, InvalidTransition> {
        let only = only_data(&t);
        let (left, now) = sb.apply(t)?;
        let hooks = &self.inner.cfg.hooks;
        let recorded = hooks
            .wants_records()
            .then(|| hooks.on_change(&sb.record_in(&now)));
        self.effects(sb, &left, &now, only);
        Ok(Entered { left, recorded })
    }

    /// Like [`Supervisor::enter`], but the new state's record is written, and the write
    /// waited for, before the state changes: a lifecycle is never seen in the new state
    /// (nor acts in it) before its record is. The write's outcome is in
    /// [`Entered::recorded`]; a failed write does not stop the transition. The caller holds
    /// the lifecycle's `op` lock (so nothing else changes its state meanwhile, but for a
    /// stop the main process's exit begins: then this returns the refusal, with the state
    /// that stop entered).
    pub(crate) async fn enter_recorded(
        &self,
        sb: &Arc<Sandbox>,
        t: Transition,
    ) -> Result<Entered, InvalidTransition> {
        let hooks = &self.inner.cfg.hooks;
        if !hooks.wants_records() {
            return self.enter(sb, t);
        }
        let next = sb.with_state(|s| transition(s, t.clone()))?;
        let only = only_data(&t);
        let mut rec = sb.record_in(&next);
        match &only {
            Some(DataChange::Deadline(at)) => rec.deadline_at_ms = Some(*at),
            Some(DataChange::RestartSettled { .. }) => rec.restart_pending = None,
            Some(DataChange::Limits(l)) => rec.spec.limits = (**l).clone(),
            None => {}
        }
        let written = hooks.on_change(&rec).await;
        let (left, now) = sb.apply(t)?;
        self.effects(sb, &left, &now, only);
        Ok(Entered {
            left,
            recorded: Some(Box::pin(std::future::ready(written))),
        })
    }

    /// The side effects of entering `now` from `left` (after the record); `only` is the
    /// data a transition that keeps the state changed ([`Transition::DeadlineSet`],
    /// [`Transition::RestartSettled`]).
    fn effects(
        &self,
        sb: &Arc<Sandbox>,
        left: &LifecycleState,
        now: &LifecycleState,
        only: Option<DataChange>,
    ) {
        use LifecycleState as S;
        use std::sync::atomic::Ordering::Relaxed;
        match only {
            Some(DataChange::Deadline(deadline_at_ms)) => {
                // Running → Running: only the deadline moved.
                sb.deadline_moved.notify_one();
                self.emit(sb, EventKind::DeadlineSet { deadline_at_ms });
                tracing::info!(deadline_at_ms, "deadline set");
                return;
            }
            Some(DataChange::Limits(limits)) => {
                // Running → Running: only the limits in force changed.
                self.emit(sb, EventKind::LimitsUpdated { limits });
                return;
            }
            Some(DataChange::RestartSettled { made }) => {
                // Stopped → Stopped: only the pending restart is gone (made: the new
                // lifecycle's events follow).
                if !made {
                    self.emit(sb, EventKind::RestartCancelled);
                    tracing::info!("pending restart cancelled");
                }
                return;
            }
            None => {}
        }
        let c = &self.inner.counters;
        self.count_live(left, now);
        if matches!(left, S::Creating) {
            // After `count_live`: a reader of `admitted` sees it counted once or twice,
            // never not at all.
            drop(sb.reservation.lock().take());
        }
        if let S::Recorded { state: recorded } = left {
            // An adoption is never refused (it joins the retiring lifecycles if it must).
            if let Ok(Some(old)) = self.inner.registry.insert(sb, Admission::Adopt) {
                self.dropped_from_registry(&sb.id, old);
            }
            if let Some(logs) = &self.inner.logs
                && (sb.spec.stdio.stdout == crate::StdioTarget::Log
                    || sb.spec.stdio.stderr == crate::StdioTarget::Log)
            {
                // Its payload still writes to its log: the cap applies again.
                logs.watch(sb.id.as_str(), sb.lifecycle);
            }
            c.adopted.fetch_add(1, Relaxed);
            let pid = sb.main_pid();
            self.emit(
                sb,
                EventKind::Adopted {
                    pid,
                    state: *recorded,
                },
            );
            tracing::info!(recorded_state = %recorded, main_alive = pid.is_some(), "adopted sandbox");
        }
        match now {
            // Initial points: never entered.
            S::Recorded { .. } | S::Creating => {}
            S::Running { paused } => match left {
                S::Creating => {
                    let pid = sb.main_pid().unwrap_or(0);
                    c.starts_ok.fetch_add(1, Relaxed);
                    let jail = sb.jail.clone();
                    self.emit(sb, EventKind::Started { pid, jail });
                    tracing::info!(pid, "sandbox started");
                }
                S::Running { .. } if *paused => self.emit(sb, EventKind::Paused),
                S::Running { .. } => self.emit(sb, EventKind::Resumed),
                _ => {}
            },
            S::Stopping { reason } => {
                self.emit(sb, EventKind::Stopping { reason: *reason });
                tracing::info!(?reason, "stopping sandbox");
            }
            S::Stopped { report } => {
                self.inner.registry.remember_report(sb, report);
                if matches!(left, S::Quarantined { .. }) {
                    c.quarantines_drained.fetch_add(1, Relaxed);
                    tracing::info!("quarantined sandbox drained and removed");
                } else {
                    c.stops_ok.fetch_add(1, Relaxed);
                }
                tracing::info!(
                    total_ms = report.total_ms,
                    signalled = report.signalled,
                    killed = report.killed_after_grace,
                    "sandbox stopped"
                );
                self.emit(
                    sb,
                    EventKind::Stopped {
                        report: report.clone(),
                    },
                );
                // Its cgroup is gone, and every process of it with it.
                self.release_dynamic_uid(sb);
                if matches!(left, S::Stopping { .. }) {
                    self.after_stopped(sb);
                }
                // The registry's bookkeeping (retention, pruning) is done before the
                // outcome is out, so a caller that saw the outcome sees its effects too.
                self.finished(sb);
                sb.outcome.send_replace(Some(report.clone()));
            }
            S::Quarantined { report } => {
                c.stops_quarantined.fetch_add(1, Relaxed);
                tracing::error!(stuck = ?report.stuck, "sandbox quarantined: processes survived the kill");
                self.emit(
                    sb,
                    EventKind::Quarantined {
                        stuck: report.stuck.clone(),
                    },
                );
                sb.outcome.send_replace(Some(report.clone()));
            }
            S::StopFailed { error, report } => {
                self.inner.registry.remember_report(sb, report);
                c.stops_failed.fetch_add(1, Relaxed);
                tracing::error!(%error, "sandbox stop failed");
                if let Some(uid) = sb.dynamic_uid() {
                    // Its cgroup may still hold processes running as it.
                    tracing::warn!(
                        uid,
                        "the failed stop's dynamic uid stays held until the supervisor restarts"
                    );
                }
                self.emit(
                    sb,
                    EventKind::Failed {
                        error: error.clone(),
                    },
                );
                // The registry's bookkeeping (retention, pruning) is done before the
                // outcome is out, so a caller that saw the outcome sees its effects too.
                self.finished(sb);
                sb.outcome.send_replace(Some(report.clone()));
            }
            S::StartFailed { error } => {
                c.starts_failed.fetch_add(1, Relaxed);
                self.emit(
                    sb,
                    EventKind::StartFailed {
                        error: error.clone(),
                    },
                );
                tracing::warn!(target: START_FAILED_TARGET, %error, "sandbox start failed");
                // Its spawn never returned a process, and its cgroup was removed.
                self.release_dynamic_uid(sb);
                self.unregister(sb);
                // Nothing ran: a log file made for it has nothing worth keeping.
                self.delete_log(&sb.id, sb.lifecycle);
            }
        }
    }

    /// Removes a lifecycle that is its ID's current one from the registry (a failed
    /// start, or a start whose record failed), the previous lifecycle becoming current
    /// again if it is still retiring.
    pub(crate) fn unregister(&self, sb: &Sandbox) {
        self.inner.registry.remove_current(sb);
        self.inner.cfg.hooks.on_forget(&sb.id, sb.lifecycle);
    }

    /// Hands an event to the hooks, then broadcasts it.
    /// Records how the main process ended and emits `main_exited`, once per lifecycle
    /// whoever learns it first (its monitor, or a stop that waited for it); returns whether
    /// this call did. Under `main_announce`, so that a later caller returns only after the
    /// event is out.
    pub(crate) fn announce_main_exit(&self, sb: &Sandbox, exit: MainExit) -> bool {
        let _g = sb.main_announce.lock();
        if sb.main_exit.set(exit).is_err() {
            return false;
        }
        self.emit(sb, EventKind::MainExited { status: exit });
        true
    }

    pub(crate) fn emit(&self, sb: &Sandbox, kind: EventKind) {
        let ev = Event {
            id: sb.id.clone(),
            lifecycle: sb.lifecycle,
            at_ms: now_ms(),
            kind,
        };
        self.inner.cfg.hooks.on_event(&ev);
        let _ = self.inner.events.send(ev);
    }
}

/// What a transition that keeps the state changes instead.
#[derive(Clone)]
enum DataChange {
    /// [`Transition::LimitsUpdated`]: the limits now in force.
    Limits(Box<crate::spec::Limits>),
    /// [`Transition::DeadlineSet`]: the new deadline.
    Deadline(u64),
    /// [`Transition::RestartSettled`].
    RestartSettled { made: bool },
}

/// The data a transition that keeps the state changes, if it is one.
fn only_data(t: &Transition) -> Option<DataChange> {
    match t {
        Transition::DeadlineSet { at_ms } => Some(DataChange::Deadline(*at_ms)),
        Transition::RestartSettled { made } => Some(DataChange::RestartSettled { made: *made }),
        Transition::LimitsUpdated { limits } => Some(DataChange::Limits(limits.clone())),
        _ => None,
    }
}
