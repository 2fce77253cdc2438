//! Signalling every process of a subtree: the stop signal that must reach them all.
//!
//! [`Cgroup::signal_all_frozen`] freezes the subtree, sends the signal to every member by
//! pidfd and thaws it, so the signal reaches exactly the processes that exist at that
//! instant, however fast they fork. That alone leaves one hole: a process that has the
//! signal **blocked** when it gets it (Perl blocks every signal around `fork()`, and so do
//! other runtimes) keeps it pending, and after the thaw it may still `fork()`, because
//! `fork` only fails when an *unblocked* signal is pending. Pending signals are not
//! inherited, so that child never gets the signal.
//!
//! The returned [`StopSignal`] remembers which signalled processes had the signal blocked.
//! [`Cgroup::wait_signalled`] waits for the subtree to empty and, each time one of those
//! processes exits (after which it can fork no more), signals the members not signalled
//! yet, frozen again, checking them for a blocked signal in turn. What this cannot catch,
//! by design: a process that keeps the signal blocked and forks without ever exiting; its
//! children meet the kill after the grace period, as the payload chose. So does a child of
//! a process that handles or ignores the signal and forks on.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::Signal;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, ThawOnDrop};
use crate::events::{EventsWatch, ExitWatch};
use crate::{Error, Result};

/// Most passes one signalling makes over `cgroup.procs`: a payload that forks faster than
/// paddock can signal is left to the kill that follows the grace period.
const MAX_SIGNAL_PASSES: usize = 16;

/// Most follow-up rounds (each a freeze, a pass and a thaw) one [`StopSignal`] makes for
/// children forked by processes that had the signal blocked. Past it, those children meet
/// the kill after the grace period.
pub const MAX_FOLLOW_UPS: usize = 64;

/// What [`Cgroup::signal_all_frozen`] and its follow-ups did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalReport {
    /// How many processes the signal was delivered to, follow-ups included.
    pub delivered: usize,
    /// Whether the whole subtree was frozen while signalling, so exactly every process of
    /// it got the signal.
    pub exact: bool,
    /// How many follow-up rounds signalled children forked after the thaw by processes
    /// that had the signal blocked.
    pub follow_ups: usize,
}

/// A stop signal sent to a whole subtree by [`Cgroup::signal_all_frozen`], with what is
/// needed to follow it up ([`Cgroup::wait_signalled`]).
#[derive(Debug)]
pub struct StopSignal {
    sig: Signal,
    freeze_timeout: Duration,
    /// PIDs signalled so far. A PID reused by a new member within one stop is not
    /// signalled again; it meets the kill after the grace period.
    seen: HashSet<i32>,
    /// Every signalled process, so a wait sees the subtree empty as soon as they exited.
    exits: ExitWatch,
    /// Signalled processes that had the signal blocked: each may still fork a child that
    /// misses it, until it exits.
    blocked: ExitWatch,
    report: SignalReport,
}

impl StopSignal {
    /// What was done so far.
    pub fn report(&self) -> SignalReport {
        self.report
    }

    /// How many signalled processes had the signal blocked and are still tracked.
    pub fn blocked(&self) -> usize {
        self.blocked.len()
    }

    /// The exit watch of every signalled process (for a wait of the caller's own).
    pub fn exits(&self) -> &ExitWatch {
        &self.exits
    }
}

impl Cgroup {
    /// Sends `sig` to every live process in the subtree, each by pidfd. Returns how many
    /// processes it was delivered to (processes that exited meanwhile are not counted).
    ///
    /// It passes over `cgroup.procs` until a pass finds no process it has not signalled
    /// (at most 16 passes), so children forked while it runs are reached too. A child whose
    /// fork was still in progress when the last pass read `cgroup.procs` can be missed; use
    /// [`Cgroup::signal_all_frozen`] where every process must get the signal.
    pub fn signal_all(&self, sig: Signal) -> Result<usize> {
        self.signal_members(sig, &mut HashSet::new(), None)
    }

    /// Sends `sig` and then `SIGCONT` (so a stopped process acts on it) to every process
    /// of the subtree, with the subtree frozen while it does: no process can fork while
    /// frozen and a fork in progress completes before `frozen 1` is reported, so the
    /// signal reaches exactly the processes that exist at that instant, however fast the
    /// payload forks. Processes that have `sig` blocked are remembered, so that
    /// [`Cgroup::wait_signalled`] reaches what they fork after the thaw (see the module
    /// documentation).
    ///
    /// The subtree is thawed afterwards, also on error and when the future is dropped
    /// (so a sandbox paused before is running again). When the freeze does not complete
    /// within `freeze_timeout` (a process in uninterruptible sleep) or the kernel has no
    /// `cgroup.freeze`, the signals are sent anyway as [`Cgroup::signal_all`] does and the
    /// report says the snapshot was not exact.
    pub async fn signal_all_frozen(
        &self,
        sig: Signal,
        freeze_timeout: Duration,
    ) -> Result<StopSignal> {
        let mut sent = StopSignal {
            sig,
            freeze_timeout,
            seen: HashSet::new(),
            exits: ExitWatch::new(),
            blocked: ExitWatch::new(),
            report: SignalReport {
                delivered: 0,
                exact: true,
                follow_ups: 0,
            },
        };
        self.signal_round(&mut sent).await?;
        Ok(sent)
    }

    /// Waits up to `timeout` for the subtree to empty after [`Cgroup::signal_all_frozen`];
    /// `Ok(true)` when it did. Meanwhile, whenever a process that had the signal blocked
    /// exits, the members not signalled yet get it, frozen as before (at most
    /// [`MAX_FOLLOW_UPS`] rounds). Cancel-safe: a round cut short thaws the subtree.
    pub async fn wait_signalled(
        &self,
        watch: &EventsWatch,
        sent: &mut StopSignal,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let follow = sent.report.follow_ups < MAX_FOLLOW_UPS && !sent.blocked.is_empty();
            tokio::select! {
                r = watch.wait_unpopulated_tracking(&sent.exits, remaining) => return r,
                () = sent.blocked.any_exited(), if follow => {}
            }
            sent.blocked.remove_exited();
            sent.report.follow_ups += 1;
            let before = sent.report.delivered;
            self.signal_round(sent).await?;
            tracing::debug!(
                cgroup = %self.path().display(),
                round = sent.report.follow_ups,
                signalled = sent.report.delivered - before,
                still_blocked = sent.blocked.len(),
                "stop signal followed up after a process that had it blocked exited"
            );
        }
    }

    /// One frozen round: freeze, signal every member not signalled yet, thaw.
    async fn signal_round(&self, sent: &mut StopSignal) -> Result<()> {
        let w = self.watch()?;
        let thaw = ThawOnDrop(self);
        let exact = match self.freeze() {
            Ok(()) => w.wait_frozen(true, sent.freeze_timeout).await?,
            Err(e) if e.errno() == Some(Errno::NOENT) => false,
            Err(e) => return Err(e),
        };
        let n = self.signal_members(
            sent.sig,
            &mut sent.seen,
            Some((&mut sent.exits, &mut sent.blocked)),
        )?;
        std::mem::forget(thaw);
        self.thaw()?;
        sent.report.delivered += n;
        sent.report.exact &= exact;
        Ok(())
    }

    /// Signals every member not in `seen` (and adds it there), in passes until one finds
    /// nobody new. With `watches`, each signalled process also gets `SIGCONT`, goes into
    /// the first watch, and into the second when it has `sig` blocked.
    fn signal_members(
        &self,
        sig: Signal,
        seen: &mut HashSet<i32>,
        mut watches: Option<(&mut ExitWatch, &mut ExitWatch)>,
    ) -> Result<usize> {
        // A process forked after `cgroup.procs` was read but before its parent got the
        // signal would be missed by a single pass (a shell that traps SIGTERM exits and
        // leaves its background job running). So, as systemd does, repeat the pass until
        // one finds no process that has not been signalled yet. PIDs already signalled are
        // skipped by number: a PID reused within one stop meets the kill instead.
        let mut delivered = 0;
        for _ in 0..MAX_SIGNAL_PASSES {
            let mut fresh = 0;
            for pid in self.procs_recursive()? {
                if !seen.insert(pid) {
                    continue;
                }
                let Some(m) = self.member(pid)? else {
                    continue;
                };
                match rustix::process::pidfd_send_signal(&m.pidfd, sig) {
                    Ok(()) => fresh += 1,
                    Err(Errno::SRCH) => continue,
                    Err(e) => {
                        return Err(Error::io(
                            "pidfd_send_signal",
                            format!("/proc/{}", m.pid),
                            e,
                        ));
                    }
                }
                if let Some((exits, blocked)) = watches.as_mut() {
                    let _ = rustix::process::pidfd_send_signal(&m.pidfd, Signal::CONT);
                    if has_blocked(m.pid, sig)
                        && let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(m.pidfd.as_fd(), 0)
                    {
                        blocked.add(dup);
                    }
                    exits.add(m.pidfd);
                }
            }
            delivered += fresh;
            if fresh == 0 {
                break;
            }
        }
        Ok(delivered)
    }
}

/// Whether process `pid` (its main thread) has `sig` in its signal mask, from the `SigBlk`
/// line of `/proc/<pid>/status`. A process that is gone, or a file that cannot be read,
/// counts as not blocking.
fn has_blocked(pid: i32, sig: Signal) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    sig_blocked(&status, sig.as_raw())
}

/// Parses the `SigBlk:` mask of a `/proc/<pid>/status` text and tests signal `signo`.
fn sig_blocked(status: &str, signo: i32) -> bool {
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return false;
    };
    (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_blocked_reads_the_mask() {
        let s = "Name:\tperl\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000004000\nSigIgn:\t0\n";
        assert!(sig_blocked(s, 15), "bit 14 is SIGTERM");
        assert!(!sig_blocked(s, 9));
        let all = "SigBlk:\tfffffffe7ffbfeff\n";
        assert!(sig_blocked(all, 15));
        assert!(!sig_blocked(all, 9), "SIGKILL cannot be blocked");
        assert!(!sig_blocked("Name:\tx\n", 15), "no line: not blocked");
        assert!(!sig_blocked("SigBlk:\tzz\n", 15), "garbage: not blocked");
        assert!(!sig_blocked(s, 0));
        assert!(!sig_blocked(s, 65));
    }
}
