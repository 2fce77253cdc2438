//! The supervisor's configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use paddock_cgroup::Root;

use crate::hooks::{Hooks, NoHooks};
use crate::logs::LogLimits;

/// Supervisor configuration.
pub struct Config {
    /// The managed root every sandbox cgroup is created under.
    pub root: Root,
    /// The value of the `user.paddock.owner` tag on every cgroup this supervisor creates
    /// (see [`paddock_cgroup::owner`]): who owns them. [`crate::Supervisor::adopt`] takes
    /// only cgroups with this tag (or the legacy `paddock`), and
    /// [`crate::Supervisor::reclaim`] removes unrecorded ones with this tag and those of
    /// provably dead owners, nothing else. Default: this process for its lifetime
    /// (`pid:<pid>:<start time>:<pid namespace>`), so another instance cleans them up once
    /// this process is gone; a daemon sets its durable identity (`daemon:<id>`) so that its
    /// restart adopts them instead. Two supervisors sharing a root must have different
    /// owners.
    pub owner: String,
    /// Directory of the sandboxes' log files ([`crate::StdioTarget::Log`]).
    pub log_dir: Option<PathBuf>,
    /// The size cap and rotation of each log file (default: no cap; see
    /// [`crate::logs`]).
    pub log_limits: LogLimits,
    /// How long stopped and failed lifecycles stay in the registry (default: until
    /// forgotten). Pruning one forgets it like [`crate::Supervisor::forget_lifecycle`] (its
    /// store record goes through [`Hooks::on_forget`]) and deletes its log.
    pub retain_stopped: Retention,
    /// When set, every [`crate::StdioTarget::File`] must be beneath this directory (absolute
    /// and under it, or relative to it); it is resolved with `openat2(RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`. When `None`, file targets must be
    /// absolute paths. Either way only regular files are opened, never through a symbolic
    /// link as the last component (default `None`).
    pub stdio_dir: Option<PathBuf>,
    /// Become a child subreaper so orphans of sandboxes are reaped here (default true).
    pub subreaper: bool,
    /// Start each sandbox's main process in a session (and process group) of its own
    /// (`setsid` in the child), so that nothing aimed at the supervisor's process group
    /// reaches the sandboxes: a terminal's Ctrl-C, or a service manager or scheduler that
    /// kills the supervisor's group when it exits (Nomad's `raw_exec` does) — a sandbox
    /// left for the next supervisor to adopt must not die with this one's group (default
    /// true; `paddock run` in the foreground turns it off, so that the terminal's signals
    /// reach its payload as they reach any command).
    pub new_session: bool,
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
    /// [`crate::Supervisor::stats`] reports memory, CPU throttling and I/O for every
    /// sandbox, not only those with a limit). Limits in a spec enable their own controllers
    /// on first use.
    pub controllers: Vec<String>,
    /// The host uids (and gids of the same numbers) handed to dynamic users
    /// (`jail.user.dynamic`), one per lifecycle while any of its processes may live (see
    /// [`crate::uids`]). `None` (the default): dynamic users are refused with a clear error.
    /// Two supervisors must never share ids of their ranges (nor any other user own them);
    /// `paddock serve` takes [`crate::UidRange::DEFAULT`] unless told otherwise.
    pub dynamic_uids: Option<crate::UidRange>,
    /// Capacity of the event channel ([`Supervisor::events`](crate::Supervisor::events)):
    /// a subscriber that falls further behind loses the oldest events and is told so
    /// (`RecvError::Lagged`). Default [`DEFAULT_EVENT_CAPACITY`]; a program that supervises
    /// one sandbox and never subscribes (`paddock run`) sets it small, since every slot is
    /// allocated, and touched, when the supervisor is made. At least 1.
    pub event_capacity: usize,
    /// The `veth` network mode: its address pool, lease file, pin directory (see
    /// [`crate::NetConfig`]). Used only by sandboxes that ask for it.
    pub net: crate::NetConfig,
}

/// The default [`Config::event_capacity`].
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Which stopped and failed lifecycles the registry keeps (see
/// [`Config::retain_stopped`]). Only an ID's current lifecycle is kept once finished: an
/// older one leaves the registry when its stop ends, and a finished one is replaced by a
/// restart of its ID; either way its record and log are deleted then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// A finished lifecycle is forgotten this long after it ended.
    pub max_age: Option<Duration>,
    /// At most this many finished lifecycles are kept; past it the one that ended first
    /// is forgotten.
    pub max_count: Option<usize>,
}

impl Retention {
    /// Keep finished lifecycles until they are forgotten or replaced.
    pub const FOREVER: Retention = Retention {
        max_age: None,
        max_count: None,
    };
}

/// This process as an owner tag; where `/proc` cannot say its start time, a tag nothing
/// can prove dead (`pid:<pid>`), so no other instance ever reclaims its cgroups.
fn default_owner() -> String {
    match paddock_cgroup::Owner::this_process() {
        Some(o) => o.to_string(),
        None => format!("pid:{}", std::process::id()),
    }
}

/// The controllers [`Config::new`] asks for.
pub const DEFAULT_CONTROLLERS: [&str; 4] = ["pids", "memory", "cpu", "io"];

impl Config {
    /// Defaults around a root.
    pub fn new(root: Root) -> Self {
        Config {
            root,
            owner: default_owner(),
            log_dir: None,
            log_limits: LogLimits::UNLIMITED,
            retain_stopped: Retention::FOREVER,
            stdio_dir: None,
            subreaper: true,
            new_session: true,
            force_kill_fallback: false,
            remove_timeout: Duration::from_secs(2),
            quarantine_recheck: Duration::from_secs(1),
            hooks: Arc::new(NoHooks),
            controllers: DEFAULT_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
            dynamic_uids: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            net: crate::NetConfig::default(),
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
