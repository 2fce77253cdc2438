//! The daemon's supervisor hooks ([`DaemonHooks`]: the durable store and event-driven
//! metrics) and the crash test's pause points ([`PauseAt`], test-only).

#[cfg(feature = "test-hooks")]
use std::fs;
#[cfg(feature = "test-hooks")]
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "test-hooks")]
use anyhow::{Result, bail};
use paddock_supervisor::{Event, Hooks, LifecycleId, Persisting, Record, SandboxId};

use crate::metrics::Metrics;
use crate::store::Store;

/// The environment variable of the crash test's hook (test-only; see [`PauseAt`]).
#[cfg(feature = "test-hooks")]
pub const TEST_PAUSE_ENV: &str = "PADDOCK_TEST_PAUSE_AT";

/// A point inside a create at which the daemon blocks that create forever, so the crash
/// test can SIGKILL the daemon exactly there. **Test-only**: set through
/// `PADDOCK_TEST_PAUSE_AT`, read once at start-up; never set it in production (every create
/// would hang). When a create reaches the point, the daemon logs
/// `test hook: create paused` (WARN, with `sandbox`, `lifecycle` and `point`) and waits on
/// a future that never completes.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAt {
    /// The `creating` record is committed; no cgroup exists yet.
    Recorded,
    /// The record is committed and the sandbox's cgroup made (empty, not yet tagged): the
    /// state a crash between the supervisor's `mkdir` and its owner tag leaves.
    CgroupMade,
    /// The payload is spawned in its tagged cgroup; its `running` record (with the main
    /// PID) is not written.
    Spawned,
    /// A `veth` network's creation stopped right after this step
    /// (`net:<step>`, one of `paddock_net::CREATE_STEPS`).
    Net(&'static str),
}

#[cfg(feature = "test-hooks")]
impl PauseAt {
    /// Reads [`TEST_PAUSE_ENV`]: `None` when unset, an error naming the accepted values when
    /// it holds anything else.
    pub fn from_env() -> Result<Option<PauseAt>> {
        let Some(v) = std::env::var_os(TEST_PAUSE_ENV) else {
            return Ok(None);
        };
        Ok(Some(match v.to_str() {
            Some("after_record") => PauseAt::Recorded,
            Some("after_mkdir") => PauseAt::CgroupMade,
            Some("after_spawn") => PauseAt::Spawned,
            Some(s) if net_step(s).is_some() => PauseAt::Net(net_step(s).unwrap_or_default()),
            _ => bail!(
                "{TEST_PAUSE_ENV}={v:?}: expected after_record, after_mkdir, after_spawn or net:<step> (a test-only hook; unset it)"
            ),
        }))
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            PauseAt::Recorded => "after_record",
            PauseAt::CgroupMade => "after_mkdir",
            PauseAt::Spawned => "after_spawn",
            PauseAt::Net(s) => s,
        }
    }
}

/// The step of `net:<step>`.
#[cfg(feature = "test-hooks")]
fn net_step(s: &str) -> Option<&'static str> {
    let st = s.strip_prefix("net:")?;
    paddock_supervisor::NET_CREATE_STEPS
        .iter()
        .find(|x| **x == st)
        .copied()
}

#[cfg(feature = "test-hooks")]
fn paused_forever(rec: &Record, at: PauseAt) -> Persisting {
    tracing::warn!(sandbox = %rec.spec.id, lifecycle = %rec.lifecycle, point = at.as_str(), "test hook: create paused ({TEST_PAUSE_ENV}); it never continues");
    Box::pin(std::future::pending())
}

/// The supervisor hooks of the daemon: the durable store (records, and the event ring the
/// event stream serves) and event-driven metrics. Write failures are logged and counted by
/// the store's writer.
pub struct DaemonHooks {
    pub(super) store: Arc<Store>,
    pub(super) metrics: Arc<Metrics>,
    /// The crash test's hook ([`PauseAt`]), and the managed root's path (for `after_mkdir`).
    #[cfg(feature = "test-hooks")]
    pub(super) pause_at: Option<(PauseAt, PathBuf)>,
}

impl Hooks for DaemonHooks {
    fn before_create(&self, rec: &Record) -> Persisting {
        let put = self.store.put(rec);
        #[cfg(feature = "test-hooks")]
        if let Some((at @ (PauseAt::Recorded | PauseAt::CgroupMade), root)) = &self.pause_at {
            let (at, rec) = (*at, rec.clone());
            let cg = root.join(&rec.cgroup);
            return Box::pin(async move {
                put.await?;
                if at == PauseAt::CgroupMade {
                    fs::create_dir(&cg).map_err(|e| {
                        paddock_supervisor::HookError::new(
                            paddock_supervisor::HookErrorKind::Other,
                            format!("mkdir {}: {e}", cg.display()),
                        )
                    })?;
                }
                paused_forever(&rec, at).await
            });
        }
        put
    }
    fn on_change(&self, rec: &Record) -> Persisting {
        #[cfg(feature = "test-hooks")]
        if let Some((PauseAt::Spawned, _)) = &self.pause_at
            && rec.state == paddock_supervisor::State::Running
            && rec.main_pid.is_some()
        {
            return paused_forever(rec, PauseAt::Spawned);
        }
        self.store.put(rec)
    }
    fn on_event(&self, ev: &Event) {
        // Numbered, committed and only then served (see `crate::store::events`); queued
        // without blocking and without a commit of its own.
        self.store.push_event(ev);
        self.metrics.on_event(ev);
    }
    #[cfg(feature = "test-hooks")]
    fn net_step(
        &self,
        step: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        if let Some((PauseAt::Net(at), _)) = &self.pause_at
            && *at == step
        {
            tracing::warn!(
                point = step,
                "test hook: create paused ({TEST_PAUSE_ENV}); it never continues"
            );
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(()))
    }
    fn on_forget(&self, id: &SandboxId, lc: LifecycleId) {
        drop(self.store.delete(id, lc));
    }
}
