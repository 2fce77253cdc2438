//! Changing the limits of a running sandbox ([`Supervisor::update_limits`], the API's
//! `PATCH /v1/sandboxes/{id}`): the change ([`LimitsUpdate`]) is merged into the limits in
//! force, the result validated as a start would validate it, the controllers it needs
//! enabled, then each changed field is written to the cgroup in turn; what was written is
//! recorded (the record's spec carries the limits in force, so an adoption keeps them) and
//! announced (`limits_updated`).
//!
//! What the kernel does with a lower limit is its own business and is documented in
//! `docs/limits.md`: a `memory.max` below the current usage makes it reclaim, and OOM-kill
//! (the whole sandbox, with `memory.oom.group`) if reclaim does not get below it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use paddock_cgroup::{Cgroup, CpuMax, IoMax, Limit, Max};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::Instrument;

use crate::Error;
use crate::lifecycle::Sandbox;
use crate::resources::IoDeviceLimit;
use crate::spec::{Limits, SandboxId};
use crate::state::LifecycleState;
use crate::supervisor::{SandboxInfo, Supervisor};

/// A change of a running sandbox's limits. A field given replaces that limit; `null` lifts
/// it (back to the kernel's default: no cap, weight 100, no protection, `memory.oom.group`
/// on); a field left out is left as it is. `io_max` and `hugetlb_max` replace the whole
/// list (devices and sizes left out of the new one lose their caps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitsUpdate {
    /// `memory.max`, bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_max))]
    pub memory_max: Option<Option<u64>>,
    /// `memory.high`, bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_high))]
    pub memory_high: Option<Option<u64>>,
    /// `memory.low`, bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_low))]
    pub memory_low: Option<Option<u64>>,
    /// `memory.min`, bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_min))]
    pub memory_min: Option<Option<u64>>,
    /// `memory.swap.max`, bytes.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_swap_max))]
    pub memory_swap_max: Option<Option<u64>>,
    /// `memory.oom.group`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    pub oom_group: Option<Option<bool>>,
    /// `cpu.max` as a number of CPUs.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpus))]
    pub cpus: Option<Option<f64>>,
    /// `cpu.weight`, 1..=10000.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpu_weight))]
    pub cpu_weight: Option<Option<u64>>,
    /// `pids.max`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::pids_max))]
    pub pids_max: Option<Option<u64>>,
    /// `cgroup.max.descendants`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_descendants))]
    pub max_descendants: Option<Option<u64>>,
    /// `cgroup.max.depth`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_depth))]
    pub max_depth: Option<Option<u64>>,
    /// `io.weight`, 1..=10000.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::io_weight))]
    pub io_weight: Option<Option<u64>>,
    /// `io.max`, the whole list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub io_max: Option<Vec<IoDeviceLimit>>,
    /// `cpuset.cpus`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpuset_list))]
    pub cpuset_cpus: Option<Option<String>>,
    /// `cpuset.mems`.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpuset_list))]
    pub cpuset_mems: Option<Option<String>>,
    /// `hugetlb.<size>.max`, the whole map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::hugetlb_max_update))]
    pub hugetlb_max: Option<BTreeMap<String, u64>>,
}

/// A field that is present, `null` or not: `Some(value)`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl LimitsUpdate {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == LimitsUpdate::default()
    }

    /// `old` with this change applied.
    pub fn merged(&self, old: &Limits) -> Limits {
        let mut l = old.clone();
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    l.$f = v.clone();
                }
            )*};
        }
        set!(
            memory_max,
            memory_high,
            memory_low,
            memory_min,
            memory_swap_max,
            oom_group,
            cpus,
            cpu_weight,
            pids_max,
            max_descendants,
            max_depth,
            io_weight,
            cpuset_cpus,
            cpuset_mems
        );
        if let Some(v) = &self.io_max {
            l.io_max = v.clone();
        }
        if let Some(v) = &self.hugetlb_max {
            l.hugetlb_max = v.clone();
        }
        l
    }
}

/// One field's write: its name, and how to write it to the cgroup.
type Write<'a> = (&'static str, Box<dyn Fn(&Cgroup) -> Result<(), Error> + 'a>);

/// The writes that take `old` to `new`, one per changed field, in the order of the spec.
fn writes<'a>(
    old: &'a Limits,
    new: &'a Limits,
    io: &'a [IoMax],
    io_old: &'a [IoMax],
) -> Vec<Write<'a>> {
    let mut w: Vec<Write<'a>> = Vec::new();
    let max = |v: Option<u64>| v.map_or(Max::Max, Max::Value);
    macro_rules! single {
        ($f:ident, $mk:expr) => {
            if old.$f != new.$f {
                let v = new.$f.clone();
                w.push((
                    stringify!($f),
                    Box::new(move |cg: &Cgroup| cg.set_limit($mk(v.clone())?).map_err(Error::from)),
                ));
            }
        };
    }
    single!(memory_max, |v| Ok::<_, Error>(Limit::MemoryMax(max(v))));
    single!(memory_high, |v| Ok::<_, Error>(Limit::MemoryHigh(max(v))));
    single!(memory_min, |v: Option<u64>| Ok::<_, Error>(
        Limit::MemoryMin(Max::Value(v.unwrap_or(0)))
    ));
    single!(memory_low, |v: Option<u64>| Ok::<_, Error>(
        Limit::MemoryLow(Max::Value(v.unwrap_or(0)))
    ));
    single!(memory_swap_max, |v| Ok::<_, Error>(Limit::MemorySwapMax(
        max(v)
    )));
    single!(cpus, |v: Option<f64>| Ok::<_, Error>(Limit::CpuMax(
        match v {
            Some(c) => CpuMax::from_cpus(c)?,
            None => CpuMax {
                quota_us: None,
                period_us: CpuMax::DEFAULT_PERIOD_US,
            },
        }
    )));
    single!(cpu_weight, |v: Option<u64>| Ok::<_, Error>(
        Limit::CpuWeight(v.unwrap_or(100))
    ));
    single!(pids_max, |v| Ok::<_, Error>(Limit::PidsMax(max(v))));
    single!(max_descendants, |v| Ok::<_, Error>(Limit::MaxDescendants(
        max(v)
    )));
    single!(max_depth, |v| Ok::<_, Error>(Limit::MaxDepth(max(v))));
    single!(io_weight, |v: Option<u64>| Ok::<_, Error>(Limit::IoWeight(
        v.unwrap_or(100)
    )));
    if old.io_max != new.io_max {
        w.push((
            "io_max",
            Box::new(move |cg: &Cgroup| {
                for m in io {
                    cg.set_io_max(m)?;
                }
                for m in io_old
                    .iter()
                    .filter(|o| !io.iter().any(|n| n.device == o.device))
                {
                    cg.set_io_max(&IoMax::unlimited(m.device))?;
                }
                Ok(())
            }),
        ));
    }
    for (name, file, o, n) in [
        (
            "cpuset_mems",
            "cpuset.mems",
            &old.cpuset_mems,
            &new.cpuset_mems,
        ),
        (
            "cpuset_cpus",
            "cpuset.cpus",
            &old.cpuset_cpus,
            &new.cpuset_cpus,
        ),
    ] {
        if o != n {
            w.push((
                name,
                Box::new(move |cg: &Cgroup| {
                    match n {
                        Some(list) if file == "cpuset.cpus" => cg.set_cpuset_cpus(list)?,
                        Some(list) => cg.set_cpuset_mems(list)?,
                        // Empty: the parent's, as for a new cgroup.
                        None => cg.clear_cpuset(file)?,
                    }
                    Ok(())
                }),
            ));
        }
    }
    if old.hugetlb_max != new.hugetlb_max {
        w.push((
            "hugetlb_max",
            Box::new(move |cg: &Cgroup| {
                for (size, bytes) in &new.hugetlb_max {
                    cg.set_hugetlb_max(size, Max::Value(*bytes))?;
                }
                for size in old
                    .hugetlb_max
                    .keys()
                    .filter(|s| !new.hugetlb_max.contains_key(*s))
                {
                    cg.set_hugetlb_max(size, Max::Max)?;
                }
                Ok(())
            }),
        ));
    }
    if old.oom_group != new.oom_group {
        let want = new.oom_group;
        w.push((
            "oom_group",
            Box::new(move |cg: &Cgroup| {
                match cg.set_limit(Limit::MemoryOomGroup(want.unwrap_or(true))) {
                    Err(paddock_cgroup::Error::ControllerUnavailable { .. })
                        if want != Some(true) =>
                    {
                        Ok(())
                    }
                    r => r.map_err(Error::from),
                }
            }),
        ));
    }
    w
}

/// Copies field `name` of `from` into `to` (after that field was written).
fn copy_field(name: &str, from: &Limits, to: &mut Limits) {
    macro_rules! copy {
        ($($f:ident),*) => {
            match name {
                $(stringify!($f) => to.$f = from.$f.clone(),)*
                _ => {}
            }
        };
    }
    copy!(
        memory_max,
        memory_high,
        memory_low,
        memory_min,
        memory_swap_max,
        oom_group,
        cpus,
        cpu_weight,
        pids_max,
        max_descendants,
        max_depth,
        io_weight,
        io_max,
        cpuset_cpus,
        cpuset_mems,
        hugetlb_max
    );
}

impl Supervisor {
    /// Changes the limits of the running sandbox `id` (its current lifecycle). The merged
    /// limits are validated as a start validates them ([`Error::InvalidSpec`] naming the
    /// field; `io_max` devices resolved), the controllers they need enabled (a missing one
    /// is the cgroup layer's error naming it), then each changed field is written in turn.
    /// If a write fails, the fields written before it stay in force and are recorded, and
    /// the error names the field and those written. The limits in force are recorded (and
    /// the write waited for) and announced with a `limits_updated` event. A sandbox that is
    /// not running (or stops during the update) is [`Error::InvalidState`].
    pub async fn update_limits(
        &self,
        id: &SandboxId,
        update: &LimitsUpdate,
    ) -> Result<SandboxInfo, Error> {
        let sb = self.find(id, None)?;
        self.update_lifecycle(&sb, update)
            .instrument(sb.span())
            .await
    }

    async fn update_lifecycle(
        &self,
        sb: &Arc<Sandbox>,
        update: &LimitsUpdate,
    ) -> Result<SandboxInfo, Error> {
        let _op = sb.op.lock().await;
        let not_running = || Error::InvalidState {
            id: sb.id.clone(),
            state: sb.state(),
            op: "update its limits",
        };
        if !sb.with_state(|s| matches!(s, LifecycleState::Running { .. })) {
            return Err(not_running());
        }
        if update.is_empty() {
            // Nothing to change: the answer is the sandbox as it is (no write, no record).
            return Ok(self.info(sb));
        }
        let old = sb.limits.lock().clone();
        let new = update.merged(&old);
        let mut spec = sb.spec.clone();
        spec.limits = new.clone();
        spec.validate()?;
        let io = crate::resources::resolve_io(&new)?;
        // The devices that lose their caps, as far as their paths still resolve.
        let io_old: Vec<IoMax> = old
            .io_max
            .iter()
            .filter_map(|d| {
                crate::resources::block_device(&d.device)
                    .ok()
                    .map(|n| d.to_io_max(n))
            })
            .collect();
        let needed = new.controllers();
        if !needed.is_empty() {
            self.inner.cfg.root.enable_controllers(&needed)?;
            if needed.contains(&"pids") {
                self.inner.pids_enabled.store(true, Relaxed);
            }
            if needed.contains(&"memory") {
                self.inner.memory_enabled.store(true, Relaxed);
            }
        }
        let cg = self.open_cgroup(sb).map_err(|e| {
            if e.errno() == Some(rustix::io::Errno::NOENT) {
                not_running()
            } else {
                e.into()
            }
        })?;
        let mut applied = old.clone();
        let mut done = Vec::new();
        let mut failed = None;
        for (name, write) in writes(&old, &new, &io, &io_old) {
            match write(&cg) {
                Ok(()) => {
                    copy_field(name, &new, &mut applied);
                    done.push(name);
                }
                Err(e) => {
                    failed = Some((name, e));
                    break;
                }
            }
        }
        if !done.is_empty() {
            let entered = self
                .enter_recorded(
                    sb,
                    crate::Transition::LimitsUpdated {
                        limits: Box::new(applied),
                    },
                )
                .await
                .map_err(|_| not_running())?;
            tracing::info!(fields = ?done, "limits updated");
            if let Some(recorded) = entered.recorded
                && let Err(reason) = recorded.await
            {
                return Err(Error::Journal {
                    id: sb.id.clone(),
                    reason,
                });
            }
        }
        if let Some((name, e)) = failed {
            if !sb.with_state(|s| matches!(s, LifecycleState::Running { .. })) {
                return Err(not_running());
            }
            tracing::warn!(field = name, applied = ?done, error = %e, "limits update failed");
            return Err(e);
        }
        Ok(self.info(sb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_value_are_three_things() {
        let u: LimitsUpdate =
            serde_json::from_str(r#"{"memory_max": 1024, "pids_max": null}"#).unwrap();
        assert_eq!(u.memory_max, Some(Some(1024)));
        assert_eq!(u.pids_max, Some(None));
        assert_eq!(u.cpus, None);
        let old = Limits {
            pids_max: Some(5),
            cpus: Some(1.0),
            ..Limits::default()
        };
        let new = u.merged(&old);
        assert_eq!(
            (new.memory_max, new.pids_max, new.cpus),
            (Some(1024), None, Some(1.0))
        );
        let names: Vec<_> = writes(&old, &new, &[], &[])
            .into_iter()
            .map(|w| w.0)
            .collect();
        assert_eq!(names, ["memory_max", "pids_max"]);
        assert!(serde_json::from_str::<LimitsUpdate>(r#"{"memory": 1}"#).is_err());
        assert!(LimitsUpdate::default().is_empty());
        // Round trip: null stays null, absent stays absent.
        let back: LimitsUpdate = serde_json::from_str(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn copy_field_copies_one_field() {
        let new = Limits {
            memory_max: Some(1),
            pids_max: Some(2),
            ..Limits::default()
        };
        let mut to = Limits::default();
        copy_field("pids_max", &new, &mut to);
        assert_eq!((to.memory_max, to.pids_max), (None, Some(2)));
    }
}
