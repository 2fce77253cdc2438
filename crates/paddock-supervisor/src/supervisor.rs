//! The registry and the lifecycle of each sandbox.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use paddock_cgroup::{
    Cgroup, CgroupName, CpuMax, Error as CgError, EventsWatch, KillMethod, KillOptions, Limit, Max,
    RemoveOptions, Root,
};
use paddock_proc::{Command, ForeignProcess, Namespaces, Process, Stdio};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::Error;
use crate::events::{
    Event, EventKind, KilledProcess, MAX_KILLED_LISTED, MainExit, StopReason, StopReport,
    StuckProcess, ms, now_ms,
};
use crate::logs::LogDir;
use crate::spec::{Network, OnMainExit, SandboxId, SandboxSpec, StdioTarget, StopPolicy};
use crate::state::{LifecycleId, State, Transition, cgroup_name, parse_cgroup_name, transition};
use crate::stdio::{self, MAX_STDIO_OPENS, StdioDir, StdioFiles};

/// Capacity of the event channel; a subscriber that falls further behind loses the oldest
/// events (and is told so by `broadcast::error::RecvError::Lagged`).
const EVENT_CAPACITY: usize = 4096;

/// How long pause and resume wait for the freezer.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop waits for the cgroup to freeze before sending the stop signal (see
/// [`paddock_cgroup::Cgroup::signal_all_frozen`]); past it, the signal is sent unfrozen.
const SIGNAL_FREEZE_TIMEOUT: Duration = Duration::from_millis(250);

/// How many finished lifecycles' stop reports the supervisor keeps after the lifecycles
/// themselves left the registry (an older lifecycle pruned when its stop finished, one
/// replaced by a restart of its ID, or one forgotten), so that a repeated `stop`, `kill` or
/// `wait_stopped` naming that lifecycle still returns its report. One supervisor-wide
/// list, oldest evicted first; past it such a call returns [`Error::NotFound`].
pub const RECENT_REPORTS: usize = 1024;

/// What [`Supervisor::start`] opens before it records or creates anything.
struct Prepared {
    /// The [`StdioTarget::File`] streams.
    files: StdioFiles,
    /// The named network namespace.
    netns: Option<OwnedFd>,
}

/// `nsfs`'s `f_type`.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Opens the named network namespace `/run/netns/<name>`: a missing one, or a file there
/// that is no namespace, is [`Error::InvalidSpec`] naming the field.
fn open_netns(name: &str) -> Result<OwnedFd, Error> {
    let path = format!("/run/netns/{name}");
    let fd = paddock_proc::netns_fd(name).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            Error::InvalidSpec(format!(
                "network: no network namespace named {name:?} ({path} does not exist; create it with `ip netns add {name}`)"
            ))
        } else {
            Error::Io {
                op: format!("open network namespace {path}"),
                cause,
            }
        }
    })?;
    let fs = rustix::fs::fstatfs(&fd).map_err(|e| Error::Io {
        op: format!("fstatfs {path}"),
        cause: e.into(),
    })?;
    if fs.f_type as u64 != NSFS_MAGIC {
        return Err(Error::InvalidSpec(format!(
            "network: {path} is not a namespace (expected a file bind-mounted by `ip netns add {name}`)"
        )));
    }
    Ok(fd)
}

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
    /// [`Error::Journal`].
    fn before_create(&self, _rec: &Record) -> Persisting {
        persisted()
    }
    /// Called after every state change (and when the main PID becomes known). `start`
    /// waits for the write of the record of the sandbox it has just started before it
    /// returns, so a started sandbox is on record: if that write fails, the sandbox is
    /// killed and the start fails with [`Error::Journal`]. The other writes are not waited
    /// for, and dropping them must not cancel them.
    fn on_change(&self, _rec: &Record) -> Persisting {
        persisted()
    }
    /// Called for every event, synchronously, before it is broadcast.
    fn on_event(&self, _ev: &Event) {}
    /// Called when a terminal sandbox is forgotten.
    fn on_forget(&self, _id: &SandboxId, _lc: LifecycleId) {}
    /// Called synchronously by a stop after it set `pids.max = 0` (where the pids
    /// controller is enabled) and right before its kill: when processes outlived the grace
    /// period, or at once for a `kill` (whose cgroup may then already be empty). For metrics
    /// and tests: it runs on the stop's path, so it must return quickly.
    fn before_kill(&self, _id: &SandboxId, _lc: LifecycleId) {}
}

/// A record write handed to a store by a [`Hooks`] method: resolves once the store has
/// committed it (durably, where the store makes that record durable) or failed to.
/// Dropping it must not cancel the write.
pub type Persisting = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;

/// A [`Persisting`] that is already done (for hooks that keep nothing).
pub fn persisted() -> Persisting {
    Box::pin(std::future::ready(Ok(())))
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
}

/// Supervisor configuration.
pub struct Config {
    /// The managed root every sandbox cgroup is created under.
    pub root: Root,
    /// The value of the `user.paddock.owner` tag on every cgroup this supervisor creates.
    pub owner: String,
    /// Directory of the sandboxes' log files ([`StdioTarget::Log`]).
    pub log_dir: Option<PathBuf>,
    /// When set, every [`StdioTarget::File`] must be beneath this directory (absolute and
    /// under it, or relative to it); it is resolved with `openat2(RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`. When `None`, file targets must be
    /// absolute paths. Either way only regular files are opened, never through a symbolic
    /// link as the last component (default `None`).
    pub stdio_dir: Option<PathBuf>,
    /// Become a child subreaper so orphans of sandboxes are reaped here (default true).
    pub subreaper: bool,
    /// Use the freeze-and-signal kill even where `cgroup.kill` works (tests).
    pub force_kill_fallback: bool,
    /// Deadline for removing a cgroup (default 2 s).
    pub remove_timeout: Duration,
    /// How often a quarantined sandbox's kill is repeated while it is watched (default 1 s).
    pub quarantine_recheck: Duration,
    /// Store and metrics hooks.
    pub hooks: Arc<dyn Hooks>,
    /// Controllers to enable on the root for every sandbox where the root's parent offers
    /// them (the root's `cgroup.controllers`); one not offered is skipped silently and its
    /// statistics are reported absent (`None`). Default: `pids` (so a stop can set
    /// `pids.max = 0` against fork storms), `memory`, `cpu` and `io` (so
    /// [`Supervisor::stats`] reports memory, CPU throttling and I/O for every sandbox, not
    /// only those with a limit). Limits in a spec enable their own controllers on first use.
    pub controllers: Vec<String>,
}

/// The controllers [`Config::new`] asks for.
pub const DEFAULT_CONTROLLERS: [&str; 4] = ["pids", "memory", "cpu", "io"];

impl Config {
    /// Defaults around a root.
    pub fn new(root: Root) -> Self {
        Config {
            root,
            owner: "paddock".into(),
            log_dir: None,
            stdio_dir: None,
            subreaper: true,
            force_kill_fallback: false,
            remove_timeout: Duration::from_secs(2),
            quarantine_recheck: Duration::from_secs(1),
            hooks: Arc::new(NoHooks),
            controllers: DEFAULT_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("root", &self.root.path())
            .field("owner", &self.owner)
            .field("log_dir", &self.log_dir)
            .field("stdio_dir", &self.stdio_dir)
            .finish_non_exhaustive()
    }
}

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
}

/// Resource usage of a sandbox. `None` means the controller is not available, not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A started sandbox, with the parent ends of any [`StdioTarget::Pipe`] streams.
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
    /// Processes killed because they outlived the grace period.
    pub killed_after_grace: AtomicU64,
    /// Quarantined sandboxes whose processes finally went and whose cgroup was removed.
    pub quarantines_drained: AtomicU64,
    /// Lifecycles adopted from a previous supervisor process.
    pub adopted: AtomicU64,
    /// Owned cgroups without a lifecycle that reconciliation killed and removed.
    pub reclaimed: AtomicU64,
}

struct Life {
    state: State,
    paused: bool,
    main_pid: Option<i32>,
    main_start_time: Option<u64>,
    main_exit: Option<MainExit>,
    report: Option<StopReport>,
    stuck: Vec<StuckProcess>,
    error: Option<String>,
    stop_reason: Option<StopReason>,
}

/// One lifecycle of one sandbox.
struct Sandbox {
    id: SandboxId,
    lifecycle: LifecycleId,
    spec: SandboxSpec,
    created_at_ms: u64,
    cgroup_path: PathBuf,
    /// The cgroup's name under the root. No directory fd is held between operations (a
    /// node with 10 000 sandboxes would otherwise hold 10 000 more fds); each operation
    /// opens the cgroup by this validated name, relative to the root's fd.
    cgroup_name: CgroupName,
    main: OnceLock<Main>,
    life: Mutex<Life>,
    /// Serialises start, stop (its beginning), pause and resume of this lifecycle.
    op: tokio::sync::Mutex<()>,
    /// The stop's outcome: `Some` once stopped, quarantined or failed.
    outcome: watch::Sender<Option<StopReport>>,
    /// Cuts a running grace period short (a kill arriving during a graceful stop).
    escalate: Notify,
}

/// The main process: our child, or one adopted from a previous supervisor process.
#[derive(Clone)]
enum Main {
    Child(Arc<Process>),
    Adopted(Arc<ForeignProcess>),
}

impl Main {
    async fn wait(&self) -> MainExit {
        match self {
            Main::Child(p) => MainExit::from(p.wait().await),
            Main::Adopted(p) => {
                let _ = p.exited().await;
                MainExit::UNKNOWN
            }
        }
    }
}

/// How long a finished stop waits for its main process's exit status (which the reaper
/// delivers once the cgroup is empty) before it publishes its outcome without it.
const MAIN_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Outcome of [`Supervisor::adopt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Adopted {
    /// The sandbox runs on and is controllable again.
    Running(SandboxInfo),
    /// A stop that had not finished (or a main process that had exited) is being finished.
    Stopping(SandboxInfo),
    /// Its processes could not be killed; it is quarantined and watched.
    Quarantined(SandboxInfo),
    /// Its cgroup no longer exists (or held nothing worth keeping and was removed): there
    /// is nothing to adopt, and the record can be dropped.
    Gone {
        /// The sandbox.
        id: SandboxId,
        /// The lifecycle.
        lifecycle: LifecycleId,
    },
}

/// What [`Supervisor::reclaim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimReport {
    /// Cgroups carrying this supervisor's owner tag but no lifecycle, killed and removed.
    pub reclaimed: Vec<String>,
    /// Processes killed in them.
    pub processes_killed: usize,
    /// Cgroups under the root without this supervisor's tag: reported, left alone.
    pub untagged: Vec<String>,
    /// Cgroups that could not be reclaimed, with the error.
    pub failed: Vec<(String, String)>,
}

struct Slot {
    current: Arc<Sandbox>,
    retiring: Vec<Arc<Sandbox>>,
}

/// The last [`RECENT_REPORTS`] stop reports, by lifecycle, oldest evicted first.
#[derive(Default)]
struct RecentReports {
    order: VecDeque<(SandboxId, LifecycleId)>,
    reports: HashMap<(SandboxId, LifecycleId), StopReport>,
}

impl RecentReports {
    fn insert(&mut self, id: &SandboxId, lc: LifecycleId, report: &StopReport) {
        let key = (id.clone(), lc);
        if self.reports.insert(key.clone(), report.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_REPORTS {
            if let Some(old) = self.order.pop_front() {
                self.reports.remove(&old);
            }
        }
    }

    fn get(&self, id: &SandboxId, lc: LifecycleId) -> Option<StopReport> {
        self.reports.get(&(id.clone(), lc)).cloned()
    }
}

struct Inner {
    cfg: Config,
    /// The log files, when `cfg.log_dir` is set.
    logs: Option<LogDir>,
    /// `cfg.stdio_dir`, opened.
    stdio_dir: Option<Arc<StdioDir>>,
    /// Slots for opening stdio files on blocking threads ([`MAX_STDIO_OPENS`]).
    stdio_slots: Arc<tokio::sync::Semaphore>,
    /// Whether the root hands the pids controller to sandboxes (so `pids.max` exists).
    pids_enabled: std::sync::atomic::AtomicBool,
    /// Whether the root hands the memory controller to sandboxes (so `memory.peak` can
    /// exist).
    memory_enabled: std::sync::atomic::AtomicBool,
    registry: Mutex<HashMap<SandboxId, Slot>>,
    /// Reports of finished lifecycles, kept after they leave the registry (see
    /// [`RECENT_REPORTS`]).
    recent: Mutex<RecentReports>,
    events: broadcast::Sender<Event>,
    counters: SupervisorCounters,
}

/// The supervisor. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
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
            Some(dir) => Some(LogDir::open(dir).map_err(|cause| Error::Io {
                op: format!("open log directory {}", dir.display()),
                cause,
            })?),
            None => None,
        };
        let stdio_dir = match &cfg.stdio_dir {
            Some(dir) => Some(Arc::new(StdioDir::open(dir).map_err(|cause| {
                Error::Io {
                    op: format!(
                        "open the stdio directory {} (it must be an existing directory)",
                        dir.display()
                    ),
                    cause,
                }
            })?)),
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
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Supervisor {
            inner: Arc::new(Inner {
                cfg,
                logs,
                stdio_dir,
                stdio_slots: Arc::new(tokio::sync::Semaphore::new(MAX_STDIO_OPENS)),
                pids_enabled: pids_enabled.into(),
                memory_enabled: memory_enabled.into(),
                registry: Mutex::new(HashMap::new()),
                recent: Mutex::new(RecentReports::default()),
                events,
                counters: Default::default(),
            }),
        })
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

    /// Starts a sandbox. Refused with [`Error::AlreadyExists`] (starting nothing) while a
    /// lifecycle of the same ID is creating or running; allowed while an older lifecycle
    /// is still stopping, which then finishes on its own. If the cgroup cannot be created
    /// or the spawn fails, nothing is left behind and the error says why.
    ///
    /// What the spec names outside the supervisor is checked first, before anything is
    /// recorded or created: [`StdioTarget::File`] targets are opened (on a blocking thread,
    /// regular files only; see [`Config::stdio_dir`]) and a named network namespace must
    /// exist. A target or namespace that is not acceptable is [`Error::InvalidSpec`] naming
    /// the field; an open that hangs is [`Error::Unavailable`] after
    /// [`crate::STDIO_OPEN_TIMEOUT`].
    pub async fn start(&self, spec: SandboxSpec) -> Result<Started, Error> {
        spec.validate()?;
        // Cheap early refusal of a duplicate (checked again atomically below), so a
        // duplicate does not create its stdio files first.
        if self
            .inner
            .registry
            .lock()
            .unwrap()
            .get(&spec.id)
            .is_some_and(|slot| slot.current.state().holds_id())
        {
            self.inner.counters.starts_conflict.fetch_add(1, Relaxed);
            return Err(Error::AlreadyExists(spec.id.clone()));
        }
        let prepared = self.prepare(&spec).await?;
        let lifecycle = LifecycleId::fresh();
        let name = CgroupName::new(cgroup_name(spec.id.as_str(), lifecycle))?;
        let cgroup_path = self.inner.cfg.root.child_path(&name);
        let sb = Arc::new(Sandbox {
            id: spec.id.clone(),
            lifecycle,
            created_at_ms: now_ms(),
            spec,
            cgroup_path,
            cgroup_name: name.clone(),
            main: OnceLock::new(),
            life: Mutex::new(Life {
                state: State::Creating,
                paused: false,
                main_pid: None,
                main_start_time: None,
                main_exit: None,
                report: None,
                stuck: Vec::new(),
                error: None,
                stop_reason: None,
            }),
            op: tokio::sync::Mutex::new(()),
            outcome: watch::channel(None).0,
            escalate: Notify::new(),
        });
        // Hold the op lock from before the sandbox is visible, so a stop that finds it
        // waits for the start to finish.
        let op = sb.op.try_lock().expect("fresh mutex");
        {
            let mut reg = self.inner.registry.lock().unwrap();
            match reg.get_mut(&sb.id) {
                Some(slot) if slot.current.state().holds_id() => {
                    self.inner.counters.starts_conflict.fetch_add(1, Relaxed);
                    return Err(Error::AlreadyExists(sb.id.clone()));
                }
                Some(slot) => {
                    let old = std::mem::replace(&mut slot.current, sb.clone());
                    if !old.state().is_terminal() {
                        slot.retiring.push(old);
                    }
                }
                None => {
                    reg.insert(
                        sb.id.clone(),
                        Slot {
                            current: sb.clone(),
                            retiring: Vec::new(),
                        },
                    );
                }
            }
        }
        // Until the spawn's outcome is known, a caller that drops this future must not leave
        // the lifecycle in `creating` (holding the ID) or its cgroup behind: the guard
        // finishes the start as failed if it is dropped armed.
        let mut guard = StartGuard {
            sup: Some(self.clone()),
            sb: sb.clone(),
        };
        let spawned = self
            .create_and_spawn(&sb, prepared)
            .instrument(sb.span())
            .await;
        guard.disarm();
        match spawned {
            Ok(mut process) => {
                let pid = process.pid();
                let (stdin, stdout, stderr) = (
                    process.take_stdin(),
                    process.take_stdout(),
                    process.take_stderr(),
                );
                let start_time = paddock_cgroup::procinfo::start_time(pid);
                let process = Arc::new(process);
                let _ = sb.main.set(Main::Child(process.clone()));
                {
                    let mut l = sb.life.lock().unwrap();
                    l.main_pid = Some(pid);
                    l.main_start_time = start_time;
                }
                let recorded = self.apply_persisting(&sb, Transition::Started);
                self.inner.counters.starts_ok.fetch_add(1, Relaxed);
                self.emit(&sb, EventKind::Started { pid });
                tracing::info!(sandbox = %sb.id, lifecycle = %sb.lifecycle, pid, "sandbox started");
                drop(op);
                self.spawn_monitor(sb.clone(), Main::Child(process));
                if let Some(recorded) = recorded
                    && let Err(reason) = recorded.await
                {
                    // A sandbox that is not on record would be unknown to a restarted
                    // supervisor: do not leave it running.
                    tracing::error!(sandbox = %sb.id, lifecycle = %sb.lifecycle, error = %reason, "the started sandbox could not be recorded: killing it");
                    match self.kill(&sb.id, Some(sb.lifecycle)).await {
                        Ok(r) if r.stuck.is_empty() && r.error.is_none() => {
                            self.forget_unstarted(&sb)
                        }
                        // Quarantined or failed: it stays listed, and visible.
                        _ => {}
                    }
                    return Err(Error::Journal {
                        id: sb.id.clone(),
                        reason,
                    });
                }
                Ok(Started {
                    info: self.info(&sb),
                    stdin,
                    stdout,
                    stderr,
                })
            }
            Err(e) => {
                self.fail_start(&sb, &e.to_string());
                drop(op);
                Err(e)
            }
        }
    }

    /// Ends a start that did not get its process running: `failed`, out of the registry,
    /// its (empty) log deleted.
    fn fail_start(&self, sb: &Arc<Sandbox>, error: &str) {
        {
            let mut l = sb.life.lock().unwrap();
            l.error = Some(error.to_owned());
        }
        self.apply(sb, Transition::StartFailed);
        self.inner.counters.starts_failed.fetch_add(1, Relaxed);
        self.emit(
            sb,
            EventKind::StartFailed {
                error: error.to_owned(),
            },
        );
        tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, error, "sandbox start failed");
        self.forget_unstarted(sb);
        // Nothing ran: a log file made for it has nothing worth keeping.
        self.delete_log(&sb.id, sb.lifecycle);
    }

    /// A start whose future was dropped before its spawn's outcome was known: fail it now,
    /// and remove its cgroup if it got one (in a task of the current runtime; the cgroup
    /// holds no process — the spawn had not returned one — but is removed through the full
    /// path, which kills whatever might be there).
    fn abandon_start(&self, sb: &Arc<Sandbox>) {
        self.fail_start(sb, "start cancelled: the caller stopped waiting for it");
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, "start cancelled outside a tokio runtime: its cgroup, if any, is left to reclaim");
            return;
        };
        let sup = self.clone();
        let sb = sb.clone();
        let span = sb.span();
        rt.spawn(
            async move {
                let cg = match sup.inner.cfg.root.open(&sb.cgroup_name) {
                    Ok(cg) => cg,
                    Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "could not open the cgroup of a cancelled start");
                        return;
                    }
                };
                let opts = RemoveOptions {
                    timeout: sup.inner.cfg.remove_timeout,
                    sandbox: Some(sb.id.to_string()),
                    ..Default::default()
                };
                if let Err(e) = cg.remove(&opts).await {
                    tracing::error!(error = %e, "could not remove the cgroup of a cancelled start");
                }
            }
            .instrument(span),
        );
    }

    /// Opens what the spec names outside the supervisor (see [`Supervisor::start`]).
    async fn prepare(&self, spec: &SandboxSpec) -> Result<Prepared, Error> {
        let files =
            stdio::open_files(spec, self.inner.stdio_dir.clone(), &self.inner.stdio_slots).await?;
        let netns = match &spec.network {
            // `/run/netns` is a tmpfs of bind-mounted nsfs files: the open does not block.
            Network::Named(n) => Some(open_netns(n)?),
            Network::Host | Network::Isolated => None,
        };
        Ok(Prepared { files, netns })
    }

    async fn create_and_spawn(
        &self,
        sb: &Arc<Sandbox>,
        prepared: Prepared,
    ) -> Result<Process, Error> {
        let cfg = &self.inner.cfg;
        if cfg.hooks.wants_records() {
            cfg.hooks
                .before_create(&sb.record())
                .await
                .map_err(|reason| Error::Journal {
                    id: sb.id.clone(),
                    reason,
                })?;
        }
        let needed = sb.spec.limits.controllers();
        if !needed.is_empty() {
            // Idempotent; fails with a clear error naming a controller the hierarchy lacks.
            cfg.root.enable_controllers(&needed)?;
            if needed.contains(&"pids") {
                self.inner.pids_enabled.store(true, Relaxed);
            }
            if needed.contains(&"memory") {
                self.inner.memory_enabled.store(true, Relaxed);
            }
        }
        let cg = cfg.root.create(&sb.cgroup_name)?;
        let res = self.prepare_and_spawn(sb, &cg, prepared);
        if res.is_err() {
            // Nothing may be left behind: the spawn failed, so the cgroup is empty, but
            // remove through the full path anyway (it kills whatever might be there).
            let opts = RemoveOptions {
                timeout: cfg.remove_timeout,
                sandbox: Some(sb.id.to_string()),
                ..Default::default()
            };
            if let Err(e) = cg.remove(&opts).await {
                tracing::error!(sandbox = %sb.id, error = %e, "could not remove the cgroup of a failed start");
            }
        }
        res
    }

    fn prepare_and_spawn(
        &self,
        sb: &Sandbox,
        cg: &Cgroup,
        mut prepared: Prepared,
    ) -> Result<Process, Error> {
        let cfg = &self.inner.cfg;
        cg.set_owner(&cfg.owner)?;
        let l = &sb.spec.limits;
        let mut limits = Vec::new();
        if let Some(v) = l.max_descendants {
            limits.push(Limit::MaxDescendants(Max::Value(v)));
        }
        if let Some(v) = l.max_depth {
            limits.push(Limit::MaxDepth(Max::Value(v)));
        }
        if let Some(v) = l.memory_max {
            limits.push(Limit::MemoryMax(Max::Value(v)));
        }
        if let Some(v) = l.memory_high {
            limits.push(Limit::MemoryHigh(Max::Value(v)));
        }
        if let Some(c) = l.cpus {
            limits.push(Limit::CpuMax(CpuMax::from_cpus(c)?));
        }
        if let Some(w) = l.cpu_weight {
            limits.push(Limit::CpuWeight(w));
        }
        if let Some(p) = l.pids_max {
            limits.push(Limit::PidsMax(Max::Value(p)));
        }
        for lim in limits {
            cg.set_limit(lim)?;
        }
        let spec = &sb.spec;
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args);
        if spec.clear_env {
            cmd.env_clear();
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &spec.cwd {
            cmd.cwd(cwd);
        }
        cmd.env("PADDOCK_SANDBOX_ID", sb.id.as_str());
        cmd.env("PADDOCK_LIFECYCLE_ID", sb.lifecycle.to_string());
        let log = |op: &str| -> Result<std::fs::File, Error> {
            let Some(logs) = &self.inner.logs else {
                return Err(Error::InvalidSpec(format!(
                    "{op}: stdio `log` needs a log directory"
                )));
            };
            logs.create(sb.id.as_str(), sb.lifecycle)
                .map_err(|cause| Error::Io {
                    op: format!(
                        "open log file {}",
                        logs.path(sb.id.as_str(), sb.lifecycle).display()
                    ),
                    cause,
                })
        };
        // stdout and stderr to the log share one open file (the first user keeps a
        // duplicate for the next).
        let mut log_file: Option<std::fs::File> = None;
        let dup = |f: &std::fs::File| {
            f.try_clone().map_err(|cause| Error::Io {
                op: "duplicate the log file descriptor".into(),
                cause,
            })
        };
        for (fd, target) in [
            (0, &spec.stdio.stdin),
            (1, &spec.stdio.stdout),
            (2, &spec.stdio.stderr),
        ] {
            let s = match target {
                StdioTarget::Inherit => Stdio::Inherit,
                StdioTarget::Null => Stdio::Null,
                StdioTarget::Pipe => Stdio::Pipe,
                StdioTarget::Log => {
                    let f = match log_file.take() {
                        Some(f) => f,
                        None => {
                            let f = log("log")?;
                            log_file = Some(dup(&f)?);
                            f
                        }
                    };
                    Stdio::from(f)
                }
                StdioTarget::File(p) => {
                    // Opened by `prepare`, before anything was created.
                    let f = prepared.files.0[fd as usize]
                        .take()
                        .ok_or_else(|| Error::Io {
                            op: format!("open {}", p.display()),
                            cause: std::io::Error::other("the file was not opened in advance"),
                        })?;
                    Stdio::from(f)
                }
            };
            cmd.fd(fd, s);
        }
        match &spec.network {
            Network::Host => {}
            Network::Isolated => {
                cmd.unshare(Namespaces::NET);
            }
            Network::Named(n) => {
                let fd = match prepared.netns.take() {
                    Some(fd) => fd,
                    None => open_netns(n)?,
                };
                cmd.join_namespace(fd);
            }
        }
        cmd.spawn_in(cg.dir_fd()).map_err(|cause| Error::Spawn {
            command: spec.command.clone(),
            cause,
        })
    }

    fn spawn_monitor(&self, sb: Arc<Sandbox>, main: Main) {
        let sup = self.clone();
        let span = sb.span();
        tokio::spawn(
            async move {
            let exit = main.wait().await;
            sb.life.lock().unwrap().main_exit = Some(exit);
            sup.emit(&sb, EventKind::MainExited { status: exit });
            tracing::info!(sandbox = %sb.id, lifecycle = %sb.lifecycle, code = ?exit.code, signal = ?exit.signal, "main process exited");
            if sb.spec.on_main_exit == OnMainExit::Stop {
                let _ = sup.begin_stop(&sb, StopReason::MainExited, sb.spec.stop);
            }
        }
            .instrument(span),
        );
    }

    /// Stops the sandbox `id` (its current lifecycle, or exactly `lifecycle` when given) by
    /// its spec's stop policy and returns the stop's report. Concurrent stop and kill calls
    /// all wait for the same outcome; stopping a stopped sandbox returns its report, also
    /// after that lifecycle left the registry (one of the last [`RECENT_REPORTS`]).
    pub async fn stop(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<StopReport, Error> {
        self.stop_inner(id, lifecycle, None, StopReason::Requested)
            .await
    }

    /// Like [`Supervisor::stop`] with the grace period replaced by `grace`.
    pub async fn stop_with_grace(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
        grace: Duration,
    ) -> Result<StopReport, Error> {
        self.stop_inner(id, lifecycle, Some(grace), StopReason::Requested)
            .await
    }

    /// Kills the sandbox: the stop without a grace period. If a graceful stop is already
    /// running, its grace period is cut short and both wait for the same outcome.
    pub async fn kill(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<StopReport, Error> {
        self.stop_inner(id, lifecycle, Some(Duration::ZERO), StopReason::Killed)
            .await
    }

    async fn stop_inner(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
        grace: Option<Duration>,
        reason: StopReason,
    ) -> Result<StopReport, Error> {
        let sb = match self.find(id, lifecycle) {
            Ok(sb) => sb,
            Err(e) => return self.recent_report(id, lifecycle).ok_or(e),
        };
        let rx = {
            let _op = sb.op.lock().await;
            let mut policy = sb.spec.stop;
            if let Some(g) = grace {
                policy.grace_period_ms = g.as_millis() as u64;
            }
            // A graceful stop can take long: record it before it is visible or acts, so a
            // supervisor restarted meanwhile finishes it (a kill is over in milliseconds
            // and is not delayed by a write).
            let hooks = &self.inner.cfg.hooks;
            if policy.grace_period_ms > 0 && hooks.wants_records() && sb.state() == State::Running {
                let mut rec = sb.record();
                rec.state = State::Stopping;
                rec.stop_reason = Some(reason);
                if let Err(e) = hooks.on_change(&rec).await {
                    tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, error = %e, "the stop could not be recorded; stopping anyway");
                }
            }
            match self.begin_stop(&sb, reason, policy) {
                Some(rx) => rx,
                None => {
                    let l = sb.life.lock().unwrap();
                    return match (&l.report, l.state) {
                        (Some(r), _) => Ok(r.clone()),
                        (None, state) => Err(Error::InvalidState {
                            id: sb.id.clone(),
                            state,
                            op: "stop",
                        }),
                    };
                }
            }
        };
        sb.await_outcome(rx).await
    }

    /// Starts the stop sequence if the sandbox is running; escalates a running graceful stop
    /// when `policy` has no grace. Returns `None` when the sandbox never ran (failed start).
    fn begin_stop(
        &self,
        sb: &Arc<Sandbox>,
        reason: StopReason,
        policy: StopPolicy,
    ) -> Option<watch::Receiver<Option<StopReport>>> {
        let mut l = sb.life.lock().unwrap();
        match l.state {
            State::Running => {
                l.state = transition(l.state, Transition::StopBegun).expect("running → stopping");
                l.stop_reason = Some(reason);
                drop(l);
                self.changed(sb);
                let sup = self.clone();
                let sb2 = sb.clone();
                let span = sb.span();
                tokio::spawn(
                    async move { sup.run_stop(sb2, reason, policy).await }.instrument(span),
                );
            }
            State::Stopping | State::Quarantined => {
                if policy.grace_period_ms == 0 {
                    sb.escalate.notify_one();
                }
            }
            State::Stopped => {}
            State::Creating | State::Failed => {
                // A failed start never ran a stop: there is no outcome to wait for.
                l.report.as_ref()?;
            }
        }
        Some(sb.outcome.subscribe())
    }

    /// The stop sequence. Runs in its own task, so a caller that gives up waiting never
    /// leaves a stop half done.
    async fn run_stop(&self, sb: Arc<Sandbox>, reason: StopReason, policy: StopPolicy) {
        let t0 = Instant::now();
        self.emit(&sb, EventKind::Stopping { reason });
        tracing::info!(sandbox = %sb.id, lifecycle = %sb.lifecycle, ?reason, "stopping sandbox");
        let mut report = StopReport {
            reason,
            signalled: 0,
            signal_ms: 0.0,
            grace_ms: 0.0,
            killed_after_grace: 0,
            kill_ms: 0.0,
            remove_ms: 0.0,
            rmdir_fallback: false,
            pids_frozen: false,
            total_ms: 0.0,
            cpu_usage_usec: None,
            memory_peak: None,
            oom_kills: None,
            killed: Vec::new(),
            stuck: Vec::new(),
            error: None,
        };
        let cg = match self.open_cgroup(&sb) {
            Ok(cg) => Arc::new(cg),
            Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {
                tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, "cgroup already gone when the stop began");
                report.total_ms = ms(t0.elapsed());
                self.finish_stopped(&sb, report, Transition::Removed);
                return;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                report.total_ms = ms(t0.elapsed());
                self.finish_failed(&sb, report, e.to_string());
                return;
            }
        };
        // The stop's `cgroup.events` watch, kept until the outcome is out (closing it is
        // not worth a wait).
        let mut watch = None;
        match self
            .stop_phases(&sb, &cg, policy, &mut report, &mut watch)
            .await
        {
            Ok(had_processes) => {
                // The cgroup is empty, so the main process has exited: have its exit on
                // the sandbox before the outcome is out (the monitor records it too,
                // whichever comes first). Bounded, for a main process that left the cgroup.
                if let Some(main) = sb.main.get()
                    && sb.life.lock().unwrap().main_exit.is_none()
                    && let Ok(exit) = tokio::time::timeout(MAIN_EXIT_WAIT, main.wait()).await
                {
                    sb.life.lock().unwrap().main_exit.get_or_insert(exit);
                }
                report.total_ms = ms(t0.elapsed());
                self.finish_stopped(&sb, report, Transition::Removed);
                if had_processes && self.inner.cfg.subreaper {
                    // Processes that left the main's tree were reparented here and, now
                    // dead, are zombies until reaped: have the reaper sweep for them now
                    // rather than at its next periodic sweep. Asked after the outcome is
                    // out, and not waited for: a zombie runs nothing and holds no cgroup.
                    paddock_proc::request_orphan_sweep();
                }
            }
            Err(CgError::KillTimeout { remaining, .. }) => {
                report.stuck = remaining.iter().map(StuckProcess::from).collect();
                report.total_ms = ms(t0.elapsed());
                self.quarantine(sb, cg, report).await;
            }
            Err(e) if !cg.path().exists() => {
                // The cgroup vanished under the stop (removed by someone else): it is gone,
                // which is what the stop was for.
                tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, error = %e, "cgroup vanished during the stop");
                report.total_ms = ms(t0.elapsed());
                self.finish_stopped(&sb, report, Transition::Removed);
            }
            Err(e) => {
                report.error = Some(e.to_string());
                report.total_ms = ms(t0.elapsed());
                self.finish_failed(&sb, report, e.to_string());
            }
        }
    }

    async fn stop_phases(
        &self,
        sb: &Sandbox,
        cg: &Cgroup,
        policy: StopPolicy,
        report: &mut StopReport,
        watch: &mut Option<EventsWatch>,
    ) -> Result<bool, CgError> {
        // Usually (the main process exited and took its tree with it) the cgroup is empty
        // already: then there is nothing to signal, wait for or kill.
        let watch: &EventsWatch = watch.insert(cg.watch()?);
        let grace = policy.grace();
        // A kill finds out from the process list it reads anyway, which spares it a read.
        let populated = grace.is_zero() || watch.read()?.populated;
        let mut had_processes = false;
        if populated {
            // 1. The stop signal and SIGCONT to every process in the cgroup, by pidfd, with
            //    the cgroup frozen meanwhile so a process forking at that instant cannot
            //    add a child that misses the signal. A paused sandbox is thawed by it.
            if !grace.is_zero() {
                let sig = Signal::from_named_raw(policy.signal).unwrap_or(Signal::TERM);
                let s0 = Instant::now();
                let mut sent = cg.signal_all_frozen(sig, SIGNAL_FREEZE_TIMEOUT).await?;
                let sr = sent.report();
                if !sr.exact {
                    tracing::warn!(
                        sandbox = %sb.id, lifecycle = %sb.lifecycle,
                        timeout_ms = SIGNAL_FREEZE_TIMEOUT.as_millis() as u64,
                        "the cgroup did not freeze for the stop signal (a process in uninterruptible sleep?); signalled without the freeze, so a child forked meanwhile may only get the kill after the grace period"
                    );
                }
                report.signalled = sr.delivered;
                had_processes = true;
                report.signal_ms = ms(s0.elapsed());
                // 2. The grace period, event-driven; a kill arriving now cuts it short.
                let g0 = Instant::now();
                //    Children forked after the thaw by a process that had the signal
                //    blocked get it too (`wait_signalled` follows it up).
                tokio::select! {
                    r = cg.wait_signalled(watch, &mut sent, grace) => { r?; }
                    _ = sb.escalate.notified() => {}
                }
                report.signalled = sent.report().delivered;
                report.grace_ms = ms(g0.elapsed());
            }
            // 3. pids.max = 0 where the controller exists, then the verified kill (after a
            //    grace period, only if something is left).
            if grace.is_zero() || watch.read()?.populated {
                let k0 = Instant::now();
                report.pids_frozen = self.freeze_pids(cg);
                self.inner.cfg.hooks.before_kill(&sb.id, sb.lifecycle);
                // The kill names who it found (from the process list it reads anyway,
                // while `/proc` still has them; pids.max = 0 keeps the list from growing).
                let opts = KillOptions {
                    timeout: policy.kill_timeout(),
                    force_fallback: self.inner.cfg.force_kill_fallback,
                    name_first: MAX_KILLED_LISTED,
                };
                let kr = cg.kill_watched(watch, &opts).await?;
                had_processes |= kr.method != KillMethod::NothingToKill;
                report.killed_after_grace = kr.found;
                report.killed = kr
                    .named
                    .into_iter()
                    .map(|k| KilledProcess {
                        pid: k.pid,
                        comm: k.comm,
                    })
                    .collect();
                report.kill_ms = ms(k0.elapsed());
                if kr.found > 0 {
                    self.inner
                        .counters
                        .killed_after_grace
                        .fetch_add(kr.found as u64, Relaxed);
                    let names: Vec<String> = report
                        .killed
                        .iter()
                        .map(|k| format!("{} ({})", k.pid, k.comm.as_deref().unwrap_or("?")))
                        .collect();
                    tracing::warn!(
                        sandbox = %sb.id, lifecycle = %sb.lifecycle, count = kr.found,
                        killed = %names.join(", "),
                        "killed processes that outlived the grace period"
                    );
                    self.emit(sb, EventKind::LeakedProcessesKilled { count: kr.found });
                }
            }
        }
        // Final accounting, while the cgroup still exists.
        let memory = self.inner.memory_enabled.load(Relaxed);
        if let Ok((cpu, peak)) = cg.usage_summary(memory) {
            report.cpu_usage_usec = cpu;
            report.memory_peak = peak;
        }
        if memory {
            report.oom_kills = oom_kills(cg);
        }
        // 4. Removal, with the EBUSY backstop of the cgroup layer.
        let r0 = Instant::now();
        let opts = RemoveOptions {
            timeout: self.inner.cfg.remove_timeout.max(policy.kill_timeout()),
            force_kill_fallback: self.inner.cfg.force_kill_fallback,
            sandbox: Some(sb.id.to_string()),
        };
        let rr = cg.remove(&opts).await?;
        report.remove_ms = ms(r0.elapsed());
        report.rmdir_fallback = !rr.fast_path && !rr.already_gone;
        if let Some(k) = &rr.kill
            && k.found > 0
        {
            report.killed_after_grace += k.found;
            self.inner
                .counters
                .killed_after_grace
                .fetch_add(k.found as u64, Relaxed);
            self.emit(sb, EventKind::LeakedProcessesKilled { count: k.found });
        }
        Ok(had_processes || rr.kill.is_some_and(|k| k.found > 0))
    }

    /// Sets `pids.max = 0` if the pids controller is enabled; returns whether it did.
    fn freeze_pids(&self, cg: &Cgroup) -> bool {
        if !self.inner.pids_enabled.load(Relaxed) {
            return false;
        }
        match cg.set_limit(Limit::PidsMax(Max::Value(0))) {
            Ok(()) => true,
            Err(CgError::ControllerUnavailable { .. }) => false,
            Err(e) => {
                tracing::warn!(cgroup = %cg.path().display(), error = %e, "could not set pids.max = 0 before the kill");
                false
            }
        }
    }

    async fn quarantine(&self, sb: Arc<Sandbox>, cg: Arc<Cgroup>, mut report: StopReport) {
        report.pids_frozen = self.freeze_pids(&cg) || report.pids_frozen;
        // A sandbox paused before a kill is still frozen (a kill does not thaw; the kernel
        // kills frozen processes all the same): thaw it, so a quarantined sandbox is never
        // shown as running-but-frozen. A stuck process stays stuck either way.
        if sb.life.lock().unwrap().paused
            && let Err(e) = cg.thaw()
        {
            tracing::warn!(sandbox = %sb.id, lifecycle = %sb.lifecycle, error = %e, "could not thaw a quarantined sandbox that was paused");
        }
        {
            let mut l = sb.life.lock().unwrap();
            l.state = transition(l.state, Transition::KillStuck).expect("stopping → quarantined");
            l.paused = false;
            l.stuck = report.stuck.clone();
            l.report = Some(report.clone());
        }
        self.changed(&sb);
        self.inner.counters.stops_quarantined.fetch_add(1, Relaxed);
        tracing::error!(
            sandbox = %sb.id, lifecycle = %sb.lifecycle, stuck = ?report.stuck,
            "processes survived the kill deadline; sandbox quarantined"
        );
        self.emit(
            &sb,
            EventKind::Quarantined {
                stuck: report.stuck.clone(),
            },
        );
        sb.outcome.send_replace(Some(report.clone()));
        // Keep watching: event-driven on populated 0, repeating the kill now and then.
        let recheck = self.inner.cfg.quarantine_recheck;
        loop {
            let gone = match cg.watch() {
                Ok(w) => w.wait_unpopulated(recheck).await.unwrap_or(false),
                Err(_) => true,
            };
            if gone {
                break;
            }
            let _ = cg
                .kill(&KillOptions {
                    timeout: recheck,
                    ..Default::default()
                })
                .await;
        }
        let opts = RemoveOptions {
            timeout: self.inner.cfg.remove_timeout,
            sandbox: Some(sb.id.to_string()),
            ..Default::default()
        };
        match cg.remove(&opts).await {
            Ok(_) => {
                self.inner
                    .counters
                    .quarantines_drained
                    .fetch_add(1, Relaxed);
                tracing::info!(sandbox = %sb.id, lifecycle = %sb.lifecycle, "quarantined sandbox drained and removed");
                self.finish_stopped(&sb, report, Transition::Drained);
            }
            Err(e) => self.finish_failed(&sb, report, e.to_string()),
        }
    }

    fn finish_stopped(&self, sb: &Arc<Sandbox>, report: StopReport, how: Transition) {
        {
            let mut l = sb.life.lock().unwrap();
            l.state = transition(l.state, how).expect("to stopped");
            l.paused = false;
            l.report = Some(report.clone());
        }
        self.inner
            .recent
            .lock()
            .unwrap()
            .insert(&sb.id, sb.lifecycle, &report);
        self.changed(sb);
        if how == Transition::Removed {
            self.inner.counters.stops_ok.fetch_add(1, Relaxed);
        }
        tracing::info!(
            sandbox = %sb.id, lifecycle = %sb.lifecycle, total_ms = report.total_ms,
            signalled = report.signalled, killed = report.killed_after_grace, "sandbox stopped"
        );
        self.emit(
            sb,
            EventKind::Stopped {
                report: report.clone(),
            },
        );
        sb.outcome.send_replace(Some(report));
        self.prune_retired(sb);
    }

    fn finish_failed(&self, sb: &Arc<Sandbox>, report: StopReport, error: String) {
        {
            let mut l = sb.life.lock().unwrap();
            l.state = transition(l.state, Transition::StopFailed).expect("to failed");
            l.paused = false;
            l.error = Some(error.clone());
            l.report = Some(report.clone());
        }
        self.inner
            .recent
            .lock()
            .unwrap()
            .insert(&sb.id, sb.lifecycle, &report);
        self.changed(sb);
        self.inner.counters.stops_failed.fetch_add(1, Relaxed);
        tracing::error!(sandbox = %sb.id, lifecycle = %sb.lifecycle, %error, "sandbox stop failed");
        self.emit(sb, EventKind::Failed { error });
        sb.outcome.send_replace(Some(report));
        self.prune_retired(sb);
    }

    /// Drops a finished lifecycle from its ID's retiring list (never touching the current
    /// lifecycle, which stays inspectable until replaced or forgotten).
    fn prune_retired(&self, sb: &Arc<Sandbox>) {
        let pruned = {
            let mut reg = self.inner.registry.lock().unwrap();
            reg.get_mut(&sb.id).is_some_and(|slot| {
                let before = slot.retiring.len();
                slot.retiring.retain(|o| o.lifecycle != sb.lifecycle);
                slot.retiring.len() != before
            })
        };
        // Hooks may do slow I/O (a durable store): never under the registry lock.
        if pruned {
            self.inner.cfg.hooks.on_forget(&sb.id, sb.lifecycle);
        }
    }

    /// Removes a failed start from the registry if it is still the current lifecycle.
    fn forget_unstarted(&self, sb: &Arc<Sandbox>) {
        {
            let mut reg = self.inner.registry.lock().unwrap();
            if let Some(slot) = reg.get_mut(&sb.id)
                && slot.current.lifecycle == sb.lifecycle
            {
                if let Some(prev) = slot.retiring.pop() {
                    slot.current = prev;
                } else {
                    reg.remove(&sb.id);
                }
            }
        }
        self.inner.cfg.hooks.on_forget(&sb.id, sb.lifecycle);
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
    /// `stop`/`kill`/`wait_stopped` naming it (see [`RECENT_REPORTS`]).
    pub fn forget_lifecycle(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<(), Error> {
        let mut reg = self.inner.registry.lock().unwrap();
        let nf = || Error::NotFound {
            id: id.to_string(),
            lifecycle,
        };
        let Some(slot) = reg.get(id) else {
            return Err(nf());
        };
        if let Some(lc) = lifecycle
            && slot.current.lifecycle != lc
        {
            // An older lifecycle still in the registry is stopping or quarantined (a
            // finished one is pruned at once): say so rather than "not found".
            if let Some(old) = slot.retiring.iter().find(|o| o.lifecycle == lc) {
                return Err(Error::InvalidState {
                    id: id.clone(),
                    state: old.state(),
                    op: "delete (stop it first)",
                });
            }
            return Err(nf());
        }
        let st = slot.current.state();
        if !st.is_terminal() {
            return Err(Error::InvalidState {
                id: id.clone(),
                state: st,
                op: "delete (stop it first)",
            });
        }
        let lc = slot.current.lifecycle;
        if slot.retiring.is_empty() {
            reg.remove(id);
        } else if let Some(slot) = reg.get_mut(id) {
            let next = slot.retiring.remove(0);
            slot.current = next;
        }
        drop(reg);
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
        sb.life.lock().unwrap().paused = pause;
        self.changed(&sb);
        self.emit(
            &sb,
            if pause {
                EventKind::Paused
            } else {
                EventKind::Resumed
            },
        );
        Ok(self.info(&sb))
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
        let all: Vec<Arc<Sandbox>> = {
            let reg = self.inner.registry.lock().unwrap();
            reg.values()
                .flat_map(|s| std::iter::once(s.current.clone()).chain(s.retiring.iter().cloned()))
                .collect()
        };
        let mut v: Vec<SandboxInfo> = all.iter().map(|sb| self.info(sb)).collect();
        v.sort_by(|a, b| (a.id.as_str(), a.lifecycle).cmp(&(b.id.as_str(), b.lifecycle)));
        v
    }

    /// Waits until the lifecycle has stopped (or is quarantined or failed) and returns the
    /// stop's report (for a named lifecycle that already left the registry, its report from
    /// the last [`RECENT_REPORTS`]).
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

    /// Re-attaches a lifecycle recorded by a previous supervisor process (after a crash or
    /// a restart). The cgroup must exist and carry this supervisor's owner tag. The main
    /// process is re-opened by pidfd only if its PID still belongs to the recorded process
    /// (same start time), so a reused PID is never adopted. A stop that was in progress, or
    /// a main process that exited meanwhile (with the default [`OnMainExit::Stop`]), is
    /// finished; a record of a start that never completed, or of a finished lifecycle whose
    /// cgroup is somehow still there, has its cgroup killed and removed and comes back as
    /// [`Adopted::Gone`].
    pub async fn adopt(&self, rec: Record) -> Result<Adopted, Error> {
        let id = rec.spec.id.clone();
        let lc = rec.lifecycle;
        if let Ok(sb) = self.find(&id, Some(lc)) {
            let info = self.info(&sb);
            return Ok(match info.state {
                State::Quarantined => Adopted::Quarantined(info),
                State::Stopping => Adopted::Stopping(info),
                _ => Adopted::Running(info),
            });
        }
        let expected = cgroup_name(id.as_str(), lc);
        if rec.cgroup != expected {
            return Err(Error::InvalidSpec(format!(
                "record of {id} names cgroup {:?}, expected {expected:?}",
                rec.cgroup
            )));
        }
        let name = CgroupName::new(expected)?;
        let cg = match self.inner.cfg.root.open(&name) {
            Ok(c) => Arc::new(c),
            Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {
                return Ok(Adopted::Gone { id, lifecycle: lc });
            }
            Err(e) => return Err(e.into()),
        };
        let owner = cg.owner()?;
        // The tag is written right after `mkdir`, before anything runs in the cgroup: an
        // untagged cgroup of a record still `creating` is ours, cut off by a crash in
        // between (the record, written before `mkdir`, is the proof); it is removed below.
        let crashed_before_tag = owner.is_none() && rec.state == State::Creating;
        if owner.as_deref() != Some(self.inner.cfg.owner.as_str()) && !crashed_before_tag {
            return Err(Error::InvalidSpec(format!(
                "cgroup {} is not tagged as this supervisor's (owner tag {owner:?}); not adopting it",
                cg.path().display()
            )));
        }
        let main = match (rec.state, rec.main_pid) {
            (State::Stopped | State::Failed, _) | (State::Creating, None) => {
                let opts = RemoveOptions {
                    timeout: self.inner.cfg.remove_timeout,
                    sandbox: Some(id.to_string()),
                    ..Default::default()
                };
                cg.remove(&opts).await?;
                return Ok(Adopted::Gone { id, lifecycle: lc });
            }
            (_, Some(pid)) => {
                ForeignProcess::open(pid, rec.main_start_time).map_err(|cause| Error::Io {
                    op: format!("re-open main process {pid} of {id}"),
                    cause,
                })?
            }
            (_, None) => None,
        };
        let paused = cg.events()?.frozen;
        let sb = Arc::new(Sandbox {
            id: id.clone(),
            lifecycle: lc,
            created_at_ms: rec.created_at_ms,
            cgroup_path: cg.path().to_owned(),
            spec: rec.spec.clone(),
            cgroup_name: name.clone(),
            main: OnceLock::new(),
            life: Mutex::new(Life {
                state: State::Running,
                paused,
                main_pid: main.as_ref().map(|m| m.pid()),
                main_start_time: main.as_ref().and(rec.main_start_time),
                main_exit: None,
                report: None,
                stuck: Vec::new(),
                error: None,
                stop_reason: rec.stop_reason,
            }),
            op: tokio::sync::Mutex::new(()),
            outcome: watch::channel(None).0,
            escalate: Notify::new(),
        });
        drop(cg);
        let main = main.map(|m| Main::Adopted(Arc::new(m)));
        if let Some(m) = &main {
            let _ = sb.main.set(m.clone());
        }
        {
            let mut reg = self.inner.registry.lock().unwrap();
            match reg.get_mut(&id) {
                None => {
                    reg.insert(
                        id.clone(),
                        Slot {
                            current: sb.clone(),
                            retiring: Vec::new(),
                        },
                    );
                }
                Some(slot) if slot.current.lifecycle < lc && !slot.current.state().holds_id() => {
                    let old = std::mem::replace(&mut slot.current, sb.clone());
                    if !old.state().is_terminal() {
                        slot.retiring.push(old);
                    }
                }
                Some(slot) => slot.retiring.push(sb.clone()),
            }
        }
        self.inner.counters.adopted.fetch_add(1, Relaxed);
        self.emit(
            &sb,
            EventKind::Adopted {
                pid: sb.life.lock().unwrap().main_pid,
                state: rec.state,
            },
        );
        tracing::info!(sandbox = %id, lifecycle = %lc, recorded_state = %rec.state, main_alive = main.is_some(), "adopted sandbox");
        let stop_needed = matches!(rec.state, State::Stopping | State::Quarantined)
            || (main.is_none() && rec.spec.on_main_exit == OnMainExit::Stop);
        if stop_needed {
            let _op = sb.op.lock().await;
            let _ = self.begin_stop(&sb, StopReason::Recovered, rec.spec.stop);
            let info = self.info(&sb);
            return Ok(if rec.state == State::Quarantined {
                Adopted::Quarantined(info)
            } else {
                Adopted::Stopping(info)
            });
        }
        self.changed(&sb);
        if let Some(m) = main {
            self.spawn_monitor(sb.clone(), m);
        }
        Ok(Adopted::Running(self.info(&sb)))
    }

    /// Kills and removes every cgroup under the root that carries this supervisor's owner
    /// tag but is not a lifecycle in the registry (left by a crash, or by a record that was
    /// lost). Cgroups without the tag are reported and left alone; nothing outside the root
    /// is ever looked at.
    pub async fn reclaim(&self) -> Result<ReclaimReport, Error> {
        let root = &self.inner.cfg.root;
        let (names, other) = root.list()?;
        // Snapshot the registry after listing: a lifecycle is registered before its cgroup
        // is created, so every cgroup of a live lifecycle that was listed is in it.
        let known: std::collections::HashSet<String> = {
            let reg = self.inner.registry.lock().unwrap();
            reg.values()
                .flat_map(|s| std::iter::once(&s.current).chain(s.retiring.iter()))
                .map(|sb| cgroup_name(sb.id.as_str(), sb.lifecycle))
                .collect()
        };
        let mut report = ReclaimReport {
            untagged: other,
            ..Default::default()
        };
        for name in names {
            if known.contains(name.as_str()) {
                continue;
            }
            let owner = match root.owner_of(&name) {
                Ok(o) => o,
                Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    report.failed.push((name.to_string(), e.to_string()));
                    continue;
                }
            };
            if owner.as_deref() != Some(self.inner.cfg.owner.as_str()) {
                tracing::warn!(cgroup = %root.child_path(&name).display(), ?owner, "cgroup under the managed root is not ours; leaving it alone");
                report.untagged.push(name.to_string());
                continue;
            }
            // The cgroup's name says whose it was: its lines carry that ID and lifecycle.
            let (span, sandbox) = match parse_cgroup_name(name.as_str()) {
                Some((id, lc)) => (
                    tracing::info_span!("sandbox", sandbox = %id, lifecycle = %lc),
                    id.to_owned(),
                ),
                None => (tracing::Span::none(), name.to_string()),
            };
            let opts = RemoveOptions {
                timeout: self.inner.cfg.remove_timeout,
                sandbox: Some(sandbox),
                ..Default::default()
            };
            match root.open(&name) {
                Ok(cg) => match cg.remove(&opts).instrument(span.clone()).await {
                    Ok(r) => {
                        let killed = r.kill.map(|k| k.found).unwrap_or(0);
                        report.processes_killed += killed;
                        self.inner.counters.reclaimed.fetch_add(1, Relaxed);
                        span.in_scope(|| tracing::warn!(cgroup = %cg.path().display(), killed, "reclaimed an owned cgroup that had no sandbox record"));
                        report.reclaimed.push(name.to_string());
                    }
                    Err(e) => report.failed.push((name.to_string(), e.to_string())),
                },
                Err(e) if e.errno() == Some(rustix::io::Errno::NOENT) => {}
                Err(e) => report.failed.push((name.to_string(), e.to_string())),
            }
        }
        Ok(report)
    }

    /// Every lifecycle's durable record, for a store that wants to re-sync.
    pub fn records(&self) -> Vec<Record> {
        let reg = self.inner.registry.lock().unwrap();
        reg.values()
            .flat_map(|s| std::iter::once(&s.current).chain(s.retiring.iter()))
            .map(|sb| sb.record())
            .collect()
    }

    /// Stops every running sandbox (used on shutdown with `--stop-sandboxes-on-exit`).
    pub async fn stop_all(&self) -> Vec<(SandboxId, Result<StopReport, Error>)> {
        let ids: Vec<(SandboxId, LifecycleId)> = self
            .list()
            .into_iter()
            .filter(|i| !i.state.is_terminal())
            .map(|i| (i.id, i.lifecycle))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, lc) in ids {
            let sup = self.clone();
            set.spawn(async move {
                let r = sup
                    .stop_inner(&id, Some(lc), None, StopReason::Shutdown)
                    .await;
                (id, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    }

    /// Opens a lifecycle's cgroup by its name, relative to the root's fd.
    fn open_cgroup(&self, sb: &Sandbox) -> Result<Cgroup, CgError> {
        self.inner.cfg.root.open(&sb.cgroup_name)
    }

    /// The report of a finished lifecycle that has left the registry, if it is among the
    /// last [`RECENT_REPORTS`]. Only a named lifecycle is looked up: without one, the ID's
    /// current lifecycle is meant, and an ID no longer in the registry has none.
    fn recent_report(&self, id: &SandboxId, lifecycle: Option<LifecycleId>) -> Option<StopReport> {
        self.inner.recent.lock().unwrap().get(id, lifecycle?)
    }

    fn find(&self, id: &SandboxId, lifecycle: Option<LifecycleId>) -> Result<Arc<Sandbox>, Error> {
        let reg = self.inner.registry.lock().unwrap();
        let nf = || Error::NotFound {
            id: id.to_string(),
            lifecycle,
        };
        let slot = reg.get(id).ok_or_else(nf)?;
        match lifecycle {
            None => Ok(slot.current.clone()),
            Some(lc) => std::iter::once(&slot.current)
                .chain(slot.retiring.iter())
                .find(|s| s.lifecycle == lc)
                .cloned()
                .ok_or_else(nf),
        }
    }

    fn info(&self, sb: &Arc<Sandbox>) -> SandboxInfo {
        let current = {
            let reg = self.inner.registry.lock().unwrap();
            reg.get(&sb.id)
                .is_some_and(|s| s.current.lifecycle == sb.lifecycle)
        };
        let l = sb.life.lock().unwrap();
        SandboxInfo {
            id: sb.id.clone(),
            lifecycle: sb.lifecycle,
            state: l.state,
            paused: l.paused,
            current,
            pid: l.main_pid,
            cgroup_path: sb.cgroup_path.clone(),
            main_exit: l.main_exit,
            stop_report: l.report.clone(),
            stuck: l.stuck.clone(),
            error: l.error.clone(),
            created_at_ms: sb.created_at_ms,
            spec: sb.spec.clone(),
        }
    }

    fn apply(&self, sb: &Arc<Sandbox>, t: Transition) {
        {
            let mut l = sb.life.lock().unwrap();
            l.state = transition(l.state, t).unwrap_or_else(|e| panic!("sandbox {}: {e}", sb.id));
        }
        self.changed(sb);
    }

    /// Like [`Supervisor::apply`], and returns the hook's write of the new record.
    fn apply_persisting(&self, sb: &Arc<Sandbox>, t: Transition) -> Option<Persisting> {
        {
            let mut l = sb.life.lock().unwrap();
            l.state = transition(l.state, t).unwrap_or_else(|e| panic!("sandbox {}: {e}", sb.id));
        }
        let hooks = &self.inner.cfg.hooks;
        hooks.wants_records().then(|| hooks.on_change(&sb.record()))
    }

    fn changed(&self, sb: &Sandbox) {
        let hooks = &self.inner.cfg.hooks;
        if hooks.wants_records() {
            // Not waited for (see `Hooks::on_change`); the write goes on.
            drop(hooks.on_change(&sb.record()));
        }
    }

    fn emit(&self, sb: &Sandbox, kind: EventKind) {
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

/// The `oom_kill` count of a cgroup's `memory.events` (its whole subtree); `None` when the
/// file is absent (no memory controller) or unreadable.
fn oom_kills(cg: &Cgroup) -> Option<u64> {
    use rustix::fs::{Mode, OFlags, openat};
    let fd = openat(
        cg.dir_fd(),
        "memory.events",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 512];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    paddock_cgroup::MemoryEvents::parse(text)
        .ok()
        .map(|e| e.oom_kill)
}

/// Fails a start whose future is dropped while armed (see [`Supervisor::start`]).
struct StartGuard {
    sup: Option<Supervisor>,
    sb: Arc<Sandbox>,
}

impl StartGuard {
    fn disarm(&mut self) {
        self.sup = None;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(sup) = self.sup.take() {
            sup.abandon_start(&self.sb);
        }
    }
}

impl Sandbox {
    /// The span every operation on this lifecycle runs in: lines logged inside it (also by
    /// the cgroup layer, which knows neither) carry the sandbox's ID and lifecycle ID.
    fn span(&self) -> tracing::Span {
        tracing::info_span!("sandbox", sandbox = %self.id, lifecycle = %self.lifecycle)
    }

    /// Waits until the stop's outcome is published (stopped, quarantined or failed).
    async fn await_outcome(
        &self,
        mut rx: watch::Receiver<Option<StopReport>>,
    ) -> Result<StopReport, Error> {
        let r = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::InvalidState {
                id: self.id.clone(),
                state: self.state(),
                op: "wait for the stop's outcome",
            })?;
        Ok(r.clone().expect("wait_for checked it is Some"))
    }

    fn state(&self) -> State {
        self.life.lock().unwrap().state
    }

    fn record(&self) -> Record {
        let l = self.life.lock().unwrap();
        Record {
            spec: self.spec.clone(),
            lifecycle: self.lifecycle,
            state: l.state,
            paused: l.paused,
            cgroup: cgroup_name(self.id.as_str(), self.lifecycle),
            main_pid: l.main_pid,
            main_start_time: l.main_start_time,
            stop_reason: l.stop_reason,
            created_at_ms: self.created_at_ms,
        }
    }
}
