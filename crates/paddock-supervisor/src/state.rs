//! The lifecycle state machine: the states of a lifecycle, with the data each carries, and
//! the one pure function that moves between them.
//!
//! ```text
//!                  Started                 StopBegun                Removed
//!   Creating ─────────────▶ Running ─────────────────▶ Stopping ────────────▶ Stopped ⟲ RestartSettled
//!      │                    ▲ │ ▲                      ▲  │  │                  ▲
//!      │ StartFailed        │ └─┘ Paused, Resumed,     │  │  │ KillStuck        │ Drained
//!      ▼                    │     DeadlineSet,         │  │  ▼                  │
//!                           │     LimitsUpdated        │  │                     │
//!   StartFailed     Adopted │                  Adopted │  │ Quarantined ────────┘
//!                           │                          │  │  │
//!                       Recorded ──────────────────────┘  │  │ StopFailed
//!                                              StopFailed │  ▼
//!                                                         └▶ StopFailed
//! ```
//!
//! `Creating` is where a start begins (the lifecycle is registered in it); `Recorded` is
//! where an adoption begins (a lifecycle known only from a previous supervisor's record; it
//! is registered by the `Adopted` arrow and never observed before it). `Stopped`,
//! `StartFailed` and `StopFailed` are terminal. `Quarantined` means processes survived the
//! kill deadline (uninterruptible sleep); the sandbox keeps its cgroup with `pids.max = 0`,
//! is watched, and becomes `Stopped` when they are gone. Pausing is data of `Running`.
//!
//! The API, the store and the metrics see the wire [`State`] of a [`LifecycleState`]
//! ([`LifecycleState::state`]): both failed states are `failed`.
//!
//! Over 600 lines with its unit tests (about 360 without): every arrow is tested next to
//! the table that defines it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::events::{StopReason, StopReport};

/// A lifecycle state as the API, the store and the metrics name it (its wire form). The
/// supervisor's own state, with the data each state carries, is [`LifecycleState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum State {
    /// The cgroup is being created and the main process spawned.
    Creating,
    /// The main process was spawned.
    Running,
    /// The stop sequence is running.
    Stopping,
    /// Everything is gone: no process, no cgroup.
    Stopped,
    /// Start or stop failed with an error; see the sandbox's `error`.
    Failed,
    /// Processes survived the kill deadline; kept, watched, and removed when they go.
    Quarantined,
}

impl State {
    /// Whether no further transition can happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Stopped | State::Failed)
    }

    /// Whether the sandbox occupies its ID: a start of the same ID is refused.
    pub fn holds_id(self) -> bool {
        matches!(self, State::Creating | State::Running)
    }

    /// Lower-case name, as used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Quarantined => "quarantined",
        }
    }

    /// All states, for metrics.
    pub const ALL: [State; 6] = [
        State::Creating,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Failed,
        State::Quarantined,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one lifecycle, with the data that belongs to it (see the module's diagram).
/// Nothing about a lifecycle's state is kept outside it.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleState {
    /// Known only from a previous supervisor's record, in the recorded state; the initial
    /// point of an adoption, left at once by [`Transition::Adopted`].
    Recorded {
        /// The state the record says.
        state: State,
    },
    /// The cgroup is being created and the main process spawned; the initial point of a
    /// start.
    Creating,
    /// The main process was spawned.
    Running {
        /// Whether the cgroup is frozen.
        paused: bool,
    },
    /// The stop sequence is running.
    Stopping {
        /// Why.
        reason: StopReason,
    },
    /// Everything is gone: no process, no cgroup.
    Stopped {
        /// The stop's report.
        report: StopReport,
    },
    /// The start failed; nothing was left behind and the lifecycle left the registry.
    StartFailed {
        /// Why.
        error: String,
    },
    /// The stop failed with an error other than stuck processes.
    StopFailed {
        /// Why.
        error: String,
        /// What the stop did before it failed.
        report: StopReport,
    },
    /// Processes survived the kill deadline; the cgroup is kept (`pids.max = 0`), watched,
    /// and removed when they are gone.
    Quarantined {
        /// The stop's report; `report.stuck` names the processes.
        report: StopReport,
    },
}

impl LifecycleState {
    /// The wire form. A `Recorded` lifecycle shows the state its record says.
    pub fn state(&self) -> State {
        match self {
            LifecycleState::Recorded { state } => *state,
            LifecycleState::Creating => State::Creating,
            LifecycleState::Running { .. } => State::Running,
            LifecycleState::Stopping { .. } => State::Stopping,
            LifecycleState::Stopped { .. } => State::Stopped,
            LifecycleState::StartFailed { .. } | LifecycleState::StopFailed { .. } => State::Failed,
            LifecycleState::Quarantined { .. } => State::Quarantined,
        }
    }

    /// The variant's name, as in the diagram.
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleState::Recorded { .. } => "Recorded",
            LifecycleState::Creating => "Creating",
            LifecycleState::Running { .. } => "Running",
            LifecycleState::Stopping { .. } => "Stopping",
            LifecycleState::Stopped { .. } => "Stopped",
            LifecycleState::StartFailed { .. } => "StartFailed",
            LifecycleState::StopFailed { .. } => "StopFailed",
            LifecycleState::Quarantined { .. } => "Quarantined",
        }
    }

    /// Whether the cgroup is frozen (only a running lifecycle can be paused).
    pub fn paused(&self) -> bool {
        matches!(self, LifecycleState::Running { paused: true })
    }

    /// The stop's report, once a stop finished, failed or quarantined.
    pub fn report(&self) -> Option<&StopReport> {
        match self {
            LifecycleState::Stopped { report }
            | LifecycleState::StopFailed { report, .. }
            | LifecycleState::Quarantined { report } => Some(report),
            _ => None,
        }
    }

    /// The error of a failed start or stop.
    pub fn error(&self) -> Option<&str> {
        match self {
            LifecycleState::StartFailed { error } | LifecycleState::StopFailed { error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }

    /// Why a stop is running or ran.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self {
            LifecycleState::Stopping { reason } => Some(*reason),
            _ => self.report().map(|r| r.reason),
        }
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened, as input to [`transition`]; it carries the data of the state it leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A recorded lifecycle was adopted: `Recorded` → `Running`, or `Stopping` (reason
    /// [`StopReason::Recovered`]) when its stop is to be finished.
    Adopted {
        /// Whether its cgroup is frozen.
        paused: bool,
        /// Whether a stop is to be finished (one was in progress, or the main process is
        /// gone and the spec stops the sandbox then).
        finish_stop: bool,
    },
    /// The main process was spawned: `Creating` → `Running`.
    Started,
    /// Creating the cgroup or spawning failed (everything was cleaned up): `Creating` →
    /// `StartFailed`.
    StartFailed {
        /// Why.
        error: String,
    },
    /// The cgroup froze: `Running` → `Running { paused: true }`.
    Paused,
    /// The cgroup thawed: `Running` → `Running { paused: false }`.
    Resumed,
    /// The deadline was set or moved (`Supervisor::extend_deadline`): `Running` →
    /// `Running`, recorded like any other transition.
    DeadlineSet {
        /// The new deadline, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// The limits in force changed (`Supervisor::update_limits`, once the cgroup's files
    /// are written): `Running` → `Running`, recorded (and waited for), so an adoption keeps
    /// them.
    LimitsUpdated {
        /// The limits now in force.
        limits: Box<crate::spec::Limits>,
    },
    /// The restart pending after this lifecycle was made (`made`: the new lifecycle is
    /// starting) or cancelled (a stop or kill request of the ID during its backoff):
    /// `Stopped` → `Stopped`, recorded, so a restarted supervisor does not make it (again).
    RestartSettled {
        /// Whether it was made (else cancelled).
        made: bool,
    },
    /// A stop began (requested, or the main process exited): `Running` → `Stopping`.
    StopBegun {
        /// Why.
        reason: StopReason,
    },
    /// The cgroup is empty and removed: `Stopping` → `Stopped`.
    Removed {
        /// The stop's report.
        report: StopReport,
    },
    /// Processes survived the kill deadline: `Stopping` → `Quarantined`.
    KillStuck {
        /// The stop's report, naming them.
        report: StopReport,
    },
    /// The stuck processes are gone and the cgroup removed: `Quarantined` → `Stopped` (with
    /// the quarantine's report).
    Drained,
    /// Stopping failed with an error other than stuck processes: `Stopping` or
    /// `Quarantined` → `StopFailed`.
    StopFailed {
        /// Why.
        error: String,
        /// What the stop did.
        report: StopReport,
    },
}

impl Transition {
    /// The variant's name, as in the diagram.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Adopted { .. } => "Adopted",
            Transition::Started => "Started",
            Transition::StartFailed { .. } => "StartFailed",
            Transition::Paused => "Paused",
            Transition::Resumed => "Resumed",
            Transition::DeadlineSet { .. } => "DeadlineSet",
            Transition::RestartSettled { .. } => "RestartSettled",
            Transition::LimitsUpdated { .. } => "LimitsUpdated",
            Transition::StopBegun { .. } => "StopBegun",
            Transition::Removed { .. } => "Removed",
            Transition::KillStuck { .. } => "KillStuck",
            Transition::Drained => "Drained",
            Transition::StopFailed { .. } => "StopFailed",
        }
    }
}

/// A transition that is not allowed from the current state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid lifecycle transition {transition} from state {from}")]
pub struct InvalidTransition {
    /// The state the lifecycle was (and stays) in (boxed: a state can carry a report).
    pub from: Box<LifecycleState>,
    /// The name of the transition that does not apply.
    pub transition: &'static str,
}

/// The one transition function: every state change of every lifecycle is computed by it
/// (the supervisor applies it, with the change's side effects, in one place). Pure.
pub fn transition(
    from: &LifecycleState,
    t: Transition,
) -> Result<LifecycleState, InvalidTransition> {
    use LifecycleState as S;
    use Transition as T;
    Ok(match (from, t) {
        (
            S::Recorded { .. },
            T::Adopted {
                finish_stop: true, ..
            },
        ) => S::Stopping {
            reason: StopReason::Recovered,
        },
        (S::Recorded { .. }, T::Adopted { paused, .. }) => S::Running { paused },
        (S::Creating, T::Started) => S::Running { paused: false },
        (S::Creating, T::StartFailed { error }) => S::StartFailed { error },
        (S::Running { .. }, T::Paused) => S::Running { paused: true },
        (S::Running { .. }, T::Resumed) => S::Running { paused: false },
        (S::Running { paused }, T::DeadlineSet { .. }) => S::Running { paused: *paused },
        (S::Running { paused }, T::LimitsUpdated { .. }) => S::Running { paused: *paused },
        (S::Stopped { report }, T::RestartSettled { .. }) => S::Stopped {
            report: report.clone(),
        },
        (S::Running { .. }, T::StopBegun { reason }) => S::Stopping { reason },
        (S::Stopping { .. }, T::Removed { report }) => S::Stopped { report },
        (S::Stopping { .. }, T::KillStuck { report }) => S::Quarantined { report },
        (S::Quarantined { report }, T::Drained) => S::Stopped {
            report: report.clone(),
        },
        (S::Stopping { .. } | S::Quarantined { .. }, T::StopFailed { error, report }) => {
            S::StopFailed { error, report }
        }
        (from, t) => {
            return Err(InvalidTransition {
                from: Box::new(from.clone()),
                transition: t.name(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reason: StopReason) -> StopReport {
        StopReport {
            reason,
            signalled: 1,
            signal_ms: 0.0,
            grace_ms: 0.0,
            killed_after_grace: 0,
            killed: Vec::new(),
            kill_ms: 0.0,
            remove_ms: 0.0,
            rmdir_fallback: false,
            pids_frozen: false,
            total_ms: 1.0,
            cpu_usage_usec: None,
            memory_peak: None,
            oom_kills: None,
            oom_group_kills: None,
            stuck: Vec::new(),
            error: None,
        }
    }

    /// One state of every variant (both `paused` values of `Running`).
    fn states() -> Vec<LifecycleState> {
        use LifecycleState as S;
        let r = report(StopReason::Requested);
        vec![
            S::Recorded {
                state: State::Running,
            },
            S::Creating,
            S::Running { paused: false },
            S::Running { paused: true },
            S::Stopping {
                reason: StopReason::Requested,
            },
            S::Stopped { report: r.clone() },
            S::StartFailed { error: "e".into() },
            S::StopFailed {
                error: "e".into(),
                report: r.clone(),
            },
            S::Quarantined { report: r },
        ]
    }

    /// One transition of every variant (every combination of `Adopted`'s flags).
    fn transitions() -> Vec<Transition> {
        use Transition as T;
        let r = report(StopReason::Killed);
        let mut v = Vec::new();
        for paused in [false, true] {
            for finish_stop in [false, true] {
                v.push(T::Adopted {
                    paused,
                    finish_stop,
                });
            }
        }
        v.extend([
            T::Started,
            T::StartFailed { error: "e".into() },
            T::Paused,
            T::Resumed,
            T::DeadlineSet { at_ms: 1 },
            T::RestartSettled { made: false },
            T::LimitsUpdated {
                limits: Box::default(),
            },
            T::StopBegun {
                reason: StopReason::Killed,
            },
            T::Removed { report: r.clone() },
            T::KillStuck { report: r.clone() },
            T::Drained,
            T::StopFailed {
                error: "e".into(),
                report: r,
            },
        ]);
        v
    }

    #[test]
    fn allowed_and_refused_transitions() {
        use LifecycleState as S;
        use Transition as T;
        let to = |from: &S, t: T| transition(from, t).map(|s| s.state());
        assert_eq!(to(&S::Creating, T::Started), Ok(State::Running));
        let running = S::Running { paused: false };
        let stop = || T::StopBegun {
            reason: StopReason::Requested,
        };
        assert_eq!(to(&running, stop()), Ok(State::Stopping));
        let stopping = S::Stopping {
            reason: StopReason::Requested,
        };
        let r = report(StopReason::Requested);
        assert_eq!(
            to(&stopping, T::KillStuck { report: r.clone() }),
            Ok(State::Quarantined)
        );
        let quarantined = S::Quarantined { report: r.clone() };
        assert_eq!(to(&quarantined, T::Drained), Ok(State::Stopped));
        // Terminal: nothing moves out; a stopped lifecycle only loses its pending restart.
        for s in states().into_iter().filter(|s| s.state().is_terminal()) {
            for t in transitions() {
                match (&s, &t) {
                    (S::Stopped { .. }, T::RestartSettled { .. }) => {
                        assert_eq!(transition(&s, t.clone()), Ok(s.clone()))
                    }
                    _ => assert!(transition(&s, t.clone()).is_err(), "{s:?} {t:?}"),
                }
            }
        }
        assert!(transition(&running, T::Started).is_err());
        assert!(transition(&S::Creating, stop()).is_err());
    }

    /// The arrows of the diagram (module docs and ARCHITECTURE.md), by name.
    const ARROWS: [(&str, &str, &str); 15] = [
        ("Recorded", "Adopted", "Running"),
        ("Recorded", "Adopted", "Stopping"),
        ("Creating", "Started", "Running"),
        ("Creating", "StartFailed", "StartFailed"),
        ("Running", "Paused", "Running"),
        ("Running", "Resumed", "Running"),
        ("Running", "DeadlineSet", "Running"),
        ("Running", "LimitsUpdated", "Running"),
        ("Running", "StopBegun", "Stopping"),
        ("Stopping", "Removed", "Stopped"),
        ("Stopped", "RestartSettled", "Stopped"),
        ("Stopping", "KillStuck", "Quarantined"),
        ("Stopping", "StopFailed", "StopFailed"),
        ("Quarantined", "Drained", "Stopped"),
        ("Quarantined", "StopFailed", "StopFailed"),
    ];

    /// Every (state, transition) pair that `transition` allows, by name.
    fn allowed() -> Vec<(&'static str, &'static str, &'static str)> {
        let mut allowed = Vec::new();
        for s in states() {
            for t in transitions() {
                let name = t.name();
                match transition(&s, t) {
                    Ok(to) => allowed.push((s.name(), name, to.name())),
                    Err(e) => {
                        assert_eq!(*e.from, s, "a refused transition leaves the state");
                        assert_eq!(e.transition, name);
                    }
                }
            }
        }
        allowed.sort();
        allowed.dedup();
        allowed
    }

    /// The arrows `transition` allows are exactly those of the diagram.
    #[test]
    fn transitions_are_exactly_the_documented_arrows() {
        let mut documented = ARROWS.to_vec();
        documented.sort();
        assert_eq!(allowed(), documented);
    }

    /// ARCHITECTURE.md's transition table lists exactly the arrows `transition` allows.
    #[test]
    fn architecture_table_lists_exactly_the_arrows() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ARCHITECTURE.md");
        let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let section = doc
            .split("## Lifecycle state machine")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("ARCHITECTURE.md has a lifecycle section");
        let strip = |c: &str| c.trim().trim_matches('`').to_owned();
        let mut rows: Vec<(String, String, String)> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                let (from, to) = cells[2]
                    .split_once('→')
                    .unwrap_or_else(|| panic!("no arrow in row {l:?}"));
                (strip(from), strip(cells[1]), strip(to))
            })
            .collect();
        rows.sort();
        let allowed: Vec<(String, String, String)> = allowed()
            .into_iter()
            .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
            .collect();
        assert_eq!(
            rows, allowed,
            "ARCHITECTURE.md's table and `transition` differ"
        );
    }

    /// The data each arrow carries into the state it leads to.
    #[test]
    fn transitions_carry_their_data() {
        use LifecycleState as S;
        use Transition as T;
        let adopted = |paused, finish_stop| {
            transition(
                &S::Recorded {
                    state: State::Stopping,
                },
                T::Adopted {
                    paused,
                    finish_stop,
                },
            )
        };
        assert_eq!(adopted(true, false), Ok(S::Running { paused: true }));
        assert_eq!(
            adopted(true, true),
            Ok(S::Stopping {
                reason: StopReason::Recovered
            })
        );
        let running = S::Running { paused: false };
        let paused = transition(&running, T::Paused).unwrap();
        assert!(paused.paused());
        assert_eq!(transition(&paused, T::Resumed), Ok(running.clone()));
        let stopping = transition(
            &paused,
            T::StopBegun {
                reason: StopReason::MainExited,
            },
        )
        .unwrap();
        assert!(!stopping.paused(), "a stop clears `paused`");
        assert_eq!(stopping.stop_reason(), Some(StopReason::MainExited));
        let mut stuck = report(StopReason::MainExited);
        stuck.stuck.push(crate::StuckProcess {
            pid: 7,
            comm: None,
            state: Some("D".into()),
            wchan: None,
        });
        let quarantined = transition(
            &stopping,
            T::KillStuck {
                report: stuck.clone(),
            },
        )
        .unwrap();
        assert_eq!(quarantined.state(), State::Quarantined);
        let drained = transition(&quarantined, T::Drained).unwrap();
        assert_eq!(drained.report(), Some(&stuck), "the quarantine's report");
        assert_eq!(drained.stop_reason(), Some(StopReason::MainExited));
        let failed = transition(
            &quarantined,
            T::StopFailed {
                error: "rmdir".into(),
                report: stuck.clone(),
            },
        )
        .unwrap();
        assert_eq!(
            (failed.state(), failed.error()),
            (State::Failed, Some("rmdir"))
        );
        let start_failed = transition(&S::Creating, T::StartFailed { error: "x".into() }).unwrap();
        assert_eq!(start_failed.state(), State::Failed);
        assert_eq!(start_failed.report(), None);
        for s in [&drained, &failed, &start_failed] {
            assert!(s.state().is_terminal(), "{s}");
        }
        assert_eq!(
            S::Recorded {
                state: State::Quarantined
            }
            .state(),
            State::Quarantined
        );
    }
}
