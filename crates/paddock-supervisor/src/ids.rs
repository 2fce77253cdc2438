//! Lifecycle IDs, and the cgroup names made of a sandbox ID and a lifecycle ID.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

    /// Parses 16 hex digits.
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
