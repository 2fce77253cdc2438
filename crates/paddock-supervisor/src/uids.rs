//! Dynamic users: uids (and gids of the same number) from a configured range, each unique
//! to one lifecycle while any process of it may live — systemd's `DynamicUser=`, for
//! sandboxes, so two dynamic-user sandboxes cannot signal or ptrace each other.
//!
//! [`UidAllocator`] keeps the free ids as disjoint intervals in a `BTreeMap` (start → end):
//! allocating, reserving a given id and releasing one are each O(log n) in the number of
//! intervals (at most one more than the ids held). Allocation is next-fit, like the kernel's
//! PIDs: it takes the first free id at or after the one after the last allocated, wrapping
//! around, so a released id is reused as late as possible.
//!
//! Who holds an id is a set of [`Holder`]s (one lifecycle each). An id is free again only
//! when its last holder releases it; the supervisor releases a lifecycle's id when its
//! cgroup is gone (stopped, drained, or a failed start), never on a failed stop. After a
//! restart, recovery reserves the ids of the lifecycles it adopts from their records, and
//! the ids of reclaimed ones are simply never reserved.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use crate::ids::LifecycleId;
use crate::spec::SandboxId;

/// An inclusive range of host uids (and gids) for dynamic users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// First id.
    pub first: u32,
    /// Last id (inclusive).
    pub last: u32,
}

impl UidRange {
    /// The range `paddock serve` uses unless told otherwise: 200000-265535 (65,536 ids,
    /// above the ranges `useradd` hands out in `/etc/subuid` by default for the first
    /// user, 100000-165535).
    pub const DEFAULT: UidRange = UidRange {
        first: 200_000,
        last: 265_535,
    };

    /// Whether `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }

    /// Whether `[start, start + count)` overlaps the range.
    pub fn overlaps(&self, start: u32, count: u32) -> bool {
        let end = u64::from(start) + u64::from(count);
        u64::from(start) <= u64::from(self.last) && end > u64::from(self.first)
    }

    /// How many ids it has.
    pub fn len(&self) -> u64 {
        u64::from(self.last) - u64::from(self.first) + 1
    }

    /// Never empty (a range has at least one id); for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for UidRange {
    type Err = String;
    /// `FIRST-LAST` (inclusive), e.g. `200000-265535`. Refused: 0 in the range (root),
    /// the last id 4294967295 (`(uid_t)-1`), 65534 (`nobody`, which many programs treat
    /// as "no user"), and a last id below the first.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("uid range {s:?}: {why} (example: 200000-265535)");
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| err("expected FIRST-LAST"))?;
        let first: u32 = a.trim().parse().map_err(|_| err("FIRST is not a uid"))?;
        let last: u32 = b.trim().parse().map_err(|_| err("LAST is not a uid"))?;
        if last < first {
            return Err(err("LAST is below FIRST"));
        }
        if first == 0 {
            return Err(err("it must not contain 0 (root)"));
        }
        if last == u32::MAX {
            return Err(err("it must not contain 4294967295 ((uid_t)-1)"));
        }
        let r = UidRange { first, last };
        if r.contains(65534) {
            return Err(err("it must not contain 65534 (nobody)"));
        }
        Ok(r)
    }
}

/// Who holds a dynamic uid: one lifecycle.
pub type Holder = (SandboxId, LifecycleId);

/// The allocator (see the module docs). Not synchronised: the supervisor keeps it under a
/// lock.
#[derive(Debug)]
pub struct UidAllocator {
    range: UidRange,
    /// Free ids as disjoint, non-adjacent intervals: start → end (inclusive).
    free: BTreeMap<u32, u32>,
    /// The holders of each held id (normally one).
    held: HashMap<u32, BTreeSet<Holder>>,
    /// Where the next allocation starts looking.
    next: u32,
}

impl UidAllocator {
    /// Every id of `range` free.
    pub fn new(range: UidRange) -> Self {
        UidAllocator {
            range,
            free: BTreeMap::from([(range.first, range.last)]),
            held: HashMap::new(),
            next: range.first,
        }
    }

    /// The range.
    pub fn range(&self) -> UidRange {
        self.range
    }

    /// How many ids are held (by at least one holder).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether `id` is held.
    pub fn is_held(&self, id: u32) -> bool {
        self.held.contains_key(&id)
    }

    /// Takes a free id for `holder`: the first at or after the one after the last
    /// allocation, wrapping around. `None` when every id of the range is held.
    pub fn allocate(&mut self, holder: Holder) -> Option<u32> {
        let id = self
            .free
            .range(..=self.next)
            .next_back()
            .filter(|(_, end)| **end >= self.next)
            .map(|_| self.next)
            .or_else(|| self.free.range(self.next..).next().map(|(s, _)| *s))
            .or_else(|| self.free.first_key_value().map(|(s, _)| *s))?;
        self.take(id);
        self.held.entry(id).or_default().insert(holder);
        self.next = if id == self.range.last {
            self.range.first
        } else {
            id + 1
        };
        Some(id)
    }

    /// Records that `holder` holds `id` (an adopted lifecycle's, from its record). Returns
    /// the other holders `id` already had (normally none; a non-empty answer means two
    /// records claim one id, and it stays held until both release it). An id outside the
    /// range is held all the same, and never handed out.
    pub fn reserve(&mut self, id: u32, holder: Holder) -> Vec<Holder> {
        let holders = self.held.entry(id).or_default();
        let others: Vec<Holder> = holders.iter().filter(|h| **h != holder).cloned().collect();
        let first = holders.is_empty();
        holders.insert(holder);
        if first && self.range.contains(id) {
            self.take(id);
        }
        others
    }

    /// `holder` no longer holds `id`; once nobody does, it is free again. Returns whether
    /// it became free. Releasing an id `holder` does not hold does nothing.
    pub fn release(&mut self, id: u32, holder: &Holder) -> bool {
        let Some(holders) = self.held.get_mut(&id) else {
            return false;
        };
        if !holders.remove(holder) || !holders.is_empty() {
            return false;
        }
        self.held.remove(&id);
        if self.range.contains(id) {
            self.give_back(id);
        }
        true
    }

    /// Removes `id` from the free intervals (it must be in one).
    fn take(&mut self, id: u32) {
        let Some((&start, &end)) = self.free.range(..=id).next_back() else {
            return;
        };
        if end < id {
            return;
        }
        self.free.remove(&start);
        if start < id {
            self.free.insert(start, id - 1);
        }
        if id < end {
            self.free.insert(id + 1, end);
        }
    }

    /// Adds `id` to the free intervals, merging with its neighbours.
    fn give_back(&mut self, id: u32) {
        let mut start = id;
        let mut end = id;
        if let Some((&s, &e)) = self.free.range(..id).next_back()
            && e.checked_add(1) == Some(id)
        {
            self.free.remove(&s);
            start = s;
        }
        if let Some(next) = id.checked_add(1)
            && let Some(e) = self.free.remove(&next)
        {
            end = e;
        }
        self.free.insert(start, end);
    }

    /// The free intervals (for tests and metrics).
    pub fn free_intervals(&self) -> Vec<(u32, u32)> {
        self.free.iter().map(|(s, e)| (*s, *e)).collect()
    }
}

impl crate::Supervisor {
    /// Allocates a dynamic uid for a new lifecycle. Refused (nothing changed) when the
    /// supervisor has no range ([`crate::Error::InvalidSpec`]) or every id of it is held
    /// ([`crate::Error::Unavailable`]).
    pub(crate) fn allocate_dynamic_uid(
        &self,
        id: &SandboxId,
        lc: LifecycleId,
    ) -> Result<u32, crate::Error> {
        let Some(uids) = &self.inner.uids else {
            return Err(crate::Error::InvalidSpec(crate::jail::DYNAMIC_OFF.into()));
        };
        let mut a = uids.lock();
        let uid = a.allocate((id.clone(), lc)).ok_or_else(|| {
            crate::Error::Unavailable(format!(
                "jail.user.dynamic: every uid of the dynamic range {} ({} ids) is held by a sandbox whose processes may still live; stop one, or widen --uid-range; nothing was started",
                a.range(),
                a.range().len()
            ))
        })?;
        tracing::debug!(uid, "dynamic uid allocated");
        Ok(uid)
    }

    /// Records that lifecycle `lc` of `id` holds `uid` (recovery).
    pub(crate) fn reserve_dynamic_uid(&self, uid: u32, id: &SandboxId, lc: LifecycleId) {
        match &self.inner.uids {
            Some(uids) => {
                let others = uids.lock().reserve(uid, (id.clone(), lc));
                if !others.is_empty() {
                    tracing::error!(uid, others = ?others, "two recorded sandboxes hold the same dynamic uid; it stays held until both are gone");
                }
                if !uids.lock().range().contains(uid) {
                    tracing::warn!(
                        uid,
                        "an adopted sandbox's dynamic uid is outside --uid-range (was the range changed?); held until it is gone, never handed out"
                    );
                }
            }
            None => tracing::warn!(
                uid,
                "an adopted sandbox has a dynamic uid, but this supervisor has no uid range; no other sandbox can take it"
            ),
        }
    }

    /// Frees the dynamic uid of `sb`, if it has one: its cgroup is gone.
    pub(crate) fn release_dynamic_uid(&self, sb: &crate::lifecycle::Sandbox) {
        if let (Some(uid), Some(uids)) = (sb.dynamic_uid(), &self.inner.uids)
            && uids.lock().release(uid, &(sb.id.clone(), sb.lifecycle))
        {
            tracing::debug!(uid, "dynamic uid released");
        }
    }

    /// Frees `uid` held by lifecycle `lc` of `id` (an adoption that found nothing).
    pub(crate) fn release_dynamic_uid_of(&self, uid: u32, id: &SandboxId, lc: LifecycleId) {
        if let Some(uids) = &self.inner.uids {
            uids.lock().release(uid, &(id.clone(), lc));
        }
    }

    /// How many dynamic uids are held, and the range (`None` without one).
    pub fn dynamic_uids(&self) -> Option<(usize, UidRange)> {
        self.inner.uids.as_ref().map(|u| {
            let a = u.lock();
            (a.held(), a.range())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> Holder {
        (
            SandboxId::new(format!("s{n}")).unwrap(),
            LifecycleId::parse(&format!("{n:016x}")).unwrap(),
        )
    }

    #[test]
    fn ranges_parse_and_refuse_privileged_ids() {
        assert_eq!(
            "200000-265535".parse::<UidRange>().unwrap(),
            UidRange::DEFAULT
        );
        assert_eq!(UidRange::DEFAULT.len(), 65536);
        for bad in [
            "",
            "5",
            "10-5",
            "0-10",
            "1-4294967295",
            "60000-70000",
            "a-b",
            "-5",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad:?}");
        }
        let r = UidRange {
            first: 10,
            last: 20,
        };
        assert!(r.overlaps(5, 6) && r.overlaps(20, 1) && r.overlaps(0, 100));
        assert!(!r.overlaps(5, 5) && !r.overlaps(21, 100));
    }

    /// Different holders get different ids; a released id comes back only after the
    /// others were handed out (next-fit), and the range is exhausted exactly.
    #[test]
    fn allocation_is_unique_next_fit_and_bounded() {
        let mut a = UidAllocator::new(UidRange {
            first: 100,
            last: 103,
        });
        assert_eq!(a.allocate(h(1)), Some(100));
        assert_eq!(a.allocate(h(2)), Some(101));
        assert!(a.release(100, &h(1)));
        assert_eq!(a.allocate(h(3)), Some(102), "next-fit: 100 is reused late");
        assert_eq!(a.allocate(h(4)), Some(103));
        assert_eq!(a.allocate(h(5)), Some(100), "wraps around to the freed id");
        assert_eq!(a.allocate(h(6)), None, "every id is held");
        assert_eq!(a.held(), 4);
        assert!(a.release(101, &h(2)));
        assert_eq!(a.allocate(h(6)), Some(101));
        assert!(a.free_intervals().is_empty());
    }

    #[test]
    fn release_merges_intervals_and_ignores_strangers() {
        let mut a = UidAllocator::new(UidRange { first: 1, last: 10 });
        let ids: Vec<u32> = (1..=10).map(|n| a.allocate(h(n)).unwrap()).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        assert!(!a.release(5, &h(99)), "not its holder");
        assert!(!a.release(50, &h(1)), "not held");
        for id in [5, 7, 6, 1, 10] {
            assert!(a.release(id, &h(u64::from(id))));
        }
        assert_eq!(a.free_intervals(), vec![(1, 1), (5, 7), (10, 10)]);
        assert!(!a.release(5, &h(5)), "twice");
    }

    /// Recovery: reserved ids are never handed out; a second claim keeps the id held until
    /// both holders release it; an id outside the range is held but never free.
    #[test]
    fn reservations() {
        let mut a = UidAllocator::new(UidRange {
            first: 100,
            last: 102,
        });
        assert!(a.reserve(101, h(1)).is_empty());
        assert!(a.reserve(101, h(1)).is_empty(), "idempotent");
        assert_eq!(a.reserve(101, h(2)), vec![h(1)]);
        assert!(a.reserve(7, h(3)).is_empty());
        assert_eq!(a.allocate(h(4)), Some(100));
        assert_eq!(a.allocate(h(5)), Some(102));
        assert_eq!(a.allocate(h(6)), None);
        assert!(!a.release(101, &h(1)), "still held by the second record");
        assert!(a.release(101, &h(2)));
        assert!(a.release(7, &h(3)));
        assert_eq!(a.free_intervals(), vec![(101, 101)]);
        assert_eq!(a.allocate(h(6)), Some(101));
    }

    proptest::proptest! {
        /// Against a model: an id is never held twice through `allocate`, the free
        /// intervals and the held ids always partition the range.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..3, 0u32..40), 1..200)) {
            let r = UidRange { first: 10, last: 40 };
            let mut a = UidAllocator::new(r);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut n = 0u64;
            for (op, x) in ops {
                n += 1;
                match op {
                    0 => match a.allocate(h(n)) {
                        Some(id) => {
                            proptest::prop_assert!(r.contains(id));
                            proptest::prop_assert!(model.insert(id, n).is_none(), "{id} twice");
                        }
                        None => proptest::prop_assert_eq!(model.len() as u64, r.len()),
                    },
                    1 => {
                        let id = 10 + x % 31;
                        if let Some(holder) = model.remove(&id) {
                            proptest::prop_assert!(a.release(id, &h(holder)));
                        }
                    }
                    _ => {
                        let id = 10 + x % 31;
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry(id) {
                            e.insert(n);
                            proptest::prop_assert!(a.reserve(id, h(n)).is_empty());
                        }
                    }
                }
                let free: u64 = a.free_intervals().iter().map(|(s, e)| u64::from(e - s + 1)).sum();
                proptest::prop_assert_eq!(free + model.len() as u64, r.len());
                for id in model.keys() {
                    proptest::prop_assert!(a.is_held(*id));
                }
            }
        }
    }
}
