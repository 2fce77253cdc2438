//! The paddock supervisor library: start sandboxes, stop them, and know for certain that
//! nothing is left.
//!
//! A sandbox is one cgroup under the managed root (named `<id>@<lifecycle>`) and the
//! process tree started in it by `clone3(CLONE_INTO_CGROUP)`. The [`Supervisor`] keeps a
//! registry keyed by sandbox ID with insert-if-absent semantics and a fresh
//! [`LifecycleId`] per start, drives every sandbox through the [`State`] machine with one
//! [`transition`] function, and stops a sandbox in phases: the stop signal and SIGCONT to
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

mod events;
pub mod logs;
#[cfg(feature = "openapi")]
pub mod schema;
mod spec;
mod state;
mod stdio;
mod supervisor;

pub use events::{
    Event, EventKind, KilledProcess, MAX_KILLED_LISTED, MainExit, StopReason, StopReport,
    StuckProcess,
};
pub use spec::{
    Limits, MAX_CGROUP_COUNT_LIMIT, MAX_DURATION, MAX_ID_CHARS_NON_ASCII, MAX_ID_LEN,
    MAX_PIDS_LIMIT, Network, OnMainExit, SandboxId, SandboxSpec, StdioSpec, StdioTarget,
    StopPolicy, parse_duration, parse_size,
};
pub use state::{
    CGROUP_SEPARATOR, InvalidTransition, LifecycleId, State, Transition, cgroup_name,
    parse_cgroup_name, transition,
};
pub use stdio::{MAX_STDIO_OPENS, STDIO_OPEN_TIMEOUT};
pub use supervisor::{
    Adopted, Config, DEFAULT_CONTROLLERS, Hooks, NoHooks, Persisting, RECENT_REPORTS,
    ReclaimReport, Record, SandboxInfo, SandboxStats, Started, Supervisor, SupervisorCounters,
    persisted,
};

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; nothing was changed.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
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
    /// The journal refused to record the sandbox; nothing was created.
    #[error("could not record sandbox {id} before creating it: {reason}")]
    Journal {
        /// The sandbox.
        id: SandboxId,
        /// The journal's error.
        reason: String,
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
