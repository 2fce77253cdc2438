//! Kill: the whole subtree, verified empty.
//!
//! `cgroup.kill` is written, then `populated 0` is awaited on `cgroup.events`; whenever that
//! wait stalls the write is repeated, because a single write issued while a process is in
//! the middle of `fork()` can miss the new child (measured at about 1% on kernel 6.18). The
//! stall timeout starts at [`FIRST_STALL`] and doubles up to [`MAX_STALL`]. Where
//! `cgroup.kill` is missing (kernels before 5.14) or refused (threaded cgroups), the kill
//! freezes the subtree, signals every member by pidfd with SIGKILL, thaws, and repeats until
//! the subtree is empty; a threaded cgroup's members are the processes owning the threads
//! of its `cgroup.threads` (its `cgroup.procs` is refused too). A round dropped or failed
//! while frozen thaws the subtree. Either way the kill ends only when `cgroup.events` says
//! `populated 0`, or at its deadline with an error that lists who is left.

use std::time::Duration;

use rustix::io::Errno;
use rustix::process::Signal;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, ThawOnDrop};
use crate::events::{EventsWatch, ExitWatch};
use crate::procinfo::ProcInfo;
use crate::{Error, Result};

/// First wait for `populated 0` after a `cgroup.kill` write before writing again.
pub const FIRST_STALL: Duration = Duration::from_millis(2);
/// How long the first wait after a `cgroup.kill` write relies on `cgroup.events` alone,
/// before it also tracks the processes' exits by pidfd.
pub const UNTRACKED_WAIT: Duration = Duration::from_millis(1);
/// Longest wait between two `cgroup.kill` writes.
pub const MAX_STALL: Duration = Duration::from_millis(100);

/// How to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillOptions {
    /// Give up (with [`Error::KillTimeout`]) after this long. Default 5 s.
    pub timeout: Duration,
    /// Use the freeze-and-signal fallback even where `cgroup.kill` works (for tests).
    pub force_fallback: bool,
    /// Name (PID and `comm`, in [`KillReport::named`]) up to this many of the processes
    /// found, read from `/proc` just before they are killed. Default 0: a report of who
    /// was killed costs a `/proc` read per process named.
    pub name_first: usize,
}

impl Default for KillOptions {
    fn default() -> Self {
        KillOptions {
            timeout: Duration::from_secs(5),
            force_fallback: false,
            name_first: 0,
        }
    }
}

/// How a kill was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// The subtree was already empty.
    NothingToKill,
    /// `cgroup.kill`.
    CgroupKill,
    /// Freeze, SIGKILL each member by pidfd, thaw.
    FreezeAndSignal,
}

/// A process a kill found and killed, as `/proc` named it just before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    /// Its PID.
    pub pid: i32,
    /// `/proc/<pid>/comm`, if it could still be read.
    pub comm: Option<String>,
}

/// What a successful kill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillReport {
    /// The mechanism used.
    pub method: KillMethod,
    /// Processes in the subtree when the kill started.
    pub found: usize,
    /// `cgroup.kill` writes, or freeze-and-signal rounds.
    pub rounds: u32,
    /// Time from the start of the kill to `populated 0`.
    pub elapsed: Duration,
    /// The first [`KillOptions::name_first`] of the processes found, in the order the
    /// cgroup listed them.
    pub named: Vec<Killed>,
}

enum Outcome {
    Done(u32),
    Unsupported(Errno),
}

impl Cgroup {
    /// Kills every process in the cgroup and its descendants and returns once
    /// `cgroup.events` reports `populated 0`. Bounded by `opts.timeout`; cancel-safe (drop
    /// the future: nothing is left half-done that a second kill would not finish).
    pub async fn kill(&self, opts: &KillOptions) -> Result<KillReport> {
        let watch = match self.watch() {
            Ok(w) => w,
            Err(e) if matches!(e.errno(), Some(Errno::NOENT) | Some(Errno::NODEV)) => {
                return Ok(KillReport {
                    method: KillMethod::NothingToKill,
                    found: 0,
                    rounds: 0,
                    elapsed: Duration::ZERO,
                    named: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        self.kill_watched(&watch, opts).await
    }

    /// [`Cgroup::kill`] with a caller's already-open [`EventsWatch`] of this cgroup (saves
    /// opening and registering `cgroup.events` again).
    pub async fn kill_watched(
        &self,
        watch: &EventsWatch,
        opts: &KillOptions,
    ) -> Result<KillReport> {
        let start = Instant::now();
        let deadline = start + opts.timeout;
        let report = |method, found, rounds, named| KillReport {
            method,
            found,
            rounds,
            elapsed: start.elapsed(),
            named,
        };
        // The process list, read anyway to count, says whether there is anything to kill;
        // `cgroup.events` is asked only when it is empty (a process may be on its way in).
        let pids = self.procs_recursive()?;
        if pids.is_empty() && !watch.read()?.populated {
            return Ok(report(KillMethod::NothingToKill, 0, 0, Vec::new()));
        }
        let found = pids.len();
        let named: Vec<Killed> = pids
            .iter()
            .take(opts.name_first)
            .map(|&pid| Killed {
                pid,
                comm: crate::procinfo::comm(pid),
            })
            .collect();
        self.counters.killed(found);
        // The exit watch is built only if the first wait after a kill write takes longer
        // than `UNTRACKED_WAIT`, while the kernel is already tearing the processes down (a
        // process that has exited by then simply polls ready).
        let mut exits = None;
        if !opts.force_fallback {
            match self
                .kill_kernel(watch, &pids, &mut exits, start, deadline)
                .await?
            {
                Outcome::Done(rounds) => {
                    return Ok(report(KillMethod::CgroupKill, found, rounds, named));
                }
                Outcome::Unsupported(errno) => {
                    tracing::info!(
                        cgroup = %self.path().display(), error = %errno,
                        "cgroup.kill unavailable, killing by freeze and pidfd signals"
                    );
                }
            }
        }
        self.counters.kill_freeze_fallback();
        let exits = exits.unwrap_or_else(|| ExitWatch::for_pids(&pids));
        let rounds = self.kill_freeze(watch, &exits, start, deadline).await?;
        Ok(report(KillMethod::FreezeAndSignal, found, rounds, named))
    }

    async fn kill_kernel(
        &self,
        watch: &EventsWatch,
        pids: &[i32],
        exits: &mut Option<ExitWatch>,
        start: Instant,
        deadline: Instant,
    ) -> Result<Outcome> {
        let mut stall = FIRST_STALL;
        let mut writes = 0u32;
        // Opened once for every write of this kill.
        let kill_file = match self.dir.open_file("cgroup.kill") {
            Ok(f) => f,
            Err(e) => match e.errno() {
                // No cgroup.kill although the cgroup exists: a kernel before 5.14. (Asked of
                // cgroup.events, which threaded cgroups can read, unlike cgroup.procs.)
                Some(Errno::NOENT) if self.dir.read_opt("cgroup.events")?.is_some() => {
                    return Ok(Outcome::Unsupported(Errno::NOENT));
                }
                // The cgroup itself is gone.
                Some(Errno::NOENT) | Some(Errno::NODEV) => return Ok(Outcome::Done(writes)),
                _ => return Err(e),
            },
        };
        loop {
            match self.dir.write_open(&kill_file, "cgroup.kill", "1") {
                Ok(()) => writes += 1,
                Err(e) => match e.errno() {
                    Some(Errno::NOENT) | Some(Errno::NODEV) => return Ok(Outcome::Done(writes)),
                    // A threaded subtree.
                    Some(Errno::OPNOTSUPP) => return Ok(Outcome::Unsupported(Errno::OPNOTSUPP)),
                    _ => return Err(e),
                },
            }
            if writes > 1 {
                self.counters.kill_rewrite();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.kill_timeout(now - start));
            }
            let slice = stall.min(deadline - now);
            let done = match exits {
                Some(e) => watch.wait_unpopulated_tracking(e, slice).await?,
                // Usually the kernel is done well within a first short wait, which needs no
                // pidfds. Only a longer kill, or a notification the kernel defers (see
                // `events`), goes on tracking the processes' exits.
                None => {
                    let first = slice.min(UNTRACKED_WAIT);
                    watch.wait_unpopulated(first).await? || {
                        let e = exits.insert(ExitWatch::for_pids(pids));
                        watch.wait_unpopulated_tracking(e, slice - first).await?
                    }
                }
            };
            if done {
                return Ok(Outcome::Done(writes));
            }
            stall = (stall * 2).min(MAX_STALL);
        }
    }

    async fn kill_freeze(
        &self,
        watch: &EventsWatch,
        exits: &ExitWatch,
        start: Instant,
        deadline: Instant,
    ) -> Result<u32> {
        let mut stall = FIRST_STALL;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let frozen = self.freeze();
            // Thaws if this round ends early: an error, or the future dropped while it
            // waits for `frozen 1`. A cancelled kill never leaves the subtree frozen.
            let thaw = ThawOnDrop(self);
            if frozen.is_ok() {
                // A process in uninterruptible sleep can hold the freeze off; SIGKILL works on
                // frozen and unfrozen tasks alike, so go on after a short bounded wait.
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = watch
                    .wait_frozen(true, left.min(Duration::from_millis(50)))
                    .await?;
            }
            let signalled = self.signal_all(Signal::KILL);
            std::mem::forget(thaw);
            let thawed = self.thaw();
            if let Err(e) = frozen.and(signalled.map(|_| ())).and(thawed) {
                if matches!(e.errno(), Some(Errno::NOENT) | Some(Errno::NODEV)) {
                    return Ok(rounds);
                }
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.kill_timeout(now - start));
            }
            if watch
                .wait_unpopulated_tracking(exits, stall.min(deadline - now))
                .await?
            {
                return Ok(rounds);
            }
            stall = (stall * 2).min(MAX_STALL);
        }
    }

    /// The error of a kill that reached its deadline, listing who is left. A failure to
    /// list them is carried in the error, never passed off as an empty list.
    fn kill_timeout(&self, elapsed: Duration) -> Error {
        self.counters.kill_failure();
        let (remaining, list_error) = match self.procs_recursive() {
            Ok(pids) => (pids.into_iter().map(ProcInfo::read).collect(), None),
            Err(e) => (Vec::new(), Some(Box::new(e))),
        };
        Error::KillTimeout {
            path: self.path().to_owned(),
            elapsed,
            remaining,
            list_error,
        }
    }
}
