//! Deadlines: a sandbox's time to live (`SandboxSpec::deadline_ms`), kept as an absolute
//! time in its record, so it holds across a restart of the supervisor, and moved by
//! [`Supervisor::extend_deadline`]. When it passes, the sandbox is stopped gracefully by its
//! own stop policy with reason [`StopReason::Deadline`].
//!
//! One timer task per lifecycle that has (or is given) a deadline, started once; it sleeps
//! until the deadline (in chunks of at most a minute, so a change of the wall clock is
//! seen), wakes early when the deadline moves, and ends with the lifecycle's stop.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::Instrument;

use crate::events::{EventKind, StopReason, now_ms};
use crate::lifecycle::Sandbox;
use crate::spec::{MAX_DURATION, SandboxId};
use crate::state::{LifecycleState, Transition};
use crate::{Error, Supervisor};

/// The longest single sleep of a deadline's timer (it re-reads the wall clock after it).
const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Moves the deadline of the sandbox `id` (its current lifecycle) `by` later: from its
    /// deadline, or from now when it has none or it has passed without the stop having
    /// begun yet. Returns the new deadline (milliseconds since the Unix epoch). The new
    /// deadline is recorded before it takes effect; a sandbox that is not running (stopping,
    /// stopped, quarantined, failed) is refused with [`Error::InvalidState`] and nothing
    /// changes. `by` must be at most 365 days ([`Error::InvalidSpec`] otherwise), and the
    /// new deadline at most 365 days away ([`Error::OutOfRange`] otherwise). A `by` of zero keeps a deadline as it is, and
    /// gives a sandbox without one the deadline now (it stops).
    pub async fn extend_deadline(&self, id: &SandboxId, by: Duration) -> Result<u64, Error> {
        let max_ms = MAX_DURATION.as_millis() as u64;
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        if by_ms > max_ms {
            return Err(Error::InvalidSpec(format!(
                "extend_ms = {by_ms}: must be at most {max_ms} (365 days)"
            )));
        }
        let sb = self.find(id, None)?;
        // Serialised with the beginning of a stop (which the timer's own stop takes too).
        let _op = sb.op.lock().await;
        let now = now_ms();
        let at = sb.deadline_at_ms().unwrap_or(now).max(now) + by_ms;
        if at - now > max_ms {
            return Err(Error::OutOfRange(format!(
                "extend_ms = {by_ms}: the deadline would be {} ms away, more than {max_ms} (365 days)",
                at - now
            )));
        }
        let entered = self
            .enter_recorded(&sb, Transition::DeadlineSet { at_ms: at })
            .await
            .map_err(|e| Error::InvalidState {
                id: id.clone(),
                state: e.from.state(),
                op: "extend the deadline",
            })?;
        self.arm_deadline(&sb);
        if let Some(recorded) = entered.recorded
            && let Err(reason) = recorded.await
        {
            return Err(Error::Journal {
                id: id.clone(),
                reason,
            });
        }
        Ok(at)
    }

    /// Starts the deadline's timer of `sb` if it has a deadline and no timer yet.
    pub(crate) fn arm_deadline(&self, sb: &Arc<Sandbox>) {
        if sb.deadline_at_ms().is_none() || sb.deadline_armed.swap(true, Relaxed) {
            return;
        }
        let sup = self.clone();
        let sb = sb.clone();
        let span = sb.span();
        tokio::spawn(async move { sup.deadline_timer(sb).await }.instrument(span));
    }

    /// The timer: waits for the deadline (following its moves) and stops the sandbox when
    /// it passes; ends early when the lifecycle's stop finishes for another reason.
    async fn deadline_timer(self, sb: Arc<Sandbox>) {
        let mut outcome = sb.outcome.subscribe();
        loop {
            let moved = sb.deadline_moved.notified();
            tokio::pin!(moved);
            // Registered before the deadline is read, so a move in between is not missed.
            moved.as_mut().enable();
            let Some(at) = sb.deadline_at_ms() else {
                return;
            };
            let now = now_ms();
            if at > now {
                let nap = Duration::from_millis(at - now).min(MAX_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = &mut moved => {}
                    _ = outcome.wait_for(Option::is_some) => return,
                }
                continue;
            }
            if !sb.with_state(|s| matches!(s, LifecycleState::Running { .. })) {
                // Stopping already (or over): nothing to do.
                return;
            }
            self.emit(&sb, EventKind::Deadline { deadline_at_ms: at });
            tracing::info!(deadline_at_ms = at, "deadline passed; stopping the sandbox");
            if let Err(e) = self.stop_lifecycle(&sb, None, StopReason::Deadline).await {
                tracing::warn!(error = %e, "the deadline's stop failed");
            }
            return;
        }
    }
}
