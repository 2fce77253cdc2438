//! The error type of the cgroup layer.
//!
//! Every error names the operation, the path it was applied to and the errno, and where it
//! can, says what the user can do about it.

use std::fmt;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::procinfo::ProcInfo;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the cgroup layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a cgroup file or directory failed.
    #[error("{op} {}: {errno}{}", path.display(), Hint(*errno, op, path))]
    Io {
        /// What was being done, for example `rmdir` or `write cgroup.kill`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the kernel returned.
        errno: Errno,
    },

    /// No cgroup2 hierarchy is mounted.
    #[error(
        "no cgroup2 hierarchy is mounted (looked in /proc/self/mountinfo); paddock needs cgroup v2: \
         mount it with `mount -t cgroup2 none /sys/fs/cgroup` (or /sys/fs/cgroup/unified on a hybrid host)"
    )]
    NoCgroup2,

    /// A cgroup name was rejected before anything was created.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name as given (lossy UTF-8).
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A cgroup of that name already exists.
    #[error("cgroup {} already exists; pick another name or remove it first", path.display())]
    AlreadyExists {
        /// Its path.
        path: PathBuf,
    },

    /// A controller that was asked for is not offered by the cgroup v2 hierarchy here.
    #[error("controller {controller:?} is not available at {}: {detail}", path.display())]
    ControllerUnavailable {
        /// The controller, for example `memory`.
        controller: String,
        /// The cgroup where it was needed.
        path: PathBuf,
        /// Where it is instead, and what to do.
        detail: String,
    },

    /// A kill did not empty the cgroup before its deadline.
    #[error(
        "kill {}: processes still present after {:?}: {}; processes in uninterruptible sleep \
         (state D, or frozen by a cgroup v1 freezer) leave only when what they wait for completes",
        path.display(), elapsed, Remaining(remaining, list_error.as_deref())
    )]
    KillTimeout {
        /// The cgroup.
        path: PathBuf,
        /// How long the kill ran.
        elapsed: std::time::Duration,
        /// The processes still there (empty when they could not be listed, see
        /// `list_error`).
        remaining: Vec<ProcInfo>,
        /// Why the remaining processes could not be listed, if they could not.
        list_error: Option<Box<Error>>,
    },

    /// Removal did not finish before its deadline.
    #[error("remove {}: still busy after {:?}: {last}", path.display(), elapsed)]
    RemoveTimeout {
        /// The cgroup.
        path: PathBuf,
        /// How long removal ran.
        elapsed: std::time::Duration,
        /// The last error seen.
        last: Box<Error>,
    },

    /// A cgroup interface file held something that could not be parsed.
    #[error("parse {what}: {reason} in {input:?}")]
    Parse {
        /// What was being parsed, for example `cpu.stat`.
        what: &'static str,
        /// The offending input (shortened).
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process holds the managed root's exclusive lock ([`crate::Root::lock_exclusive`]).
    #[error(
        "the managed cgroup root {} is locked by another paddock daemon{}: one daemon manages a root \
         at a time; stop that daemon first, or give this one another --cgroup-root",
        path.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    RootLocked {
        /// The root.
        path: PathBuf,
        /// The PID holding the lock, when `/proc/locks` says.
        holder: Option<i32>,
    },

    /// A value given by the caller is out of range.
    #[error("invalid value for {what}: {reason}")]
    InvalidValue {
        /// Which setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Error::Io {
            op,
            path: path.into(),
            errno,
        }
    }

    /// The errno, for I/O errors.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Io { errno, .. } => Some(*errno),
            Error::RemoveTimeout { last, .. } => last.errno(),
            _ => None,
        }
    }

    pub(crate) fn parse(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        let mut input = input.to_owned();
        if input.len() > 120 {
            let mut cut = 120;
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            input.truncate(cut);
            input.push('…');
        }
        Error::Parse {
            what,
            input,
            reason: reason.into(),
        }
    }
}

struct Hint<'a>(Errno, &'static str, &'a std::path::Path);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.0 {
            Errno::ACCESS | Errno::PERM => {
                "; run as root or give paddock a delegated cgroup subtree (Delegate=yes)"
            }
            Errno::ROFS => "; the cgroup2 mount is read-only here (inside a container?)",
            Errno::BUSY if self.1 == "write" && self.2.ends_with("cgroup.subtree_control") => {
                "; the cgroup has processes of its own (no-internal-process rule): move them into a leaf first"
            }
            Errno::NOSPC if self.1 == "mkdir" => {
                "; too many cgroups (cgroup.max.descendants, or dying cgroups still holding IDs)"
            }
            Errno::AGAIN if self.1 == "mkdir" => {
                "; cgroup.max.descendants or cgroup.max.depth reached"
            }
            _ => "",
        };
        f.write_str(hint)
    }
}

/// The processes a kill left, or why they could not be listed.
struct Remaining<'a>(&'a [ProcInfo], Option<&'a Error>);

impl fmt::Display for Remaining<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.1 {
            return write!(f, "they could not be listed ({e})");
        }
        write!(f, "{} process(es): ", self.0.len())?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kill_timeout_lists_pid_command_and_state() {
        let e = Error::KillTimeout {
            path: "/sys/fs/cgroup/paddock/sbx".into(),
            elapsed: Duration::from_millis(300),
            remaining: vec![
                ProcInfo {
                    pid: 4242,
                    comm: Some("sleep".into()),
                    state: Some('D'),
                    wchan: Some("hrtimer_nanosleep".into()),
                },
                ProcInfo {
                    pid: 4243,
                    comm: None,
                    state: None,
                    wchan: None,
                },
            ],
            list_error: None,
        };
        let m = e.to_string();
        assert!(m.starts_with("kill /sys/fs/cgroup/paddock/sbx: "), "{m}");
        assert!(m.contains("after 300ms"), "{m}");
        assert!(
            m.contains(
                "2 process(es): pid 4242 (sleep) state D wchan hrtimer_nanosleep, pid 4243;"
            ),
            "{m}"
        );
        assert!(m.contains("uninterruptible sleep"), "{m}");
    }

    #[test]
    fn kill_timeout_says_why_it_cannot_list() {
        let e = Error::KillTimeout {
            path: "/cg".into(),
            elapsed: Duration::from_secs(5),
            remaining: Vec::new(),
            list_error: Some(Box::new(Error::io(
                "read",
                "/cg/cgroup.procs",
                Errno::ACCESS,
            ))),
        };
        let m = e.to_string();
        assert!(
            m.contains("they could not be listed (read /cg/cgroup.procs: Permission denied"),
            "{m}"
        );
        assert!(!m.contains("0 process"), "{m}");
    }
}
