//! The lifecycle state machine: explicit states and the one function that moves between
//! them.
//!
//! ```text
//!              Started               StopBegun               Removed
//!  Creating ──────────▶ Running ─────────────▶ Stopping ───────────────▶ Stopped
//!     │                                         │    │                      ▲
//!     │                                         │    │ KillStuck            │
//!     │                                         │    ▼                      │ Drained
//!     │ StartFailed                  StopFailed │  Quarantined ─────────────┘
//!     │                                         │    │
//!     │                                         │    │ StopFailed
//!     ▼                                         │    │
//!   Failed ◀────────────────────────────────────┴────┘
//! ```
//!
//! `Failed` and `Stopped` are terminal. `Quarantined` means processes survived the kill
//! deadline (uninterruptible sleep); the sandbox keeps its cgroup with `pids.max = 0`, is
//! watched, and becomes `Stopped` when they are gone. Pausing is an attribute of a running
//! sandbox, not a state.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A lifecycle state.
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

/// What happened, as input to [`transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The main process was spawned.
    Started,
    /// Creating the cgroup or spawning failed (everything was cleaned up).
    StartFailed,
    /// A stop began (requested, or the main process exited).
    StopBegun,
    /// The cgroup is empty and removed.
    Removed,
    /// Processes survived the kill deadline.
    KillStuck,
    /// The stuck processes are gone and the cgroup removed.
    Drained,
    /// Stopping failed with an error other than stuck processes.
    StopFailed,
}

/// A transition that is not allowed from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid lifecycle transition {event:?} from state {from}")]
pub struct InvalidTransition {
    /// The state the sandbox was in.
    pub from: State,
    /// The event that does not apply.
    pub event: Transition,
}

/// The one transition function. Every state change of every sandbox goes through it.
pub fn transition(from: State, event: Transition) -> Result<State, InvalidTransition> {
    use State::*;
    use Transition::*;
    let to = match (from, event) {
        (Creating, Started) => Running,
        (Creating, StartFailed) => Failed,
        (Running, StopBegun) => Stopping,
        (Stopping, Removed) => Stopped,
        (Stopping, KillStuck) => Quarantined,
        (Stopping, StopFailed) => Failed,
        (Quarantined, Drained) => Stopped,
        (Quarantined, StopFailed) => Failed,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// Identifies one start of a sandbox ID. Fresh for every start, unique across supervisor
/// restarts (time-based with a per-process counter), 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LifecycleId(u64);

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl LifecycleId {
    /// A new lifecycle ID.
    pub fn fresh() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        // Microseconds since the epoch shifted left by 12 bits, and strictly increasing
        // within a process: unique within a process, and across restarts as long as the
        // clock does not go back.
        let candidate = micros << 12;
        let prev = COUNTER
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(candidate.max(last + 1))
            })
            .unwrap_or(0);
        LifecycleId(candidate.max(prev + 1))
    }

    /// The raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses 16 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        // Exactly the form `Display` writes: `from_str_radix` alone would also take a sign
        // and upper-case digits.
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(LifecycleId)
    }
}

impl fmt::Display for LifecycleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl TryFrom<String> for LifecycleId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        LifecycleId::parse(&s).ok_or_else(|| format!("lifecycle ID {s:?} is not 16 hex digits"))
    }
}

impl From<LifecycleId> for String {
    fn from(l: LifecycleId) -> String {
        l.to_string()
    }
}

/// Separator between sandbox ID and lifecycle ID in cgroup names: `<id>@<lifecycle>`.
pub const CGROUP_SEPARATOR: char = '@';

/// The cgroup name of one lifecycle.
pub fn cgroup_name(id: &str, lc: LifecycleId) -> String {
    format!("{id}{CGROUP_SEPARATOR}{lc}")
}

/// Splits a cgroup name made by [`cgroup_name`]; `None` for names paddock did not make.
pub fn parse_cgroup_name(name: &str) -> Option<(&str, LifecycleId)> {
    let (id, lc) = name.rsplit_once(CGROUP_SEPARATOR)?;
    Some((id, LifecycleId::parse(lc)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_and_refused_transitions() {
        use State::*;
        use Transition::*;
        assert_eq!(transition(Creating, Started), Ok(Running));
        assert_eq!(transition(Running, StopBegun), Ok(Stopping));
        assert_eq!(transition(Stopping, KillStuck), Ok(Quarantined));
        assert_eq!(transition(Quarantined, Drained), Ok(Stopped));
        let all = [
            Started,
            StartFailed,
            StopBegun,
            Removed,
            KillStuck,
            Drained,
            StopFailed,
        ];
        for s in [Stopped, Failed] {
            for e in all {
                assert!(transition(s, e).is_err(), "{s:?} {e:?}");
            }
        }
        assert!(transition(Running, Started).is_err());
        assert!(transition(Creating, StopBegun).is_err());
    }

    /// The arrows of the module's diagram (and of ARCHITECTURE.md), and no others.
    #[test]
    fn transitions_are_exactly_the_documented_arrows() {
        use State::*;
        use Transition::*;
        let documented = [
            (Creating, Started, Running),
            (Creating, StartFailed, Failed),
            (Running, StopBegun, Stopping),
            (Stopping, Removed, Stopped),
            (Stopping, KillStuck, Quarantined),
            (Stopping, StopFailed, Failed),
            (Quarantined, Drained, Stopped),
            (Quarantined, StopFailed, Failed),
        ];
        let events = [
            Started,
            StartFailed,
            StopBegun,
            Removed,
            KillStuck,
            Drained,
            StopFailed,
        ];
        let mut allowed = Vec::new();
        for s in State::ALL {
            for e in events {
                if let Ok(to) = transition(s, e) {
                    allowed.push((s, e, to));
                }
            }
        }
        assert_eq!(allowed, documented);
    }

    #[test]
    fn lifecycle_ids_are_unique_and_roundtrip() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(LifecycleId::fresh()));
        }
        let l = LifecycleId::fresh();
        assert_eq!(LifecycleId::parse(&l.to_string()), Some(l));
        let name = cgroup_name("web@1", l);
        assert_eq!(parse_cgroup_name(&name), Some(("web@1", l)));
        assert_eq!(parse_cgroup_name("other"), None);
        assert_eq!(parse_cgroup_name("x@123"), None);
    }

    /// Only the form `Display` writes: 16 lower-case hex digits, no sign.
    #[test]
    fn lifecycle_ids_parse_strictly() {
        assert!(LifecycleId::parse("0123456789abcdef").is_some());
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcdeF",
            "+123456789abcdef",
            "-123456789abcdef",
            " 123456789abcdef",
            "0123456789abcde",
            "0123456789abcdef0",
            "g123456789abcdef",
            "",
        ] {
            assert_eq!(LifecycleId::parse(bad), None, "{bad:?}");
        }
    }
}
