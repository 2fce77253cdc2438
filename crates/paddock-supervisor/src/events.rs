//! Lifecycle events and reports.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::ids::LifecycleId;
use crate::spec::SandboxId;

/// A process that would not die, as `/proc` described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StuckProcess {
    /// PID.
    pub pid: i32,
    /// Command name.
    pub comm: Option<String>,
    /// State letter (`D` = uninterruptible sleep).
    pub state: Option<String>,
    /// Kernel function it waits in.
    pub wchan: Option<String>,
}

impl From<&paddock_cgroup::ProcInfo> for StuckProcess {
    fn from(p: &paddock_cgroup::ProcInfo) -> Self {
        StuckProcess {
            pid: p.pid,
            comm: p.comm.clone(),
            state: p.state.map(String::from),
            wchan: p.wchan.clone(),
        }
    }
}

/// A process a stop had to kill because it outlived the grace period (or was there when a
/// `kill` began), as `/proc` named it just before the kill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KilledProcess {
    /// PID.
    pub pid: i32,
    /// Command name (`/proc/<pid>/comm`), if it could still be read.
    pub comm: Option<String>,
}

/// At most this many processes are named in [`StopReport::killed`]; the count in
/// [`StopReport::killed_after_grace`] is always complete.
pub const MAX_KILLED_LISTED: usize = 64;

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MainExit {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl MainExit {
    /// The status of a main process that exited while it was not paddock's child (adopted
    /// after a restart): its exit was seen, its status cannot be read.
    pub const UNKNOWN: MainExit = MainExit {
        code: None,
        signal: None,
        core_dumped: false,
    };

    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

impl From<paddock_proc::ExitStatus> for MainExit {
    fn from(s: paddock_proc::ExitStatus) -> Self {
        match s {
            paddock_proc::ExitStatus::Exited(c) => MainExit {
                code: Some(c),
                signal: None,
                core_dumped: false,
            },
            paddock_proc::ExitStatus::Signaled {
                signal,
                core_dumped,
            } => MainExit {
                code: None,
                signal: Some(signal),
                core_dumped,
            },
            // Something outside paddock-proc reaped the child (see `ExitStatus::Unknown`).
            paddock_proc::ExitStatus::Unknown => MainExit::UNKNOWN,
        }
    }
}

/// Why a stop ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StopReason {
    /// `stop` was called.
    Requested,
    /// `kill` was called (no grace period).
    Killed,
    /// The main process exited and the policy stops the sandbox then.
    MainExited,
    /// The supervisor is shutting down and was told to stop its sandboxes.
    Shutdown,
    /// Reconciliation found a stop that had not finished.
    Recovered,
    /// The sandbox's deadline passed (`deadline_ms` in its spec, or as extended): a
    /// graceful stop by its own stop policy.
    Deadline,
    /// The OOM killer ended the sandbox: a group OOM kill (`memory.oom.group`) took every
    /// process, or the main process was OOM-killed (`memory.events` counted a kill and the
    /// main process died of SIGKILL). The counts are in the report (`oom_kills`,
    /// `oom_group_kills`) and in the `oom` event.
    Oom,
    /// The node was drained with its sandboxes stopped (the daemon's `POST /v1/node/drain`
    /// with `"stop": true`): a graceful stop by the sandbox's own stop policy, with the
    /// drain's grace period when it gave one. Ends the ID's restarts.
    Drain,
}

/// What a stop did, phase by phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopReport {
    /// Why it ran.
    pub reason: StopReason,
    /// Processes that were sent the stop signal (and SIGCONT), each by pidfd.
    pub signalled: usize,
    /// Time spent signalling every process.
    pub signal_ms: f64,
    /// Time spent waiting for the tree to exit on its own.
    pub grace_ms: f64,
    /// Processes still there after the grace period, which had to be killed (all of them,
    /// including any the removal's `EBUSY` backstop killed).
    pub killed_after_grace: usize,
    /// Who had to be killed: the first [`MAX_KILLED_LISTED`] processes the kill found in
    /// the cgroup, in `cgroup.procs` order (processes killed by the removal's backstop are
    /// counted in `killed_after_grace` but not named).
    #[serde(default)]
    pub killed: Vec<KilledProcess>,
    /// Time the kill took.
    pub kill_ms: f64,
    /// Time the removal took.
    pub remove_ms: f64,
    /// Whether removal found the cgroup busy and took the `cgroup.kill` fallback.
    pub rmdir_fallback: bool,
    /// Whether `pids.max = 0` was set before the kill.
    pub pids_frozen: bool,
    /// Total time from the stop request to the cgroup being gone (or quarantined).
    pub total_ms: f64,
    /// CPU time the sandbox used in all (`cpu.stat` usage_usec, read just before removal).
    pub cpu_usage_usec: Option<u64>,
    /// Peak memory of the sandbox (`memory.peak`), where the memory controller is enabled.
    pub memory_peak: Option<u64>,
    /// OOM kills in the sandbox's cgroup over its whole life (`memory.events` `oom_kill`,
    /// read just before removal); `None` where the memory controller is not enabled for it.
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// Group OOM kills in the sandbox's cgroup (`memory.events` `oom_group_kill`, kernel
    /// 5.17+: `memory.oom.group` took the whole sandbox); `None` where the memory controller
    /// is not enabled for it or the kernel does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_group_kills: Option<u64>,
    /// Processes that survived the kill deadline; non-empty means quarantined.
    pub stuck: Vec<StuckProcess>,
    /// An error that ended the stop (state `failed`).
    pub error: Option<String>,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What happened to a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// The main process was spawned.
    Started {
        /// Its PID.
        pid: i32,
        /// The jail it runs in (its uid, capabilities, and the Landlock ABI enforced, or
        /// none); absent for a sandbox without a jail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jail: Option<crate::jail::JailStatus>,
    },
    /// A lifecycle recorded by a previous supervisor process was adopted.
    Adopted {
        /// The main process's PID, if it is still alive.
        pid: Option<i32>,
        /// The state it was adopted in.
        state: crate::State,
    },
    /// Starting failed; nothing was left behind.
    StartFailed {
        /// The cause.
        error: String,
    },
    /// The main process exited.
    MainExited {
        /// How.
        status: MainExit,
    },
    /// A stop began.
    Stopping {
        /// Why.
        reason: StopReason,
    },
    /// Processes that outlived the grace period (or escaped a wrapper) were killed.
    LeakedProcessesKilled {
        /// How many.
        count: usize,
    },
    /// Everything is gone.
    Stopped {
        /// The stop's report.
        report: StopReport,
    },
    /// Processes survived the kill deadline.
    Quarantined {
        /// Who.
        stuck: Vec<StuckProcess>,
    },
    /// The stop failed.
    Failed {
        /// The cause.
        error: String,
    },
    /// The OOM killer ended the sandbox (the stop that follows has reason `oom`).
    Oom {
        /// Processes the OOM killer killed in the sandbox (`memory.events` `oom_kill`).
        oom_kills: u64,
        /// Group OOM kills (`oom_group_kill`): each took every process of the sandbox.
        oom_group_kills: u64,
    },
    /// Limits of the running sandbox were changed (`PATCH /v1/sandboxes/{id}`).
    LimitsUpdated {
        /// The limits now in force (all of them, after the change).
        limits: Box<crate::spec::Limits>,
    },
    /// Frozen.
    Paused,
    /// Thawed.
    Resumed,
    /// The deadline was set or moved; the sandbox is stopped (reason `deadline`) when it
    /// passes.
    DeadlineSet {
        /// The deadline, in milliseconds since the Unix epoch.
        deadline_at_ms: u64,
    },
    /// The lifecycle stopped because its main process exited, and the restart policy
    /// starts the ID again, as a new lifecycle, at `restart_at_ms`.
    Restarting {
        /// The restart's number for the ID (1 for the first).
        attempt: u32,
        /// When the restart is due, milliseconds since the Unix epoch. (Not `at_ms`: the
        /// event's own time has that key, in the same JSON object.)
        restart_at_ms: u64,
    },
    /// The restart that was pending after this lifecycle was cancelled (a stop or kill of
    /// the ID).
    RestartCancelled,
    /// The deadline passed: the stop (reason `deadline`) begins.
    Deadline {
        /// The deadline that passed, in milliseconds since the Unix epoch.
        deadline_at_ms: u64,
    },
}

/// One event, for one lifecycle of one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// The sandbox.
    pub id: SandboxId,
    /// The lifecycle.
    pub lifecycle: LifecycleId,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
