//! What a durable store and an exporter of metrics hear from the supervisor: the [`Hooks`]
//! trait, the [`Record`] it is handed, and the typed [`HookError`] a store reports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::events::{Event, StopReason};
use crate::ids::LifecycleId;
use crate::spec::{SandboxId, SandboxSpec};
use crate::state::State;

/// What a durable store and an exporter of metrics need to hear from the supervisor.
/// Every method has a default that does nothing.
pub trait Hooks: Send + Sync + 'static {
    /// Whether the supervisor should build [`Record`]s for this implementation at all
    /// (building one clones the spec). Default true; [`NoHooks`] says false.
    fn wants_records(&self) -> bool {
        true
    }
    /// Called before a sandbox's cgroup is created; the start waits for the returned write.
    /// An error aborts the start: nothing is created and the start fails with
    /// [`crate::Error::Journal`].
    fn before_create(&self, _rec: &Record) -> Persisting {
        persisted()
    }
    /// Called after every state change, with the record of the new state. `start` waits
    /// for the write of the record of the sandbox it has just started before it returns, so
    /// a started sandbox is on record: if that write fails, the sandbox is killed and the
    /// start fails with [`crate::Error::Journal`]. A graceful stop waits for the write of
    /// its `stopping` record before it becomes visible or signals anything. The other
    /// writes are not waited for, and dropping them must not cancel them.
    fn on_change(&self, _rec: &Record) -> Persisting {
        persisted()
    }
    /// Called for every event, synchronously, before it is broadcast.
    fn on_event(&self, _ev: &Event) {}
    /// Called when a lifecycle leaves the registry (forgotten, pruned after its stop, or a
    /// failed start).
    fn on_forget(&self, _id: &SandboxId, _lc: LifecycleId) {}
    /// Test-only (feature `test-hooks`): called synchronously by a stop after it set
    /// `pids.max = 0` (where the pids controller is enabled) and right before its kill:
    /// when processes outlived the grace period, or at once for a `kill` (whose cgroup may
    /// then already be empty). It runs on the stop's path, so it must return quickly.
    #[cfg(feature = "test-hooks")]
    fn before_kill(&self, _id: &SandboxId, _lc: LifecycleId) {}
    /// Test-only (feature `test-hooks`): called after each step of a `veth` network's
    /// creation (`paddock_net::CREATE_STEPS`); the creation waits for the returned future
    /// (a crash test pauses one forever and kills the process there).
    #[cfg(feature = "test-hooks")]
    fn net_step(&self, _step: &'static str) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::ready(()))
    }
}

/// A record write handed to a store by a [`Hooks`] method: resolves once the store has
/// committed it (durably, where the store makes that record durable) or failed to.
/// Dropping it must not cancel the write.
pub type Persisting = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send + 'static>>;

/// A [`Persisting`] that is already done (for hooks that keep nothing).
pub fn persisted() -> Persisting {
    Box::pin(std::future::ready(Ok(())))
}

/// What kind of failure a [`HookError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookErrorKind {
    /// The record could not be encoded for the store.
    Encode,
    /// The store could not write (commit) the record.
    Write,
    /// The store is closed or its writer stopped: no later write will succeed either.
    Closed,
    /// Anything else.
    Other,
}

/// The error of a [`Hooks`] write: a kind and the store's own error. Its message is the
/// store's error's message (which names the operation); its source is that error's source.
pub struct HookError {
    kind: HookErrorKind,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HookError {
    /// A hook error of `kind` caused by `error` (any error, or a message).
    pub fn new(
        kind: HookErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        HookError {
            kind,
            error: error.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> HookErrorKind {
        self.kind
    }

    /// The store's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Debug for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;
impl Hooks for NoHooks {
    fn wants_records(&self) -> bool {
        false
    }
}

/// The durable facts about one lifecycle, as handed to [`Hooks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The spec it was started with.
    pub spec: SandboxSpec,
    /// The lifecycle.
    pub lifecycle: LifecycleId,
    /// Its state.
    pub state: State,
    /// Whether it is frozen.
    pub paused: bool,
    /// The cgroup's name under the root.
    pub cgroup: String,
    /// The main process's PID, once spawned.
    pub main_pid: Option<i32>,
    /// The main process's start time (`/proc/<pid>/stat` field 22), to recognise it after
    /// a restart without being fooled by PID reuse.
    pub main_start_time: Option<u64>,
    /// Why a stop is running or ran.
    pub stop_reason: Option<StopReason>,
    /// Milliseconds since the epoch when the lifecycle was created.
    pub created_at_ms: u64,
    /// What its jail is (the uid it runs as, its dynamic uid), for a jailed sandbox. The
    /// dynamic uid is in the record written before the cgroup is created, so a restarted
    /// supervisor knows which uids its adopted sandboxes hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<crate::jail::JailStatus>,
    /// Its `veth` network, as made or about to be made: in the record written before the
    /// cgroup (and before any network object) is created, so a restarted supervisor knows
    /// the lease and the names of every object of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::netspec::NetStatus>,
    /// The deadline, in milliseconds since the Unix epoch (from the spec's `deadline_ms`,
    /// or as extended since): a restarted supervisor stops the sandbox when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<u64>,
    /// How many restarts of the ID this lifecycle is (0: not a restart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// Restarts since the restart backoff was last reset (see [`crate::RestartPolicy`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_since_reset: u32,
    /// The restart decided when this lifecycle stopped, for a supervisor restarted before
    /// it is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_pending: Option<crate::PendingRestart>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_error_shows_the_store_error_and_keeps_its_kind() {
        let io = std::io::Error::other("disk full");
        let e = HookError::new(HookErrorKind::Write, io);
        assert_eq!(e.kind(), HookErrorKind::Write);
        assert_eq!(e.to_string(), "disk full");
        assert!(e.get_ref().downcast_ref::<std::io::Error>().is_some());
        let m = HookError::new(HookErrorKind::Closed, "the database is closed");
        assert_eq!(m.to_string(), "the database is closed");
    }
}
