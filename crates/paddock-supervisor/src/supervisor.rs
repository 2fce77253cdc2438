//! The [`Supervisor`]: its shared state, and the operations that only read a lifecycle or
//! change its pause state. Starting is in `start`, stopping in `stop`, adoption and
//! reclaim in `recovery`; every state change goes through [`Supervisor::enter`]
//! (`lifecycle`).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use paddock_cgroup::{Cgroup, Error as CgError, Root};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::Error;
use crate::config::Config;
use crate::events::{Event, MainExit, StopReport, StuckProcess};
use crate::hooks::Record;
use crate::ids::LifecycleId;
use crate::lifecycle::Sandbox;
use crate::logs::LogDir;
use crate::registry::Registry;
use crate::spec::{SandboxId, SandboxSpec};
use crate::state::{State, Transition};

/// How long pause and resume wait for the freezer.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot of one lifecycle of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxInfo {
    /// The ID.
    pub id: SandboxId,
    /// The lifecycle.
    pub lifecycle: LifecycleId,
    /// The state.
    pub state: State,
    /// Whether it is frozen.
    pub paused: bool,
    /// Whether this is the ID's current lifecycle (false for an older one still stopping).
    pub current: bool,
    /// The main process's PID.
    pub pid: Option<i32>,
    /// The cgroup's path.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cgroup_path: PathBuf,
    /// How the main process ended, once it has.
    pub main_exit: Option<MainExit>,
    /// The stop's report, once a stop finished (or quarantined).
    pub stop_report: Option<StopReport>,
    /// Processes stuck in a quarantined sandbox.
    pub stuck: Vec<StuckProcess>,
    /// The error of a failed sandbox.
    pub error: Option<String>,
    /// Milliseconds since the epoch when the lifecycle was created.
    pub created_at_ms: u64,
    /// The spec.
    pub spec: SandboxSpec,
    /// What its jail is (uid, gid, dynamic uid, capabilities, Landlock), for a jailed
    /// sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<crate::jail::JailStatus>,
    /// The deadline (milliseconds since the Unix epoch), if it has one: it is stopped
    /// (reason `deadline`) when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<u64>,
    /// How many restarts of the ID this lifecycle is (0: not a restart).
    #[serde(default)]
    pub restart_count: u32,
    /// The restart that follows this (stopped) lifecycle, while it waits for its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_pending: Option<crate::PendingRestart>,
    /// Its `veth` network: host link, addresses, taps, rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::netspec::NetStatus>,
}

/// Resource usage of a sandbox. `None` means the controller is not available, not zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxStats {
    /// Total CPU time, µs.
    pub cpu_usage_usec: Option<u64>,
    /// User CPU time, µs.
    pub cpu_user_usec: Option<u64>,
    /// System CPU time, µs.
    pub cpu_system_usec: Option<u64>,
    /// Periods throttled by `cpu.max`.
    pub cpu_nr_throttled: Option<u64>,
    /// Memory in use, bytes.
    pub memory_current: Option<u64>,
    /// Peak memory, bytes.
    pub memory_peak: Option<u64>,
    /// OOM kills.
    pub memory_oom_kill: Option<u64>,
    /// Times `memory.high` throttled.
    pub memory_high_events: Option<u64>,
    /// Times `memory.max` was hit.
    pub memory_max_events: Option<u64>,
    /// Processes and threads.
    pub pids_current: Option<u64>,
    /// Bytes read from block devices (io controller).
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices (io controller).
    pub io_write_bytes: Option<u64>,
    /// Processes in the cgroup subtree (counted from `cgroup.procs`).
    pub processes: usize,
    /// Pressure stall information (cpu, memory, io); absent from answers of older daemons.
    #[serde(default)]
    pub pressure: crate::pressure::SandboxPressure,
}

/// A started sandbox, with the parent ends of any [`crate::StdioTarget::Pipe`] streams.
#[derive(Debug)]
pub struct Started {
    /// The sandbox as it is now (running).
    pub info: SandboxInfo,
    /// Write end of the main process's stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// Read end of its stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// Read end of its stderr pipe.
    pub stderr: Option<OwnedFd>,
}

/// Counters of what the supervisor did, for metrics.
#[derive(Debug, Default)]
pub struct SupervisorCounters {
    /// Starts that succeeded.
    pub starts_ok: AtomicU64,
    /// Restarts attempted by a restart policy (each also counts as a start).
    pub restarts: AtomicU64,
    /// Starts that failed (nothing was left behind).
    pub starts_failed: AtomicU64,
    /// Starts refused because the ID was live.
    pub starts_conflict: AtomicU64,
    /// Stops that ended with everything gone.
    pub stops_ok: AtomicU64,
    /// Stops that ended in quarantine.
    pub stops_quarantined: AtomicU64,
    /// Stops that failed.
    pub stops_failed: AtomicU64,
    /// Processes killed because they outlived the grace period (or because the removal's
    /// EBUSY backstop found them).
    pub killed_after_grace: AtomicU64,
    /// Processes killed by a stop that had no grace period (a kill, or a grace of 0):
    /// asked for, so not counted in `killed_after_grace`.
    pub killed_without_grace: AtomicU64,
    /// Quarantined sandboxes whose processes finally went and whose cgroup was removed.
    pub quarantines_drained: AtomicU64,
    /// Lifecycles adopted from a previous supervisor process.
    pub adopted: AtomicU64,
    /// Owned cgroups without a lifecycle that reconciliation killed and removed.
    pub reclaimed: AtomicU64,
    /// Of `reclaimed`, the cgroups of provably dead owners (a killed `paddock run`).
    pub reclaimed_dead_owner: AtomicU64,
    /// Finished lifecycles forgotten by [`Config::retain_stopped`].
    pub retention_pruned: AtomicU64,
    /// Sandbox host links of this supervisor (or of dead `paddock run`s) without a live
    /// lifecycle that reconciliation removed.
    pub net_reclaimed_links: AtomicU64,
    /// Pinned sandbox network namespaces reclaimed so.
    pub net_reclaimed_namespaces: AtomicU64,
    /// Owners whose stale nftables rules were reclaimed.
    pub net_reclaimed_rules: AtomicU64,
    /// Address leases reclaimed (of lifecycles not live, or of dead holders).
    pub net_reclaimed_leases: AtomicU64,
    /// Network teardowns that failed at a stop (their objects are left for reclaim).
    pub net_teardowns_failed: AtomicU64,
}

/// What every clone of a [`Supervisor`] shares.
pub(crate) struct Inner {
    pub(crate) cfg: Config,
    /// The log files, when `cfg.log_dir` is set.
    pub(crate) logs: Option<LogDir>,
    /// `cfg.stdio_dir`, opened.
    pub(crate) stdio_dir: Option<Arc<crate::stdio::StdioDir>>,
    /// Slots for opening stdio files on blocking threads ([`crate::MAX_STDIO_OPENS`]).
    pub(crate) stdio_slots: Arc<tokio::sync::Semaphore>,
    /// Whether the root hands the pids controller to sandboxes (so `pids.max` exists).
    pub(crate) pids_enabled: AtomicBool,
    /// Whether the root hands the memory controller to sandboxes (so `memory.peak` can
    /// exist).
    pub(crate) memory_enabled: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) counters: SupervisorCounters,
    /// Lifecycles running, stopping or quarantined (see [`Supervisor::live`]); kept by
    /// `enter`.
    pub(crate) live: AtomicUsize,
    /// Starts admitted and not yet live ([`Supervisor::reserve`]).
    pub(crate) reserved: Arc<crate::retention::Reserved>,
    /// Wakes the retention task (a lifecycle was retained, or the supervisor is dropped).
    pub(crate) retention_wake: Arc<tokio::sync::Notify>,
    /// The dynamic users' uids, when `cfg.dynamic_uids` is set.
    pub(crate) uids: Option<parking_lot::Mutex<crate::uids::UidAllocator>>,
    /// Pending restarts by ID, each with what cancels it (see `restart`).
    pub(crate) restarts: parking_lot::Mutex<
        std::collections::HashMap<SandboxId, Arc<crate::restart::RestartHandle>>,
    >,
    /// The `veth` networks' state.
    pub(crate) net: crate::net::NetState,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.retention_wake.notify_one();
    }
}

/// The supervisor. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor over `cfg.root`. With `cfg.subreaper` it makes this process a child
    /// subreaper, so orphaned descendants of sandboxes are reaped here.
    pub fn new(cfg: Config) -> Result<Self, Error> {
        if cfg.subreaper {
            paddock_proc::set_child_subreaper().map_err(|cause| Error::Io {
                op: "prctl(PR_SET_CHILD_SUBREAPER)".into(),
                cause,
            })?;
        }
        let logs = match &cfg.log_dir {
            Some(dir) => {
                Some(
                    LogDir::open_with(dir, cfg.log_limits).map_err(|cause| Error::Io {
                        op: format!("open log directory {}", dir.display()),
                        cause,
                    })?,
                )
            }
            None => None,
        };
        let stdio_dir = match &cfg.stdio_dir {
            Some(dir) => Some(Arc::new(crate::stdio::StdioDir::open(dir).map_err(
                |cause| Error::Io {
                    op: format!(
                        "open the stdio directory {} (it must be an existing directory)",
                        dir.display()
                    ),
                    cause,
                },
            )?)),
            None => None,
        };
        let available = cfg.root.controllers()?;
        let wanted: Vec<&str> = cfg
            .controllers
            .iter()
            .map(String::as_str)
            .filter(|c| available.iter().any(|a| a == c))
            .collect();
        cfg.root.enable_controllers(&wanted)?;
        let enabled = cfg.root.enabled_controllers()?;
        let pids_enabled = enabled.iter().any(|c| c == "pids");
        let memory_enabled = enabled.iter().any(|c| c == "memory");
        let (events, _) = broadcast::channel(cfg.event_capacity.max(1));
        let uids = cfg
            .dynamic_uids
            .map(|r| parking_lot::Mutex::new(crate::uids::UidAllocator::new(r)));
        let sup = Supervisor {
            inner: Arc::new(Inner {
                uids,
                cfg,
                logs,
                stdio_dir,
                stdio_slots: Arc::new(tokio::sync::Semaphore::new(crate::MAX_STDIO_OPENS)),
                pids_enabled: pids_enabled.into(),
                memory_enabled: memory_enabled.into(),
                registry: Registry::default(),
                events,
                counters: Default::default(),
                live: AtomicUsize::new(0),
                reserved: Default::default(),
                retention_wake: Arc::new(tokio::sync::Notify::new()),
                restarts: Default::default(),
                net: Default::default(),
            }),
        };
        sup.start_retention();
        Ok(sup)
    }

    /// The managed root.
    pub fn root(&self) -> &Root {
        &self.inner.cfg.root
    }

    /// The owner tag written on every cgroup this supervisor creates.
    pub fn owner(&self) -> &str {
        &self.inner.cfg.owner
    }

    /// Counters of what the supervisor did.
    pub fn counters(&self) -> &SupervisorCounters {
        &self.inner.counters
    }

    /// Subscribes to lifecycle events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Deletes the log file of a lifecycle (when the supervisor has a log directory; an
    /// absent file is fine). The file is emptied and recycled for a later sandbox's log
    /// (see [`crate::logs`]).
    pub fn delete_log(&self, id: &SandboxId, lifecycle: LifecycleId) {
        if let Some(logs) = &self.inner.logs {
            logs.remove(id.as_str(), lifecycle);
        }
    }

    /// The log file of a lifecycle, when the supervisor has a log directory (whether or not
    /// the sandbox logs to it).
    pub fn log_path(&self, id: &SandboxId, lifecycle: LifecycleId) -> Option<PathBuf> {
        self.inner
            .logs
            .as_ref()
            .map(|l| l.path(id.as_str(), lifecycle))
    }

    /// Forgets a sandbox whose current lifecycle is stopped or failed (the API's delete).
    /// Whichever lifecycle is current is forgotten: a caller that holds a lifecycle ID
    /// should use [`Supervisor::forget_lifecycle`], which cannot forget a newer one.
    pub fn forget(&self, id: &SandboxId) -> Result<(), Error> {
        self.forget_lifecycle(id, None)
    }

    /// Forgets the current lifecycle of `id` once it is stopped or failed; with
    /// `Some(lifecycle)`, only if that is the current lifecycle: a stale handle naming an
    /// older (or unknown) lifecycle gets [`Error::NotFound`] and changes nothing, so it can
    /// never evict a newer lifecycle of the same ID. A lifecycle that is not terminal is
    /// [`Error::InvalidState`]. The stop report of a forgotten lifecycle stays available to
    /// `stop`/`kill`/`wait_stopped` naming it (see [`crate::RECENT_REPORTS`]).
    pub fn forget_lifecycle(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<(), Error> {
        let lc = self.inner.registry.forget(id, lifecycle)?;
        // A forgotten sandbox is not restarted either (its record goes with it).
        self.cancel_restart_timer(id);
        // Hooks may do slow I/O (a durable store): never under the registry lock.
        self.inner.cfg.hooks.on_forget(id, lc);
        Ok(())
    }

    /// Freezes a running sandbox and waits for the freeze to complete.
    pub async fn pause(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<SandboxInfo, Error> {
        self.set_paused(id, lifecycle, true).await
    }

    /// Thaws a paused sandbox.
    pub async fn resume(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<SandboxInfo, Error> {
        self.set_paused(id, lifecycle, false).await
    }

    async fn set_paused(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
        pause: bool,
    ) -> Result<SandboxInfo, Error> {
        let sb = self.find(id, lifecycle)?;
        // In its own task, so a caller that gives up never leaves the cgroup frozen while
        // the sandbox says it is not paused (or the other way round).
        let sup = self.clone();
        let span = sb.span();
        tokio::spawn(async move { sup.set_paused_task(sb, pause).await }.instrument(span))
            .await
            .map_err(|e| Error::Io {
                op: "pause/resume task".into(),
                cause: std::io::Error::other(e.to_string()),
            })?
    }

    async fn set_paused_task(&self, sb: Arc<Sandbox>, pause: bool) -> Result<SandboxInfo, Error> {
        let op = if pause { "pause" } else { "resume" };
        let _op = sb.op.lock().await;
        let state = sb.state();
        if state != State::Running {
            return Err(Error::InvalidState {
                id: sb.id.clone(),
                state,
                op,
            });
        }
        let cg = self.open_cgroup(&sb)?;
        let ok = if pause {
            cg.freeze_wait(FREEZE_TIMEOUT).await?
        } else {
            cg.thaw_wait(FREEZE_TIMEOUT).await?
        };
        if !ok {
            if pause {
                let _ = cg.thaw();
            }
            return Err(Error::Timeout {
                id: sb.id.clone(),
                op,
                timeout_ms: FREEZE_TIMEOUT.as_millis() as u64,
            });
        }
        let t = if pause {
            Transition::Paused
        } else {
            Transition::Resumed
        };
        // Refused only if the main process's exit began a stop meanwhile (that stop does
        // not take the op lock): the sandbox is stopping now.
        self.enter(&sb, t).map_err(|e| Error::InvalidState {
            id: sb.id.clone(),
            state: e.from.state(),
            op,
        })?;
        Ok(self.info(&sb))
    }

    /// The pressure of all sandboxes together (the managed root's pressure files).
    pub fn pressure_all(&self) -> Result<crate::pressure::SandboxPressure, Error> {
        Ok(crate::pressure::SandboxPressure::read_root(
            &self.inner.cfg.root,
        )?)
    }

    /// Resource usage of a sandbox's cgroup. Works while paused.
    pub fn stats(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<SandboxStats, Error> {
        let sb = self.find(id, lifecycle)?;
        if sb.state().is_terminal() || sb.state() == State::Creating {
            return Err(Error::InvalidState {
                id: sb.id.clone(),
                state: sb.state(),
                op: "read stats",
            });
        }
        let cg = self.open_cgroup(&sb)?;
        let s = cg.stats()?;
        Ok(SandboxStats {
            cpu_usage_usec: s.cpu.map(|c| c.usage_usec),
            cpu_user_usec: s.cpu.map(|c| c.user_usec),
            cpu_system_usec: s.cpu.map(|c| c.system_usec),
            cpu_nr_throttled: s.cpu.and_then(|c| c.nr_throttled),
            memory_current: s.memory_current,
            memory_peak: s.memory_peak,
            memory_oom_kill: s.memory_events.map(|m| m.oom_kill),
            memory_high_events: s.memory_events.map(|m| m.high),
            memory_max_events: s.memory_events.map(|m| m.max),
            pids_current: s.pids_current,
            io_read_bytes: s.io.map(|i| i.rbytes),
            io_write_bytes: s.io.map(|i| i.wbytes),
            processes: cg.procs_recursive()?.len(),
            pressure: crate::pressure::SandboxPressure::read(&cg)?,
        })
    }

    /// The current lifecycle of `id`.
    pub fn get(&self, id: &SandboxId) -> Option<SandboxInfo> {
        let sb = self.find(id, None).ok()?;
        Some(self.info(&sb))
    }

    /// Whether the supervisor holds this lifecycle of `id` (current or retiring); cheaper
    /// than [`Supervisor::get_lifecycle`], which builds its info.
    pub fn holds(&self, id: &SandboxId, lc: LifecycleId) -> bool {
        self.find(id, Some(lc)).is_ok()
    }

    /// A specific lifecycle of `id`, current or retiring.
    pub fn get_lifecycle(&self, id: &SandboxId, lc: LifecycleId) -> Option<SandboxInfo> {
        let sb = self.find(id, Some(lc)).ok()?;
        Some(self.info(&sb))
    }

    /// Every known lifecycle: current ones and older ones still stopping or quarantined.
    pub fn list(&self) -> Vec<SandboxInfo> {
        let all = self.inner.registry.all();
        let mut v: Vec<SandboxInfo> = all.iter().map(|sb| self.info(sb)).collect();
        v.sort_by(|a, b| (a.id.as_str(), a.lifecycle).cmp(&(b.id.as_str(), b.lifecycle)));
        v
    }

    /// Waits until the lifecycle has stopped (or is quarantined or failed) and returns the
    /// stop's report (for a named lifecycle that already left the registry, its report from
    /// the last [`crate::RECENT_REPORTS`]).
    pub async fn wait_stopped(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<StopReport, Error> {
        let sb = match self.find(id, lifecycle) {
            Ok(sb) => sb,
            Err(e) => return self.recent_report(id, lifecycle).ok_or(e),
        };
        let rx = sb.outcome.subscribe();
        sb.await_outcome(rx).await
    }

    /// Waits for the main process of a lifecycle to exit and returns how it ended; `None`
    /// when the lifecycle is unknown or never had a main process.
    pub async fn wait_main_exit(&self, id: &SandboxId, lifecycle: LifecycleId) -> Option<MainExit> {
        let sb = self.find(id, Some(lifecycle)).ok()?;
        let main = sb.main.get()?.clone();
        Some(main.wait().await)
    }

    /// Every lifecycle's durable record, for a store that wants to re-sync.
    pub fn records(&self) -> Vec<Record> {
        self.inner
            .registry
            .all()
            .iter()
            .map(|sb| sb.record())
            .collect()
    }

    /// Opens a lifecycle's cgroup by its name, relative to the root's fd.
    pub(crate) fn open_cgroup(&self, sb: &Sandbox) -> Result<Cgroup, CgError> {
        self.inner.cfg.root.open(&sb.cgroup_name)
    }

    /// The report of a finished lifecycle that has left the registry, if it is among the
    /// last [`crate::RECENT_REPORTS`]. Only a named lifecycle is looked up: without one,
    /// the ID's current lifecycle is meant, and an ID no longer in the registry has none.
    pub(crate) fn recent_report(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Option<StopReport> {
        self.inner.registry.recent_report(id, lifecycle?)
    }

    pub(crate) fn find(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<Arc<Sandbox>, Error> {
        self.inner.registry.find(id, lifecycle)
    }

    pub(crate) fn info(&self, sb: &Sandbox) -> SandboxInfo {
        let current = self.inner.registry.is_current(sb);
        let (state, paused, stop_report, error) = sb.with_state(|s| {
            (
                s.state(),
                s.paused(),
                s.report().cloned(),
                s.error().map(str::to_owned),
            )
        });
        SandboxInfo {
            id: sb.id.clone(),
            lifecycle: sb.lifecycle,
            state,
            paused,
            current,
            pid: sb.main_pid(),
            cgroup_path: sb.cgroup_path.clone(),
            main_exit: sb.main_exit.get().copied(),
            stuck: stop_report
                .as_ref()
                .map(|r| r.stuck.clone())
                .unwrap_or_default(),
            stop_report,
            error,
            created_at_ms: sb.created_at_ms,
            spec: sb.spec_now(),
            jail: sb.jail.clone(),
            deadline_at_ms: sb.deadline_at_ms(),
            restart_count: sb.restart_count,
            restart_pending: *sb.restart_pending.lock(),
            network: sb.net.get().cloned(),
        }
    }
}
