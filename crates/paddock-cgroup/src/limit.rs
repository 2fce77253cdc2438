//! The single-value limits ([`Limit`]): one value per interface file, written by
//! [`crate::Cgroup::set_limit`] and read back by [`crate::Cgroup::limit`].

use crate::stats::{CpuMax, Max};
use crate::{Error, Result};

/// A resource limit, as written to its interface file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `memory.max`, bytes: the hard limit; above it the OOM killer runs.
    MemoryMax(Max),
    /// `memory.high`, bytes: the throttling limit.
    MemoryHigh(Max),
    /// `cpu.max`: quota per period.
    CpuMax(CpuMax),
    /// `cpu.weight`, 1..=10000 (default 100).
    CpuWeight(u64),
    /// `pids.max`: processes and threads in the subtree.
    PidsMax(Max),
    /// `cgroup.max.descendants`: child cgroups the payload may create below.
    MaxDescendants(Max),
    /// `cgroup.max.depth`: how deep the payload may nest cgroups below.
    MaxDepth(Max),
    /// `memory.low`, bytes: best-effort protection from reclaim.
    MemoryLow(Max),
    /// `memory.min`, bytes: hard protection from reclaim.
    MemoryMin(Max),
    /// `memory.swap.max`, bytes of swap the subtree may use (0 = none).
    MemorySwapMax(Max),
    /// `memory.oom.group`: an OOM kill takes every process of the subtree.
    MemoryOomGroup(bool),
    /// `io.weight` (its `default` line), 1..=10000 (default 100).
    IoWeight(u64),
}

/// Which limit to read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `memory.max`
    MemoryMax,
    /// `memory.high`
    MemoryHigh,
    /// `cpu.max`
    CpuMax,
    /// `cpu.weight`
    CpuWeight,
    /// `pids.max`
    PidsMax,
    /// `cgroup.max.descendants`
    MaxDescendants,
    /// `cgroup.max.depth`
    MaxDepth,
    /// `memory.low`
    MemoryLow,
    /// `memory.min`
    MemoryMin,
    /// `memory.swap.max`
    MemorySwapMax,
    /// `memory.oom.group`
    MemoryOomGroup,
    /// `io.weight`
    IoWeight,
}

impl LimitKind {
    /// The interface file and the controller that provides it (`None` for core files).
    pub fn file(self) -> (&'static str, Option<&'static str>) {
        match self {
            LimitKind::MemoryMax => ("memory.max", Some("memory")),
            LimitKind::MemoryHigh => ("memory.high", Some("memory")),
            LimitKind::CpuMax => ("cpu.max", Some("cpu")),
            LimitKind::CpuWeight => ("cpu.weight", Some("cpu")),
            LimitKind::PidsMax => ("pids.max", Some("pids")),
            LimitKind::MaxDescendants => ("cgroup.max.descendants", None),
            LimitKind::MaxDepth => ("cgroup.max.depth", None),
            LimitKind::MemoryLow => ("memory.low", Some("memory")),
            LimitKind::MemoryMin => ("memory.min", Some("memory")),
            LimitKind::MemorySwapMax => ("memory.swap.max", Some("memory")),
            LimitKind::MemoryOomGroup => ("memory.oom.group", Some("memory")),
            LimitKind::IoWeight => ("io.weight", Some("io")),
        }
    }
}

impl Limit {
    /// Which limit this is.
    pub fn kind(&self) -> LimitKind {
        match self {
            Limit::MemoryMax(_) => LimitKind::MemoryMax,
            Limit::MemoryHigh(_) => LimitKind::MemoryHigh,
            Limit::CpuMax(_) => LimitKind::CpuMax,
            Limit::CpuWeight(_) => LimitKind::CpuWeight,
            Limit::PidsMax(_) => LimitKind::PidsMax,
            Limit::MaxDescendants(_) => LimitKind::MaxDescendants,
            Limit::MaxDepth(_) => LimitKind::MaxDepth,
            Limit::MemoryLow(_) => LimitKind::MemoryLow,
            Limit::MemoryMin(_) => LimitKind::MemoryMin,
            Limit::MemorySwapMax(_) => LimitKind::MemorySwapMax,
            Limit::MemoryOomGroup(_) => LimitKind::MemoryOomGroup,
            Limit::IoWeight(_) => LimitKind::IoWeight,
        }
    }

    pub(crate) fn value(&self) -> Result<String> {
        Ok(match *self {
            Limit::MemoryMax(m) | Limit::MemoryHigh(m) | Limit::PidsMax(m) => m.to_file_string(),
            Limit::MaxDescendants(m) | Limit::MaxDepth(m) => m.to_file_string(),
            Limit::MemoryLow(m) | Limit::MemoryMin(m) | Limit::MemorySwapMax(m) => {
                m.to_file_string()
            }
            Limit::MemoryOomGroup(on) => u8::from(on).to_string(),
            Limit::IoWeight(w) => {
                if !(1..=10_000).contains(&w) {
                    return Err(Error::InvalidValue {
                        what: "io.weight",
                        reason: format!("{w} is not in 1..=10000"),
                    });
                }
                format!("default {w}")
            }
            Limit::CpuMax(c) => {
                if !(1000..=1_000_000).contains(&c.period_us)
                    || c.quota_us.is_some_and(|q| q < 1000)
                {
                    return Err(Error::InvalidValue {
                        what: "cpu.max",
                        reason: format!(
                            "period must be 1000..=1000000 µs and quota at least 1000 µs, got {c:?}"
                        ),
                    });
                }
                c.to_file_string()
            }
            Limit::CpuWeight(w) => {
                if !(1..=10_000).contains(&w) {
                    return Err(Error::InvalidValue {
                        what: "cpu.weight",
                        reason: format!("{w} is not in 1..=10000"),
                    });
                }
                w.to_string()
            }
        })
    }
}
