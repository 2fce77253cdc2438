//! Restarts (`SandboxSpec::restart`): a lifecycle that ended because its main process
//! exited is followed, after a backoff, by a new lifecycle of the same ID with the same
//! spec, as the policy says.
//!
//! The decision is made when the stop's `Removed` is entered (so the `stopped` record
//! carries it as `restart_pending`, and a supervisor restarted during the backoff makes the
//! restart after adoption); the restart waits on a timer that an explicit stop, kill,
//! deadline or shutdown of the ID cancels ([`Supervisor::cancel_restart`]). A start that
//! fails counts as a failed attempt and is retried under the same policy.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::Supervisor;
use crate::events::{EventKind, StopReason, now_ms};
use crate::lifecycle::Sandbox;
use crate::spec::{SandboxId, SandboxSpec};

/// A lifecycle that ran at least this long starts its successor's backoff from the
/// policy's initial one again (as Docker does).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// A restart decided when a lifecycle stopped, not yet made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingRestart {
    /// The restart's number for the ID (1 for the first).
    pub attempt: u32,
    /// Restarts since the backoff was last reset (the next backoff doubles from it).
    pub since_reset: u32,
    /// When it is made, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Supervisor {
    /// Decides, as `sb`'s stop ends in `Removed` for `reason`, whether a restart follows;
    /// sets it on the lifecycle (for its record and [`Self::schedule_restart`]).
    pub(crate) fn decide_restart(&self, sb: &Sandbox, reason: StopReason) {
        let policy = sb.spec.restart;
        if reason != StopReason::MainExited
            || sb.restarts_cancelled.load(Relaxed)
            || !policy.wants(sb.main_exit.get())
        {
            return;
        }
        let attempt = sb.restart_count + 1;
        if policy.max_restarts.is_some_and(|max| attempt > max) {
            tracing::info!(
                restarts = sb.restart_count,
                "restart limit reached; not restarting"
            );
            return;
        }
        let ran = now_ms().saturating_sub(sb.created_at_ms);
        let since_reset = if ran >= BACKOFF_RESET_AFTER.as_millis() as u64 {
            1
        } else {
            sb.restart_since_reset + 1
        };
        let at_ms = now_ms() + policy.backoff_ms(since_reset);
        *sb.restart_pending.lock() = Some(PendingRestart {
            attempt,
            since_reset,
            at_ms,
        });
    }

    /// After `sb` stopped with a restart pending: announces it (`restarting`) and waits for
    /// its time on a timer, then starts the new lifecycle.
    pub(crate) fn after_stopped(&self, sb: &Arc<Sandbox>) {
        let Some(p) = *sb.restart_pending.lock() else {
            return;
        };
        self.emit(
            sb,
            EventKind::Restarting {
                attempt: p.attempt,
                restart_at_ms: p.at_ms,
            },
        );
        tracing::info!(attempt = p.attempt, at_ms = p.at_ms, "restart scheduled");
        self.schedule_restart(sb.spec.clone(), p, Some(sb.clone()));
    }

    /// Starts `spec` again as restart `p` when `p.at_ms` comes, unless the ID's restarts
    /// are cancelled meanwhile (or a lifecycle of the ID was started by someone else).
    /// `stopped`, the lifecycle it follows (when this supervisor ran it), gets the
    /// restart settled on record first, so no later supervisor makes it again.
    pub(crate) fn schedule_restart(
        &self,
        spec: SandboxSpec,
        p: PendingRestart,
        stopped: Option<Arc<Sandbox>>,
    ) {
        let handle = Arc::new(RestartHandle {
            cancelled: AtomicBool::new(false),
            wake: Notify::new(),
            done: watch::channel(false).0,
        });
        if let Some(old) = self
            .inner
            .restarts
            .lock()
            .insert(spec.id.clone(), handle.clone())
        {
            old.cancel();
        }
        let sup = self.clone();
        let span = tracing::info_span!(parent: None, "restart", sandbox = %spec.id);
        tokio::spawn(
            async move {
                sup.restart_when_due(spec.clone(), p, &handle, stopped)
                    .await;
                // Done: forget it (unless replaced) and tell a canceller waiting for it.
                let mut pending = sup.inner.restarts.lock();
                if pending
                    .get(&spec.id)
                    .is_some_and(|h| Arc::ptr_eq(h, &handle))
                {
                    pending.remove(&spec.id);
                }
                drop(pending);
                handle.done.send_replace(true);
            }
            .instrument(span),
        );
    }

    async fn restart_when_due(
        &self,
        spec: SandboxSpec,
        mut p: PendingRestart,
        handle: &RestartHandle,
        mut stopped: Option<Arc<Sandbox>>,
    ) {
        let id = spec.id.clone();
        loop {
            let wait = Duration::from_millis(p.at_ms.saturating_sub(now_ms()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = handle.wake.notified() => {}
            }
            if handle.cancelled.load(Relaxed) {
                return;
            }
            if let Some(old) = stopped.take() {
                let _op = old.op.lock().await;
                if let Ok(entered) = self
                    .enter_recorded(&old, crate::Transition::RestartSettled { made: true })
                    .await
                    && let Some(recorded) = entered.recorded
                    && let Err(e) = recorded.await
                {
                    tracing::warn!(error = %e, "the restart being made was not recorded as made");
                }
            }
            let started = self.start_restart(spec.clone(), p).await;
            if handle.cancelled.load(Relaxed) {
                // Cancelled while it started: a stop request waits for this to undo it.
                if let Ok(lc) = started
                    && let Ok(sb) = self.find(&id, Some(lc))
                {
                    let _ = self.stop_lifecycle(&sb, None, StopReason::Requested).await;
                }
                return;
            }
            match started {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(attempt = p.attempt, error = %e, "restart failed to start");
                    let policy = spec.restart;
                    let attempt = p.attempt + 1;
                    if matches!(e, crate::Error::AlreadyExists(_))
                        || policy.max_restarts.is_some_and(|max| attempt > max)
                    {
                        return;
                    }
                    p = PendingRestart {
                        attempt,
                        since_reset: p.since_reset + 1,
                        at_ms: now_ms() + policy.backoff_ms(p.since_reset + 1),
                    };
                }
            }
        }
    }

    /// Starts restart `p` of `spec`: a new lifecycle counted as that restart; returns it.
    async fn start_restart(
        &self,
        spec: SandboxSpec,
        p: PendingRestart,
    ) -> Result<crate::LifecycleId, crate::Error> {
        self.inner.counters.restarts.fetch_add(1, Relaxed);
        let started = self
            .start_counted(spec, p.attempt, p.since_reset, None)
            .await?;
        tracing::info!(attempt = p.attempt, lifecycle = %started.info.lifecycle, "sandbox restarted");
        Ok(started.info.lifecycle)
    }

    /// A supervisor restarted while the restart of a stopped lifecycle waited for its
    /// backoff: the restart is scheduled again for its recorded time (at once if it has
    /// passed), unless a lifecycle of the ID is live or another restart is pending.
    pub(crate) fn resume_pending_restart(&self, rec: &crate::Record) {
        let Some(p) = rec.restart_pending else {
            return;
        };
        if rec.state != crate::State::Stopped
            || self.inner.registry.id_held(&rec.spec.id)
            || self.inner.restarts.lock().contains_key(&rec.spec.id)
        {
            return;
        }
        tracing::info!(sandbox = %rec.spec.id, attempt = p.attempt, at_ms = p.at_ms, "resuming a restart that was pending when the supervisor stopped");
        self.schedule_restart(rec.spec.clone(), p, None);
    }

    /// Ends the restarts of `id`: the current lifecycle (if it is stopping because its main
    /// process exited) is not followed by one, a pending one is not made — also by a
    /// supervisor restarted later: the cancellation is recorded
    /// ([`crate::Transition::RestartSettled`]) before this returns — and one being made
    /// right now is stopped again before this returns. Returns whether a pending restart
    /// was cancelled.
    pub(crate) async fn cancel_restart(&self, id: &SandboxId) -> bool {
        if let Ok(sb) = self.find(id, None) {
            sb.restarts_cancelled.store(true, Relaxed);
            if sb.restart_pending.lock().is_some() {
                let _op = sb.op.lock().await;
                if let Ok(entered) = self
                    .enter_recorded(&sb, crate::Transition::RestartSettled { made: false })
                    .await
                    && let Some(recorded) = entered.recorded
                    && let Err(e) = recorded.await
                {
                    tracing::warn!(error = %e, "the cancelled restart was not recorded: a restarted supervisor may make it");
                }
            }
        }
        let Some(handle) = self.cancel_restart_timer(id) else {
            return false;
        };
        let mut done = handle.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
        true
    }

    /// The in-memory part of [`Self::cancel_restart`] (for `forget`, whose record goes):
    /// no further restart of `id` is made by this supervisor. Returns the cancelled
    /// restart's handle, whose `done` says when its task has ended.
    pub(crate) fn cancel_restart_timer(&self, id: &SandboxId) -> Option<Arc<RestartHandle>> {
        if let Ok(sb) = self.find(id, None) {
            sb.restarts_cancelled.store(true, Relaxed);
        }
        let handle = self.inner.restarts.lock().get(id).cloned()?;
        handle.cancel();
        tracing::info!(sandbox = %id, "pending restart cancelled");
        Some(handle)
    }
}

/// A scheduled restart's controls.
pub(crate) struct RestartHandle {
    /// Set by a cancellation; checked by the restart's task at each step.
    cancelled: AtomicBool,
    /// Wakes the task from its backoff.
    wake: Notify,
    /// `true` once the task has ended (and undone a restart made after its cancellation).
    done: watch::Sender<bool>,
}

impl RestartHandle {
    fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
        self.wake.notify_one();
    }
}
