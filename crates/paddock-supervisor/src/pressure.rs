//! Pressure stall information of a sandbox ([`SandboxPressure`]): the share of time its
//! tasks waited for CPU, memory and I/O, from its cgroup's `cpu.pressure`,
//! `memory.pressure` and `io.pressure` (core files of every non-root cgroup where the
//! kernel has PSI; no controller is needed).

use paddock_cgroup::{Cgroup, Pressure, PressureLine, PsiResource};
use serde::{Deserialize, Serialize};

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PsiLine {
    /// Percent of wall time stalled over the last 10 s.
    pub avg10: f64,
    /// Over the last 60 s.
    pub avg60: f64,
    /// Over the last 300 s.
    pub avg300: f64,
    /// Total time stalled since the cgroup was created, µs.
    pub total_usec: u64,
}

/// One resource's pressure: `some` task stalled, and `full` (every non-idle task at once).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PsiStats {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once (`None` where the kernel does not report it:
    /// `cpu.pressure` before 5.13).
    pub full: Option<PsiLine>,
}

/// A sandbox's pressure: `None` for a resource the kernel reports none for (no PSI).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxPressure {
    /// `cpu.pressure`.
    pub cpu: Option<PsiStats>,
    /// `memory.pressure`.
    pub memory: Option<PsiStats>,
    /// `io.pressure`.
    pub io: Option<PsiStats>,
}

impl From<PressureLine> for PsiLine {
    fn from(l: PressureLine) -> Self {
        PsiLine {
            avg10: l.avg10,
            avg60: l.avg60,
            avg300: l.avg300,
            total_usec: l.total_usec,
        }
    }
}

impl From<Pressure> for PsiStats {
    fn from(p: Pressure) -> Self {
        PsiStats {
            some: p.some.into(),
            full: p.full.map(Into::into),
        }
    }
}

impl SandboxPressure {
    /// Reads the managed root's three files: the pressure of all sandboxes together.
    pub(crate) fn read_root(root: &paddock_cgroup::Root) -> Result<Self, paddock_cgroup::Error> {
        let one = |r| root.pressure(r).map(|p| p.map(PsiStats::from));
        Ok(SandboxPressure {
            cpu: one(PsiResource::Cpu)?,
            memory: one(PsiResource::Memory)?,
            io: one(PsiResource::Io)?,
        })
    }

    /// The three resources with their names (`cpu`, `memory`, `io`).
    pub fn by_resource(&self) -> [(&'static str, Option<PsiStats>); 3] {
        [("cpu", self.cpu), ("memory", self.memory), ("io", self.io)]
    }

    /// Reads the three files of `cg`.
    pub(crate) fn read(cg: &Cgroup) -> Result<Self, paddock_cgroup::Error> {
        let one = |r| cg.pressure(r).map(|p| p.map(PsiStats::from));
        Ok(SandboxPressure {
            cpu: one(PsiResource::Cpu)?,
            memory: one(PsiResource::Memory)?,
            io: one(PsiResource::Io)?,
        })
    }
}
