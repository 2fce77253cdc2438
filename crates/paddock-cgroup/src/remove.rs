//! Remove: rmdir as the silent fast path, the kill as the backstop (see
//! `docs/background.md` for where that contract comes from).
//!
//! 1. `rmdir`, silently. Success or `ENOENT` ends it.
//! 2. On `EBUSY`: a WARN log `cgroup rmdir failed, falling back to cgroup.kill` with the
//!    original errno, the path and the sandbox name, so every leak is a queryable signal;
//!    then the verified kill of [`crate::kill`]; then the subtree is removed bottom-up
//!    (cgroups the payload created first), retrying on `EBUSY` driven by `cgroup.events`
//!    plus a short bounded backoff, until the deadline.
//! 3. Any other error is returned with path and errno.
//!
//! Nothing is marked removed before removal succeeded; a failed or cancelled removal can
//! simply be run again, and removing a removed cgroup succeeds.

use std::path::PathBuf;
use std::time::Duration;

use rustix::io::Errno;
use tokio::time::Instant;

use crate::cgroup::Cgroup;
use crate::dir::Dir;
use crate::kill::{KillOptions, KillReport};
use crate::{Error, Result};

/// The message logged at WARN when the rmdir fast path fails; kept word for word from the
/// fix paddock is built around, so existing alerts keep matching.
pub const RMDIR_FALLBACK_MESSAGE: &str = "cgroup rmdir failed, falling back to cgroup.kill";

/// How to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Deadline for the whole removal, kill included. Default 2 s.
    pub timeout: Duration,
    /// Use the freeze-and-signal kill even where `cgroup.kill` works (for tests).
    pub force_kill_fallback: bool,
    /// The sandbox this cgroup belongs to, for the log line.
    pub sandbox: Option<String>,
}

impl Default for RemoveOptions {
    fn default() -> Self {
        RemoveOptions {
            timeout: Duration::from_secs(2),
            force_kill_fallback: false,
            sandbox: None,
        }
    }
}

/// What a successful removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    /// The first `rmdir` succeeded.
    pub fast_path: bool,
    /// The cgroup did not exist any more.
    pub already_gone: bool,
    /// The kill that ran after `EBUSY`, if it did.
    pub kill: Option<KillReport>,
    /// Cgroups removed, the sandbox's own included.
    pub cgroups_removed: usize,
    /// Time the removal took.
    pub elapsed: Duration,
}

impl Cgroup {
    /// Removes the cgroup and everything under it, killing what still runs there. See
    /// the module documentation for the exact contract.
    pub async fn remove(&self, opts: &RemoveOptions) -> Result<RemoveReport> {
        let start = Instant::now();
        let mut report = RemoveReport {
            fast_path: false,
            already_gone: false,
            kill: None,
            cgroups_removed: 0,
            elapsed: Duration::ZERO,
        };
        match self.parent.rmdir_child(self.name.as_str()) {
            Ok(()) => {
                self.counters.rmdir_fast();
                report.fast_path = true;
                report.cgroups_removed = 1;
                report.elapsed = start.elapsed();
                return Ok(report);
            }
            Err(Errno::NOENT) => {
                report.already_gone = true;
                report.elapsed = start.elapsed();
                return Ok(report);
            }
            Err(Errno::BUSY) => {}
            Err(e) => {
                self.counters.remove_failure();
                return Err(Error::io("rmdir", self.path(), e));
            }
        }
        tracing::warn!(
            error = %Errno::BUSY,
            errno = Errno::BUSY.raw_os_error(),
            path = %self.path().display(),
            cgroup = %self.name,
            sandbox = opts.sandbox.as_deref().unwrap_or(""),
            "{RMDIR_FALLBACK_MESSAGE}"
        );
        self.counters.rmdir_fallback();
        let res = self.remove_slow(opts, start, &mut report).await;
        if res.is_err() {
            self.counters.remove_failure();
        }
        res.map(|()| {
            report.elapsed = start.elapsed();
            report
        })
    }

    async fn remove_slow(
        &self,
        opts: &RemoveOptions,
        start: Instant,
        report: &mut RemoveReport,
    ) -> Result<()> {
        let deadline = start + opts.timeout;
        let watch = match self.watch() {
            Ok(w) => w,
            Err(e) if matches!(e.errno(), Some(Errno::NOENT) | Some(Errno::NODEV)) => {
                report.already_gone = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let kill_opts = KillOptions {
            timeout: deadline.saturating_duration_since(Instant::now()),
            force_fallback: opts.force_kill_fallback,
            ..Default::default()
        };
        let kill = self.kill_watched(&watch, &kill_opts).await?;
        if kill.found > 0 {
            tracing::warn!(
                path = %self.path().display(),
                cgroup = %self.name,
                sandbox = opts.sandbox.as_deref().unwrap_or(""),
                killed = kill.found,
                "killed processes left in a cgroup being removed"
            );
        }
        report.kill = Some(kill);
        let mut backoff = Duration::from_millis(1);
        loop {
            let last = match remove_tree(&self.dir) {
                Ok(n) => match self.parent.rmdir_child(self.name.as_str()) {
                    Ok(()) | Err(Errno::NOENT) => {
                        report.cgroups_removed += n + 1;
                        return Ok(());
                    }
                    Err(e) => {
                        report.cgroups_removed += n;
                        (e, self.path().to_owned())
                    }
                },
                Err((e, path)) => (e, path),
            };
            if last.0 != Errno::BUSY {
                return Err(Error::io("rmdir", last.1, last.0));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::RemoveTimeout {
                    path: self.path().to_owned(),
                    elapsed: now - start,
                    last: Box::new(Error::io("rmdir", last.1, last.0)),
                });
            }
            // Still busy: either a process is still exiting (wait for populated 0, killing
            // again if anything new appeared) or the kernel has not finished releasing an
            // exited task (a short bounded backoff).
            let left = deadline - now;
            if watch.read()?.populated {
                let again = KillOptions {
                    timeout: left,
                    force_fallback: opts.force_kill_fallback,
                    ..Default::default()
                };
                self.kill_watched(&watch, &again).await?;
            } else {
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Removes every descendant of `dir`, deepest first. Returns how many were removed, or the
/// first error with the path it happened at.
fn remove_tree(dir: &Dir) -> std::result::Result<usize, (Errno, PathBuf)> {
    let mut n = 0;
    let children = dir
        .children()
        .map_err(|e| (e.errno().unwrap_or(Errno::IO), dir.path.clone()))?;
    for child in children {
        let sub = match dir.open_child(&child) {
            Ok(d) => d,
            Err(e) if matches!(e.errno(), Some(Errno::NOENT)) => continue,
            Err(e) => return Err((e.errno().unwrap_or(Errno::IO), dir.path.join(&child))),
        };
        // A payload may have frozen its own child; an empty frozen cgroup can be removed,
        // but thaw it anyway so nothing stays frozen if removal fails.
        let _ = sub.write("cgroup.freeze", "0");
        n += remove_tree(&sub)?;
        match dir.rmdir_child(&child) {
            Ok(()) => n += 1,
            Err(Errno::NOENT) => {}
            Err(e) => return Err((e, dir.path.join(&child))),
        }
    }
    Ok(n)
}
