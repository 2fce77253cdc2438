//! The paddock supervisor library: start sandboxes, stop them, and know for certain that
//! nothing is left.
//!
//! A sandbox is one cgroup under the managed root (named `<id>@<lifecycle>`) and the
//! process tree started in it by `clone3(CLONE_INTO_CGROUP)`. The [`Supervisor`] keeps a
//! registry keyed by sandbox ID with insert-if-absent semantics and a fresh
//! [`LifecycleId`] per start, drives every lifecycle through the [`LifecycleState`] machine
//! with one [`transition`] function (the API sees its wire form, [`State`]), and stops a
//! sandbox in phases: the stop signal and SIGCONT to
//! **every** process in the cgroup (by pidfd), an event-driven grace period, `pids.max = 0`
//! where the controller exists, the verified kill of the cgroup layer, and removal with the
//! EBUSY backstop. Processes that survive the kill deadline put the sandbox in
//! `quarantined`, where it stays watched until they are gone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paddock_supervisor::Error> {
//! use paddock_supervisor::{Config, SandboxId, SandboxSpec, Supervisor};
//! let sup = Supervisor::new(Config::new(paddock_cgroup::Root::open_default()?))?;
//! let spec = SandboxSpec::new(SandboxId::new("job-1")?, "/bin/sleep", ["30"]);
//! let started = sup.start(spec).await?;
//! let report = sup.stop(&started.info.id, Some(started.info.lifecycle)).await?;
//! assert!(report.stuck.is_empty());
//! # Ok(()) }
//! ```

//! ## Modules
//!
//! `state` (the state machine), `ids` (lifecycle IDs and cgroup names), `lifecycle` (one lifecycle, and `Supervisor::enter`, the one
//! place a state changes with its side effects), `registry`, `start`, `spawn` (spec → cgroup
//! limits and command), `stop` (the stop phases and quarantine), `recovery` (adopt and
//! reclaim), `supervisor` (the shared state, queries, pause and resume), `config`, `hooks`,
//! `events`, `spec`, `logs`, `jail` (the jail spec, its validation, name resolution and
//! conversion to the process layer's jail), `uids` (the dynamic users' allocator).
//!
//! ## Locks
//!
//! Every lock is a `parking_lot` mutex, which does not poison: a panic while one is held
//! cannot turn every later operation into a failure. Each critical section only reads or
//! assigns (it cannot leave a half-made change behind), none is held across an `.await` or
//! a hook call, and when two are taken the registry's comes before a lifecycle's state.

mod config;
mod deadline;
mod events;
mod hooks;
mod ids;
pub mod jail;
mod lifecycle;
pub mod logs;
mod net;
mod netspec;
mod pressure;
mod recovery;
mod registry;
pub mod resources;
mod restart;
mod retention;
#[cfg(feature = "openapi")]
pub mod schema;
mod spawn;
mod spec;
mod start;
mod state;
mod stdio;
mod stop;
mod supervisor;
pub mod uids;
mod update;

pub use config::{Config, DEFAULT_CONTROLLERS, DEFAULT_EVENT_CAPACITY, Retention};
pub use events::{
    Event, EventKind, KilledProcess, MAX_KILLED_LISTED, MainExit, StopReason, StopReport,
    StuckProcess,
};
pub use hooks::{HookError, HookErrorKind, Hooks, NoHooks, Persisting, Record, persisted};
pub use ids::{CGROUP_SEPARATOR, LifecycleId, cgroup_name, parse_cgroup_name};
pub use jail::{JailSpec, JailStatus};
pub use lifecycle::START_FAILED_TARGET;
pub use logs::LogLimits;
pub use net::{DEFAULT_NET_POOL, NetConfig, NetGauges};
pub use netspec::{MAX_PUBLISH, MAX_TAPS, NetStatus, Protocol, PublishSpec, TapSpec, VethSpec};
/// The cgroup layer's types a program on the supervisor needs around it: the managed root
/// ([`Root`]: open, create, delegate), the owner tags ([`Owner`]), names, and the kill and
/// removal options of a cgroup of its own (a guardian's clean-up). Its errors are
/// [`CgroupError`] (also [`Error::Cgroup`]).
pub use paddock_cgroup::{
    CgroupName, Error as CgroupError, KillOptions, Owner, RemoveOptions, Root,
};
/// The steps of a `veth` network's creation, in order (`Hooks::net_step`).
pub use paddock_net::CREATE_STEPS as NET_CREATE_STEPS;
pub use paddock_net::Ipv4Net;
/// The process layer's types a program on the supervisor needs for processes of its own
/// (a guardian process, reaping orphans at exit) and to read a spawn error's stage.
pub use paddock_proc::{
    Command, Namespaces, Process, SpawnError, Stage, Stdio, fork_helper, reap_orphans_of,
};
/// The health of the process-global child reaper that every spawn goes through (for a
/// readiness check): [`ReaperHealth::is_healthy`] is false while its start-up fails and for
/// good once one of its threads has died, and then no sandbox can start.
pub use paddock_proc::{ReaperHealth, reaper_health};
pub use pressure::{PsiLine, PsiStats, SandboxPressure};
pub use recovery::{Adopted, ReclaimReport};
pub use registry::RECENT_REPORTS;
pub use resources::IoDeviceLimit;
pub use restart::{BACKOFF_RESET_AFTER, PendingRestart};
pub use retention::{Occupancy, Reservation};
pub use spec::{
    Limits, MAX_CGROUP_COUNT_LIMIT, MAX_DURATION, MAX_ID_CHARS_NON_ASCII, MAX_ID_LEN,
    MAX_PIDS_LIMIT, Network, OnMainExit, RestartMode, RestartPolicy, SandboxId, SandboxSpec,
    StdioSpec, StdioTarget, StopPolicy, parse_duration, parse_size,
};
pub use state::{InvalidTransition, LifecycleState, State, Transition, transition};
pub use stdio::{MAX_STDIO_OPENS, STDIO_OPEN_TIMEOUT};
pub use supervisor::{SandboxInfo, SandboxStats, Started, Supervisor, SupervisorCounters};
pub use uids::UidRange;
pub use update::LimitsUpdate;

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; nothing was changed.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// Each field of the spec is valid on its own, but they do not fit together (a
    /// capability both added and dropped, a uid the jail's user namespace does not map, a
    /// mount that needs a namespace not asked for; see [`JailSpec::check_consistency`]). The
    /// message names the field; nothing was changed. (The API's 422, where
    /// [`Error::InvalidSpec`] from validation is a 400: a value its document refuses.)
    #[error("inconsistent sandbox spec: {0}")]
    Inconsistent(String),
    /// The spec is valid, but this node lacks what it needs (a tap device on a node whose
    /// kernel has no tun driver or no `/dev/net/tun`); the message names the field and what
    /// is missing. Nothing was left behind. (The API's 422.)
    #[error("this node cannot carry out the sandbox spec: {0}")]
    Unsupported(String),
    /// A value valid on its own would, from the sandbox's current state, pass a bound (an
    /// extension that puts the deadline more than 365 days away); nothing changed. (The
    /// API's 422.)
    #[error("{0}")]
    OutOfRange(String),
    /// A sandbox with this ID is already creating or running; nothing was started.
    #[error(
        "sandbox {0} already exists (it is creating or running); stop it first or pick another ID"
    )]
    AlreadyExists(SandboxId),
    /// No sandbox with this ID (or lifecycle) is known.
    #[error("no sandbox {id}{}", lifecycle.map(|l| format!(" with lifecycle {l}")).unwrap_or_default())]
    NotFound {
        /// The ID asked for.
        id: String,
        /// The lifecycle asked for, if any.
        lifecycle: Option<LifecycleId>,
    },
    /// The operation does not apply in the sandbox's current state.
    #[error("sandbox {id} is {state}: cannot {op}")]
    InvalidState {
        /// The sandbox.
        id: SandboxId,
        /// Its state.
        state: State,
        /// What was asked.
        op: &'static str,
    },
    /// The cgroup layer failed.
    #[error(transparent)]
    Cgroup(#[from] paddock_cgroup::Error),
    /// Spawning the main process failed; the cgroup was removed again.
    #[error("spawn {command}: {cause}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause (its text is part of this error's message).
        cause: paddock_proc::SpawnError,
    },
    /// The journal refused to record the sandbox; nothing was created (or, when the record
    /// of a started sandbox failed, the sandbox was killed again).
    #[error("could not record sandbox {id} before creating it: {reason}")]
    Journal {
        /// The sandbox.
        id: SandboxId,
        /// The journal's error.
        reason: HookError,
    },
    /// Some other system call failed.
    #[error("{op}: {cause}")]
    Io {
        /// What was being done.
        op: String,
        /// The cause (its text is part of this error's message).
        cause: std::io::Error,
    },
    /// Something a start needs did not answer in time (a stdio file on a hung file system),
    /// or too many such waits are pending; nothing was started. Retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The network address pool has no free subnet; nothing was started. Retry once a
    /// sandbox with a `veth` network has stopped, or configure a larger pool. (The API's
    /// 429.)
    #[error("{0}")]
    PoolExhausted(String),
    /// A host port the spec publishes is published by another live sandbox (of this or
    /// any paddock process of the machine); nothing was started. (The API's 409.)
    #[error("{0}")]
    PortInUse(String),
    /// Making or removing a sandbox's network failed (the message names the object and
    /// the errno); a start that fails so leaves nothing behind.
    #[error("network of sandbox {id}: {cause}")]
    Network {
        /// The sandbox.
        id: SandboxId,
        /// The network layer's error.
        cause: paddock_net::Error,
    },
    /// A pause or resume did not complete in time.
    #[error(
        "sandbox {id}: {op} did not complete within {timeout_ms} ms (a process in uninterruptible sleep?)"
    )]
    Timeout {
        /// The sandbox.
        id: SandboxId,
        /// `pause` or `resume`.
        op: &'static str,
        /// The timeout.
        timeout_ms: u64,
    },
}
