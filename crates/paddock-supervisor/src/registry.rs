//! The registry: every lifecycle the supervisor holds, by sandbox ID, and the reports of
//! the last [`RECENT_REPORTS`] finished lifecycles that left it.
//!
//! Each ID maps to its [`Lifecycles`]: the *current* lifecycle and a list of *retiring*
//! ones (older lifecycles still stopping or quarantined). Every change is one short
//! critical section under one lock; nothing here calls a hook (the supervisor does that
//! after the lock is released).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::Error;
use crate::config::Retention;
use crate::events::StopReport;
use crate::ids::{LifecycleId, cgroup_name};
use crate::lifecycle::Sandbox;
use crate::spec::SandboxId;

/// How many finished lifecycles' stop reports the supervisor keeps after the lifecycles
/// themselves left the registry (an older lifecycle pruned when its stop finished, one
/// replaced by a restart of its ID, or one forgotten), so that a repeated `stop`, `kill` or
/// `wait_stopped` naming that lifecycle still returns its report. One supervisor-wide
/// list, oldest evicted first; past it such a call returns [`Error::NotFound`].
pub const RECENT_REPORTS: usize = 1024;

/// Every lifecycle the registry holds for one sandbox ID.
pub(crate) struct Lifecycles {
    /// The newest lifecycle (of a start, or the newest adopted), which an operation
    /// without a lifecycle ID means.
    pub(crate) current: Arc<Sandbox>,
    /// Older lifecycles still stopping or quarantined; each is pruned when its stop ends.
    pub(crate) retiring: Vec<Arc<Sandbox>>,
}

impl Lifecycles {
    /// Makes `sb` the current lifecycle; the previous one retires unless it is terminal
    /// (then it is simply replaced, and returned).
    fn replace_current(&mut self, sb: Arc<Sandbox>) -> Option<Arc<Sandbox>> {
        let old = std::mem::replace(&mut self.current, sb);
        if old.state().is_terminal() {
            return Some(old);
        }
        self.retiring.push(old);
        None
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Sandbox>> {
        std::iter::once(&self.current).chain(self.retiring.iter())
    }
}

/// How a new lifecycle joins the lifecycles of its ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A start: refused while the current lifecycle holds the ID (`creating` or
    /// `running`); otherwise the new lifecycle becomes current.
    Start,
    /// An adoption: becomes current if it is newer than the current lifecycle and that
    /// one does not hold the ID; otherwise it joins the retiring ones. Never refused.
    Adopt,
}

/// The ID is held by a creating or running lifecycle.
#[derive(Debug)]
pub(crate) struct IdHeld;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Registry {
    by_id: Mutex<HashMap<SandboxId, Lifecycles>>,
    /// The finished current lifecycles, in the order they ended (for
    /// [`crate::Config::retain_stopped`]). Locked after `by_id`, never before.
    retained: Mutex<Retained>,
    /// Reports of finished lifecycles, kept after they leave the registry (see
    /// [`RECENT_REPORTS`]).
    recent: Mutex<RecentReports>,
}

/// What became of a lifecycle whose stop finished ([`Registry::finished`]).
pub(crate) enum Finished {
    /// It is its ID's current lifecycle: kept as [`crate::Config::retain_stopped`] says.
    Retained,
    /// It was an older lifecycle: it left the retiring list, so nothing can reach it.
    Pruned,
    /// It was no longer in the registry.
    Gone,
}

/// The finished current lifecycles the registry keeps, oldest first.
#[derive(Default)]
struct Retained {
    order: BTreeMap<u64, (SandboxId, LifecycleId, Instant)>,
    by_id: HashMap<SandboxId, (u64, LifecycleId)>,
    next: u64,
}

impl Retained {
    fn insert(&mut self, id: &SandboxId, lc: LifecycleId) {
        self.remove(id, None);
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, (id.clone(), lc, Instant::now()));
        self.by_id.insert(id.clone(), (seq, lc));
    }

    /// Drops the entry of `id` (of exactly `lc` when given).
    fn remove(&mut self, id: &SandboxId, lc: Option<LifecycleId>) {
        if let Some(&(seq, had)) = self.by_id.get(id)
            && lc.is_none_or(|l| l == had)
        {
            self.by_id.remove(id);
            self.order.remove(&seq);
        }
    }
}

impl Registry {
    /// Whether a creating or running lifecycle holds `id` now (a start would be refused).
    /// Only a hint: [`Registry::insert`] decides, atomically.
    pub(crate) fn id_held(&self, id: &SandboxId) -> bool {
        self.by_id
            .lock()
            .get(id)
            .is_some_and(|l| l.current.state().holds_id())
    }

    /// Inserts a new lifecycle (see [`Admission`]); the one place lifecycles join.
    /// Returns the finished lifecycle it replaced as current, if any: that one left the
    /// registry, so nothing can reach it any more.
    pub(crate) fn insert(
        &self,
        sb: &Arc<Sandbox>,
        how: Admission,
    ) -> Result<Option<LifecycleId>, IdHeld> {
        let mut reg = self.by_id.lock();
        let Some(entry) = reg.get_mut(&sb.id) else {
            reg.insert(
                sb.id.clone(),
                Lifecycles {
                    current: sb.clone(),
                    retiring: Vec::new(),
                },
            );
            return Ok(None);
        };
        let held = entry.current.state().holds_id();
        let replaced = match how {
            Admission::Start if held => return Err(IdHeld),
            Admission::Start => entry.replace_current(sb.clone()),
            Admission::Adopt if !held && entry.current.lifecycle < sb.lifecycle => {
                entry.replace_current(sb.clone())
            }
            Admission::Adopt => {
                entry.retiring.push(sb.clone());
                None
            }
        };
        if let Some(old) = &replaced {
            self.retained.lock().remove(&old.id, Some(old.lifecycle));
        }
        Ok(replaced.map(|old| old.lifecycle))
    }

    /// A lifecycle's stop finished: the current lifecycle is retained (newest last), an
    /// older one leaves the retiring list.
    pub(crate) fn finished(&self, sb: &Sandbox) -> Finished {
        let mut reg = self.by_id.lock();
        match reg.get_mut(&sb.id) {
            Some(e) if e.current.lifecycle == sb.lifecycle => {
                self.retained.lock().insert(&sb.id, sb.lifecycle);
                Finished::Retained
            }
            Some(e) => {
                let before = e.retiring.len();
                e.retiring.retain(|o| o.lifecycle != sb.lifecycle);
                if e.retiring.len() != before {
                    Finished::Pruned
                } else {
                    Finished::Gone
                }
            }
            None => Finished::Gone,
        }
    }

    /// Takes out of the retained list the finished lifecycles `r` no longer keeps (the
    /// oldest past the count, those older than the age), oldest first; also returns when
    /// the next one expires by age. The caller forgets them.
    pub(crate) fn expired(
        &self,
        r: Retention,
        now: Instant,
    ) -> (Vec<(SandboxId, LifecycleId)>, Option<Instant>) {
        let mut ret = self.retained.lock();
        let mut out = Vec::new();
        while let Some((&seq, (_, _, at))) = ret.order.first_key_value() {
            let over = r.max_count.is_some_and(|m| ret.order.len() > m);
            let expires = r.max_age.map(|a| *at + a);
            if !over && expires.is_none_or(|e| e > now) {
                return (out, expires);
            }
            let (id, lc, _) = ret.order.remove(&seq).expect("the first entry");
            ret.by_id.remove(&id);
            out.push((id, lc));
        }
        (out, None)
    }

    /// The lifecycle `lifecycle` of `id` (current or retiring), or without one the ID's
    /// current lifecycle.
    pub(crate) fn find(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<Arc<Sandbox>, Error> {
        let reg = self.by_id.lock();
        let nf = || Error::NotFound {
            id: id.to_string(),
            lifecycle,
        };
        let entry = reg.get(id).ok_or_else(nf)?;
        match lifecycle {
            None => Ok(entry.current.clone()),
            Some(lc) => entry
                .all()
                .find(|s| s.lifecycle == lc)
                .cloned()
                .ok_or_else(nf),
        }
    }

    /// Whether `sb` is its ID's current lifecycle.
    pub(crate) fn is_current(&self, sb: &Sandbox) -> bool {
        let reg = self.by_id.lock();
        reg.get(&sb.id)
            .is_some_and(|e| e.current.lifecycle == sb.lifecycle)
    }

    /// Every lifecycle held, current and retiring.
    pub(crate) fn all(&self) -> Vec<Arc<Sandbox>> {
        let reg = self.by_id.lock();
        reg.values().flat_map(|e| e.all().cloned()).collect()
    }

    /// The cgroup names of every lifecycle held.
    pub(crate) fn cgroup_names(&self) -> HashSet<String> {
        let reg = self.by_id.lock();
        reg.values()
            .flat_map(|e| e.all())
            .map(|sb| cgroup_name(sb.id.as_str(), sb.lifecycle))
            .collect()
    }

    /// Removes `sb` if it is its ID's current lifecycle; the newest retiring lifecycle, if
    /// any, becomes current again.
    pub(crate) fn remove_current(&self, sb: &Sandbox) {
        let mut reg = self.by_id.lock();
        if let Some(e) = reg.get_mut(&sb.id)
            && e.current.lifecycle == sb.lifecycle
        {
            self.retained.lock().remove(&sb.id, Some(sb.lifecycle));
            if let Some(prev) = e.retiring.pop() {
                e.current = prev;
            } else {
                reg.remove(&sb.id);
            }
        }
    }

    /// Forgets the current lifecycle of `id` once it is terminal; with `Some(lifecycle)`,
    /// only if that is the current lifecycle (see [`crate::Supervisor::forget_lifecycle`]).
    /// Returns the lifecycle forgotten.
    pub(crate) fn forget(
        &self,
        id: &SandboxId,
        lifecycle: Option<LifecycleId>,
    ) -> Result<LifecycleId, Error> {
        let mut reg = self.by_id.lock();
        let nf = || Error::NotFound {
            id: id.to_string(),
            lifecycle,
        };
        let Some(entry) = reg.get_mut(id) else {
            return Err(nf());
        };
        if let Some(lc) = lifecycle
            && entry.current.lifecycle != lc
        {
            // An older lifecycle still in the registry is stopping or quarantined (a
            // finished one is pruned at once): say so rather than "not found".
            if let Some(old) = entry.retiring.iter().find(|o| o.lifecycle == lc) {
                return Err(Error::InvalidState {
                    id: id.clone(),
                    state: old.state(),
                    op: "delete (stop it first)",
                });
            }
            return Err(nf());
        }
        let st = entry.current.state();
        if !st.is_terminal() {
            return Err(Error::InvalidState {
                id: id.clone(),
                state: st,
                op: "delete (stop it first)",
            });
        }
        let lc = entry.current.lifecycle;
        self.retained.lock().remove(id, Some(lc));
        if entry.retiring.is_empty() {
            reg.remove(id);
        } else {
            entry.current = entry.retiring.remove(0);
        }
        Ok(lc)
    }

    /// Keeps the report of a finished lifecycle for after it leaves the registry.
    pub(crate) fn remember_report(&self, sb: &Sandbox, report: &StopReport) {
        self.recent.lock().insert(&sb.id, sb.lifecycle, report);
    }

    /// The report of a finished lifecycle, if it is among the last [`RECENT_REPORTS`].
    pub(crate) fn recent_report(&self, id: &SandboxId, lc: LifecycleId) -> Option<StopReport> {
        self.recent.lock().get(id, lc)
    }
}

/// The last [`RECENT_REPORTS`] stop reports, by lifecycle, oldest evicted first.
#[derive(Default)]
struct RecentReports {
    order: VecDeque<(SandboxId, LifecycleId)>,
    reports: HashMap<(SandboxId, LifecycleId), StopReport>,
}

impl RecentReports {
    fn insert(&mut self, id: &SandboxId, lc: LifecycleId, report: &StopReport) {
        let key = (id.clone(), lc);
        if self.reports.insert(key.clone(), report.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_REPORTS {
            if let Some(old) = self.order.pop_front() {
                self.reports.remove(&old);
            }
        }
    }

    fn get(&self, id: &SandboxId, lc: LifecycleId) -> Option<StopReport> {
        self.reports.get(&(id.clone(), lc)).cloned()
    }
}
