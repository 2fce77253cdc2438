//! Who owns a sandbox cgroup: the value of its [`OWNER_XATTR`](crate::OWNER_XATTR) tag.
//!
//! Every paddock instance that creates cgroups under a managed root tags each one, right
//! after `mkdir` and before anything runs in it, with its own identity, so that several
//! instances can share a root without touching each other's sandboxes:
//!
//! | tag | owner | when is it provably gone? |
//! |---|---|---|
//! | `daemon:<32 hex digits>` | a `paddock serve` daemon; the identity is kept in its state directory, so it survives restarts | never: a stopped daemon's sandboxes wait for it to restart and adopt them |
//! | `pid:<pid>:<start time>:<pid namespace>` | one process for its lifetime (`paddock run`, or a library user with the default configuration) | when no process of that PID with that start time (field 22 of `/proc/<pid>/stat`) lives, checked from the same PID namespace |
//! | `paddock` | an instance of paddock from before owners were per instance ([`Owner::Legacy`]) | cannot be told |
//!
//! A checker in another PID namespace cannot verify a `pid:` owner and treats it as alive.

use std::fmt;

/// The tag paddock wrote on every cgroup before each instance had an identity of its own.
pub const LEGACY_OWNER_TAG: &str = "paddock";

/// An owner tag, parsed. [`fmt::Display`] gives the tag back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A daemon, by the identity kept in its state directory (32 lowercase hex digits).
    Daemon(String),
    /// One process for its lifetime: its PID, its start time (clock ticks since boot,
    /// field 22 of `/proc/<pid>/stat`) and the inode of its PID namespace.
    Process {
        /// The PID, in the namespace `pid_ns`.
        pid: i32,
        /// Its start time, which tells it from a later process that reuses the PID.
        start_time: u64,
        /// The inode number of its PID namespace (`/proc/self/ns/pid`).
        pid_ns: u64,
    },
    /// [`LEGACY_OWNER_TAG`]: some paddock from before per-instance owners.
    Legacy,
    /// A tag paddock never writes (kept verbatim).
    Unknown(String),
}

/// Whether the owner of a cgroup is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It lives (or may live: it cannot be checked from here).
    Alive,
    /// It is provably gone: its cgroups are nobody's.
    Dead,
}

impl Owner {
    /// Parses a tag; anything paddock does not write is [`Owner::Unknown`].
    pub fn parse(tag: &str) -> Owner {
        if tag == LEGACY_OWNER_TAG {
            return Owner::Legacy;
        }
        if let Some(id) = tag.strip_prefix("daemon:")
            && is_daemon_id(id)
        {
            return Owner::Daemon(id.to_owned());
        }
        if let Some(rest) = tag.strip_prefix("pid:") {
            let f: Vec<Option<u64>> = rest.split(':').map(canonical_number).collect();
            if let [Some(pid), Some(start_time), Some(pid_ns)] = f[..]
                && let Ok(pid) = i32::try_from(pid)
                && pid > 0
            {
                return Owner::Process {
                    pid,
                    start_time,
                    pid_ns,
                };
            }
        }
        Owner::Unknown(tag.to_owned())
    }

    /// The owner that is this process for its lifetime, or `None` when `/proc` does not
    /// say this process's start time or PID namespace.
    pub fn this_process() -> Option<Owner> {
        let pid = std::process::id() as i32;
        let start_time = crate::procinfo::start_time(pid)?;
        let pid_ns = own_pid_ns()?;
        Some(Owner::Process {
            pid,
            start_time,
            pid_ns,
        })
    }

    /// A daemon owner; `None` unless `id` is 32 lowercase hex digits.
    pub fn daemon(id: &str) -> Option<Owner> {
        is_daemon_id(id).then(|| Owner::Daemon(id.to_owned()))
    }

    /// Whether the owner is still there. Only a [`Owner::Process`] can be proved gone: when
    /// no process with its PID and start time lives (a zombie counts as gone), checked from
    /// its own PID namespace. Daemons, legacy and unknown tags are always
    /// [`Liveness::Alive`]: nothing proves them gone.
    pub fn liveness(&self) -> Liveness {
        let Owner::Process {
            pid,
            start_time,
            pid_ns,
        } = self
        else {
            return Liveness::Alive;
        };
        if own_pid_ns() != Some(*pid_ns) {
            return Liveness::Alive;
        }
        match process_start_and_state(*pid) {
            Some((st, state)) if st == *start_time && state != 'Z' && state != 'X' => {
                Liveness::Alive
            }
            _ => Liveness::Dead,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Daemon(id) => write!(f, "daemon:{id}"),
            Owner::Process {
                pid,
                start_time,
                pid_ns,
            } => write!(f, "pid:{pid}:{start_time}:{pid_ns}"),
            Owner::Legacy => f.write_str(LEGACY_OWNER_TAG),
            Owner::Unknown(s) => f.write_str(s),
        }
    }
}

/// Whether `id` is a daemon identity: 32 lowercase hex digits.
pub fn is_daemon_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A decimal number as paddock writes it (digits only, no leading zero), so that each
/// owner has exactly one tag.
fn canonical_number(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The inode number of this process's PID namespace.
fn own_pid_ns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// Start time and state letter of `pid`, from one read of `/proc/<pid>/stat`.
fn process_start_and_state(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some((
        crate::procinfo::parse_stat_starttime(&stat)?,
        crate::procinfo::parse_stat_state(&stat)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let d = Owner::daemon("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(d.to_string(), "daemon:0123456789abcdef0123456789abcdef");
        assert_eq!(Owner::parse(&d.to_string()), d);
        let p = Owner::Process {
            pid: 42,
            start_time: 1234,
            pid_ns: 4026531836,
        };
        assert_eq!(p.to_string(), "pid:42:1234:4026531836");
        assert_eq!(Owner::parse(&p.to_string()), p);
        assert_eq!(Owner::parse("paddock"), Owner::Legacy);
        assert_eq!(Owner::Legacy.to_string(), "paddock");
        for odd in [
            "",
            "daemon:",
            "daemon:0123456789ABCDEF0123456789ABCDEF",
            "daemon:0123",
            "pid:1:2",
            "pid:1:2:3:4",
            "pid:-1:2:3",
            "pid:0:2:3",
            "pid:+1:2:3",
            "pid:01:2:3",
            "pid:x:2:3",
            "paddock:node-1",
        ] {
            assert_eq!(Owner::parse(odd), Owner::Unknown(odd.into()), "{odd:?}");
        }
        assert!(Owner::daemon("xyz").is_none());
    }

    #[test]
    fn liveness_of_processes() {
        let me = Owner::this_process().expect("/proc says who we are");
        assert_eq!(me.liveness(), Liveness::Alive);
        let Owner::Process {
            pid,
            start_time,
            pid_ns,
        } = me
        else {
            unreachable!()
        };
        // The same PID with another start time is a later process: the owner is gone.
        let reused = Owner::Process {
            pid,
            start_time: start_time + 1,
            pid_ns,
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        // A PID that is not in use (beyond pid_max).
        let gone = Owner::Process {
            pid: i32::MAX,
            start_time,
            pid_ns,
        };
        assert_eq!(gone.liveness(), Liveness::Dead);
        // Another PID namespace cannot be checked from here: assumed alive.
        let elsewhere = Owner::Process {
            pid: i32::MAX,
            start_time,
            pid_ns: pid_ns + 1,
        };
        assert_eq!(elsewhere.liveness(), Liveness::Alive);
        for o in [
            Owner::Legacy,
            Owner::Unknown("x".into()),
            Owner::daemon("0123456789abcdef0123456789abcdef").unwrap(),
        ] {
            assert_eq!(o.liveness(), Liveness::Alive, "{o}");
        }
    }
}
