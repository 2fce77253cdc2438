//! The spawner's `dumpable` setting across vfork-like spawns that change credentials.
//!
//! A child that changes its uid or gid while it shares the spawner's memory (vfork-like,
//! [`Jail::exclusive_ids`](crate::jail::Jail::exclusive_ids)) makes the kernel set that
//! memory's `dumpable` flag to `fs.suid_dumpable` (0 by default) — the spawner's own, since
//! the memory is the spawner's. That protects the child (nothing can trace it or read its
//! memory through `/proc` before `execve`), but it would leave the spawner non-dumpable for
//! good: no core dump, `/proc/self` owned by root. The setting is saved when the first such
//! spawn begins and restored when the last one in flight has returned (the children have
//! exec'd or exited, so none shares the memory any more).

use std::sync::Mutex;

use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};

/// Spawns in flight that change credentials vfork-like, and the setting saved at the first.
static IN_FLIGHT: Mutex<(usize, Option<DumpableBehavior>)> = Mutex::new((0, None));

/// Held across one such spawn; restores the setting when the last one ends.
pub(crate) struct Guard(());

impl Guard {
    /// Before the clone.
    pub(crate) fn enter() -> Guard {
        let mut g = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            g.1 = dumpable_behavior().ok();
        }
        g.0 += 1;
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut g = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0
            && let Some(saved) = g.1.take()
            && dumpable_behavior().ok() != Some(saved)
        {
            // Best effort: `PR_SET_DUMPABLE` takes only 0 and 1, so a saved 2
            // (`suid_dumpable = 2`) cannot be set back and stays as the kernel left it.
            let _ = set_dumpable_behavior(saved);
        }
    }
}
