//! Counts of what kill and removal had to do, for the metrics layer to export.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters shared by a [`crate::Root`] and every cgroup made under it.
#[derive(Debug, Default)]
pub struct Counters {
    rmdir_fast: AtomicU64,
    rmdir_fallback: AtomicU64,
    processes_killed: AtomicU64,
    kill_rewrites: AtomicU64,
    kill_freeze_fallback: AtomicU64,
    kill_failures: AtomicU64,
    remove_failures: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Removals that succeeded on the first `rmdir` (the silent fast path).
    pub rmdir_fast: u64,
    /// Removals whose first `rmdir` failed with EBUSY, so the kill backstop ran.
    pub rmdir_fallback: u64,
    /// Processes found in a cgroup when a kill started (each one was killed or had exited).
    pub processes_killed: u64,
    /// Extra `cgroup.kill` writes because a wait for `populated 0` stalled.
    pub kill_rewrites: u64,
    /// Kills that used the freeze-and-signal fallback instead of `cgroup.kill`.
    pub kill_freeze_fallback: u64,
    /// Kills that reached their deadline with processes left.
    pub kill_failures: u64,
    /// Removals that returned an error (timeout, cancellation is not counted).
    pub remove_failures: u64,
}

impl Counters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rmdir_fast: self.rmdir_fast.load(Relaxed),
            rmdir_fallback: self.rmdir_fallback.load(Relaxed),
            processes_killed: self.processes_killed.load(Relaxed),
            kill_rewrites: self.kill_rewrites.load(Relaxed),
            kill_freeze_fallback: self.kill_freeze_fallback.load(Relaxed),
            kill_failures: self.kill_failures.load(Relaxed),
            remove_failures: self.remove_failures.load(Relaxed),
        }
    }

    pub(crate) fn rmdir_fast(&self) {
        self.rmdir_fast.fetch_add(1, Relaxed);
    }
    pub(crate) fn rmdir_fallback(&self) {
        self.rmdir_fallback.fetch_add(1, Relaxed);
    }
    pub(crate) fn killed(&self, n: usize) {
        self.processes_killed.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn kill_rewrite(&self) {
        self.kill_rewrites.fetch_add(1, Relaxed);
    }
    pub(crate) fn kill_freeze_fallback(&self) {
        self.kill_freeze_fallback.fetch_add(1, Relaxed);
    }
    pub(crate) fn kill_failure(&self) {
        self.kill_failures.fetch_add(1, Relaxed);
    }
    pub(crate) fn remove_failure(&self) {
        self.remove_failures.fetch_add(1, Relaxed);
    }
}
