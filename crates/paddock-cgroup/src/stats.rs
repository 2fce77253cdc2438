//! Typed parsers for cgroup interface files: `cgroup.events`, `cpu.stat`, `memory.events`,
//! single values with `max`, and `cpu.max`.
//!
//! Parsers accept what the kernel writes (unknown keys are ignored, so newer kernels keep
//! working) and reject what it never writes (missing required keys, non-numbers, overflow)
//! with an [`Error::Parse`] that quotes the input.

use crate::{Error, Result};

/// The state in `cgroup.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    /// `populated 1`: this cgroup or a descendant has a live process.
    pub populated: bool,
    /// `frozen 1`: the freeze of this cgroup has completed.
    pub frozen: bool,
}

fn flat_keyed<'a>(what: &'static str, text: &'a str) -> Result<Vec<(&'a str, u64)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(Error::parse(
                what,
                text,
                format!("line {line:?} is not `key value`"),
            ));
        };
        let v = v
            .parse::<u64>()
            .map_err(|e| Error::parse(what, text, format!("value of {k}: {e}")))?;
        out.push((k, v));
    }
    Ok(out)
}

fn bool01(what: &'static str, text: &str, k: &str, v: u64) -> Result<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::parse(what, text, format!("{k} is {v}, not 0 or 1"))),
    }
}

impl Events {
    /// Parses `cgroup.events`; `populated` is required.
    pub fn parse(text: &str) -> Result<Self> {
        let mut ev = Events::default();
        let mut seen = false;
        for (k, v) in flat_keyed("cgroup.events", text)? {
            match k {
                "populated" => {
                    ev.populated = bool01("cgroup.events", text, k, v)?;
                    seen = true;
                }
                "frozen" => ev.frozen = bool01("cgroup.events", text, k, v)?,
                _ => {}
            }
        }
        if !seen {
            return Err(Error::parse("cgroup.events", text, "no `populated` key"));
        }
        Ok(ev)
    }
}

/// `cpu.stat`. The three usage keys are always present in cgroup v2 (even without the cpu
/// controller); the throttling keys only with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    /// Total CPU time, microseconds.
    pub usage_usec: u64,
    /// User CPU time, microseconds.
    pub user_usec: u64,
    /// System CPU time, microseconds.
    pub system_usec: u64,
    /// Enforcement periods elapsed (cpu controller only).
    pub nr_periods: Option<u64>,
    /// Periods in which the group was throttled (cpu controller only).
    pub nr_throttled: Option<u64>,
    /// Time throttled, microseconds (cpu controller only).
    pub throttled_usec: Option<u64>,
}

impl CpuStat {
    /// Parses `cpu.stat`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut s = CpuStat::default();
        let mut need = 0u8;
        for (k, v) in flat_keyed("cpu.stat", text)? {
            match k {
                "usage_usec" => {
                    s.usage_usec = v;
                    need |= 1;
                }
                "user_usec" => {
                    s.user_usec = v;
                    need |= 2;
                }
                "system_usec" => {
                    s.system_usec = v;
                    need |= 4;
                }
                "nr_periods" => s.nr_periods = Some(v),
                "nr_throttled" => s.nr_throttled = Some(v),
                "throttled_usec" => s.throttled_usec = Some(v),
                _ => {}
            }
        }
        if need != 7 {
            return Err(Error::parse(
                "cpu.stat",
                text,
                "missing usage_usec, user_usec or system_usec",
            ));
        }
        Ok(s)
    }
}

/// `memory.events` (counters since the cgroup was created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    /// Times usage went below `memory.low` protection under pressure.
    pub low: u64,
    /// Times usage was throttled at `memory.high`.
    pub high: u64,
    /// Times usage hit `memory.max`.
    pub max: u64,
    /// Times the OOM killer was invoked for the cgroup.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
    /// Group OOM kills (`memory.oom.group`).
    pub oom_group_kill: u64,
}

impl MemoryEvents {
    /// Parses `memory.events`; `oom_kill` is required, the others default to 0.
    pub fn parse(text: &str) -> Result<Self> {
        let mut m = MemoryEvents::default();
        let mut seen = false;
        for (k, v) in flat_keyed("memory.events", text)? {
            match k {
                "low" => m.low = v,
                "high" => m.high = v,
                "max" => m.max = v,
                "oom" => m.oom = v,
                "oom_kill" => {
                    m.oom_kill = v;
                    seen = true;
                }
                "oom_group_kill" => m.oom_group_kill = v,
                _ => {}
            }
        }
        if !seen {
            return Err(Error::parse("memory.events", text, "no `oom_kill` key"));
        }
        Ok(m)
    }
}

/// A limit that may be unlimited (`max` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Max {
    /// No limit.
    Max,
    /// This many (bytes, pids, cgroups…).
    Value(u64),
}

impl Max {
    /// Parses `max` or a decimal number.
    pub fn parse(what: &'static str, text: &str) -> Result<Self> {
        let t = text.trim();
        if t == "max" {
            return Ok(Max::Max);
        }
        t.parse::<u64>()
            .map(Max::Value)
            .map_err(|e| Error::parse(what, text, e.to_string()))
    }

    /// The text the kernel accepts for this value.
    pub fn to_file_string(self) -> String {
        match self {
            Max::Max => "max".into(),
            Max::Value(v) => v.to_string(),
        }
    }
}

/// A single decimal counter file such as `memory.current` or `pids.current`.
pub fn parse_u64(what: &'static str, text: &str) -> Result<u64> {
    text.trim()
        .parse::<u64>()
        .map_err(|e| Error::parse(what, text, e.to_string()))
}

/// `cpu.max`: a quota per period, both in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// Microseconds of CPU per period, or `None` for unlimited.
    pub quota_us: Option<u64>,
    /// The period in microseconds (the kernel accepts 1000..=1000000).
    pub period_us: u64,
}

impl CpuMax {
    /// The default period the kernel uses.
    pub const DEFAULT_PERIOD_US: u64 = 100_000;

    /// The largest quota the kernel accepts (`max_cfs_runtime`: 2^44 - 1 µs, a little
    /// over 203 days); a larger one is refused with `EINVAL`.
    pub const MAX_QUOTA_US: u64 = (1 << 44) - 1;

    /// The fewest CPUs [`CpuMax::from_cpus`] accepts (a 1 ms quota per 100 ms period, the
    /// kernel's minimum).
    pub const MIN_CPUS: f64 = 0.01;

    /// The most CPUs [`CpuMax::from_cpus`] accepts ([`CpuMax::MAX_QUOTA_US`] per default
    /// period: 175,921,860).
    pub const MAX_CPUS: f64 = (Self::MAX_QUOTA_US / Self::DEFAULT_PERIOD_US) as f64;

    /// A quota of `cpus` CPUs (for example 1.5) over the default period. Accepts
    /// [`CpuMax::MIN_CPUS`] to [`CpuMax::MAX_CPUS`]: exactly what the kernel takes.
    pub fn from_cpus(cpus: f64) -> Result<Self> {
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(Error::InvalidValue {
                what: "cpu.max",
                reason: format!("{cpus} CPUs is not a positive number"),
            });
        }
        let quota = (cpus * Self::DEFAULT_PERIOD_US as f64).round();
        if cpus < Self::MIN_CPUS || quota < 1000.0 || cpus > Self::MAX_CPUS {
            return Err(Error::InvalidValue {
                what: "cpu.max",
                reason: format!(
                    "{cpus} CPUs is out of range ({} to {})",
                    Self::MIN_CPUS,
                    Self::MAX_CPUS
                ),
            });
        }
        Ok(CpuMax {
            quota_us: Some(quota as u64),
            period_us: Self::DEFAULT_PERIOD_US,
        })
    }

    /// Parses `cpu.max` (`max 100000` or `150000 100000`).
    pub fn parse(text: &str) -> Result<Self> {
        let mut it = text.split_whitespace();
        let (Some(q), p, None) = (it.next(), it.next(), it.next()) else {
            return Err(Error::parse("cpu.max", text, "expected `QUOTA [PERIOD]`"));
        };
        let quota_us = match q {
            "max" => None,
            q => Some(
                q.parse::<u64>()
                    .map_err(|e| Error::parse("cpu.max", text, e.to_string()))?,
            ),
        };
        let period_us = match p {
            None => Self::DEFAULT_PERIOD_US,
            Some(p) => p
                .parse::<u64>()
                .map_err(|e| Error::parse("cpu.max", text, e.to_string()))?,
        };
        Ok(CpuMax {
            quota_us,
            period_us,
        })
    }

    /// The text the kernel accepts.
    pub fn to_file_string(self) -> String {
        match self.quota_us {
            None => format!("max {}", self.period_us),
            Some(q) => format!("{q} {}", self.period_us),
        }
    }
}

/// `io.stat` summed over all devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStat {
    /// Bytes read.
    pub rbytes: u64,
    /// Bytes written.
    pub wbytes: u64,
    /// Read operations.
    pub rios: u64,
    /// Write operations.
    pub wios: u64,
}

impl IoStat {
    /// Parses `io.stat` (`MAJ:MIN key=value …` per device; unknown keys are ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let mut s = IoStat::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let dev = it.next().unwrap_or_default();
            if !dev
                .split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
            {
                return Err(Error::parse(
                    "io.stat",
                    text,
                    format!("{dev:?} is not MAJ:MIN"),
                ));
            }
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Error::parse("io.stat", text, format!("{kv:?} is not key=value"))
                })?;
                let v = v
                    .parse::<u64>()
                    .map_err(|e| Error::parse("io.stat", text, format!("{k}: {e}")))?;
                let slot = match k {
                    "rbytes" => &mut s.rbytes,
                    "wbytes" => &mut s.wbytes,
                    "rios" => &mut s.rios,
                    "wios" => &mut s.wios,
                    _ => continue,
                };
                *slot = slot.saturating_add(v);
            }
        }
        Ok(s)
    }
}

/// `cgroup.stat`: counts of live and dying descendant cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupStat {
    /// Live descendant cgroups.
    pub nr_descendants: u64,
    /// Removed descendants the kernel has not freed yet; they still hold memory and IDs.
    pub nr_dying_descendants: u64,
}

impl CgroupStat {
    /// Parses `cgroup.stat`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut s = CgroupStat::default();
        let mut need = 0u8;
        for (k, v) in flat_keyed("cgroup.stat", text)? {
            match k {
                "nr_descendants" => {
                    s.nr_descendants = v;
                    need |= 1;
                }
                "nr_dying_descendants" => {
                    s.nr_dying_descendants = v;
                    need |= 2;
                }
                _ => {}
            }
        }
        if need != 3 {
            return Err(Error::parse(
                "cgroup.stat",
                text,
                "missing nr_descendants or nr_dying_descendants",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_real_and_malformed() {
        assert_eq!(
            Events::parse("populated 1\nfrozen 0\n").unwrap(),
            Events {
                populated: true,
                frozen: false
            }
        );
        assert_eq!(Events::parse("populated 0\n").unwrap(), Events::default());
        assert!(Events::parse("").is_err());
        assert!(Events::parse("populated 2\n").is_err());
        assert!(Events::parse("populated\n").is_err());
        assert!(Events::parse("populated x\n").is_err());
        assert!(Events::parse("frozen 1\n").is_err());
    }

    #[test]
    fn cpu_stat_real_and_malformed() {
        let real = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\ncore_sched.force_idle_usec 0\n\
                    nr_periods 10\nnr_throttled 2\nthrottled_usec 5000\nnr_bursts 0\nburst_usec 0\n";
        let s = CpuStat::parse(real).unwrap();
        assert_eq!(
            (s.usage_usec, s.user_usec, s.system_usec),
            (1234, 1000, 234)
        );
        assert_eq!(s.nr_throttled, Some(2));
        let hybrid = "usage_usec 5\nuser_usec 3\nsystem_usec 2\n";
        assert_eq!(CpuStat::parse(hybrid).unwrap().nr_periods, None);
        assert!(CpuStat::parse("usage_usec 5\n").is_err());
        assert!(CpuStat::parse("usage_usec -5\nuser_usec 3\nsystem_usec 2\n").is_err());
        assert!(
            CpuStat::parse("usage_usec 99999999999999999999999\nuser_usec 3\nsystem_usec 2")
                .is_err()
        );
    }

    #[test]
    fn memory_events() {
        let real = "low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        let m = MemoryEvents::parse(real).unwrap();
        assert_eq!((m.high, m.max, m.oom_kill), (3, 7, 1));
        assert!(MemoryEvents::parse("low 0\n").is_err());
        assert!(MemoryEvents::parse("oom_kill one\n").is_err());
    }

    #[test]
    fn max_values() {
        assert_eq!(Max::parse("pids.max", "max\n").unwrap(), Max::Max);
        assert_eq!(Max::parse("pids.max", "42\n").unwrap(), Max::Value(42));
        assert!(Max::parse("pids.max", "-1").is_err());
        assert!(Max::parse("pids.max", "").is_err());
        assert_eq!(Max::Value(7).to_file_string(), "7");
        assert_eq!(parse_u64("memory.current", "8192\n").unwrap(), 8192);
        assert!(parse_u64("memory.current", "8k").is_err());
    }

    #[test]
    fn cpu_max() {
        assert_eq!(
            CpuMax::parse("max 100000\n").unwrap(),
            CpuMax {
                quota_us: None,
                period_us: 100000
            }
        );
        assert_eq!(
            CpuMax::parse("150000 100000").unwrap().quota_us,
            Some(150000)
        );
        assert_eq!(CpuMax::parse("5000").unwrap().period_us, 100000);
        assert!(CpuMax::parse("").is_err());
        assert!(CpuMax::parse("a b").is_err());
        assert!(CpuMax::parse("1 2 3").is_err());
        assert_eq!(
            CpuMax::from_cpus(1.5).unwrap().to_file_string(),
            "150000 100000"
        );
        assert!(CpuMax::from_cpus(0.0).is_err());
        assert!(CpuMax::from_cpus(f64::NAN).is_err());
        assert!(CpuMax::from_cpus(0.001).is_err());
    }

    #[test]
    fn io_stat() {
        let t = "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=2 rios=3 wios=4\n";
        assert_eq!(
            IoStat::parse(t).unwrap(),
            IoStat {
                rbytes: 101,
                wbytes: 202,
                rios: 4,
                wios: 6
            }
        );
        assert_eq!(IoStat::parse("").unwrap(), IoStat::default());
        assert!(IoStat::parse("sda rbytes=1").is_err());
        assert!(IoStat::parse("8:0 rbytes").is_err());
        assert!(IoStat::parse("8:0 rbytes=x").is_err());
    }

    #[test]
    fn cgroup_stat() {
        let s = CgroupStat::parse("nr_descendants 3\nnr_subsys_cpu 1\nnr_dying_descendants 2\n")
            .unwrap();
        assert_eq!((s.nr_descendants, s.nr_dying_descendants), (3, 2));
        assert!(CgroupStat::parse("nr_descendants 3\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = Events::parse(&s);
            let _ = CpuStat::parse(&s);
            let _ = MemoryEvents::parse(&s);
            let _ = Max::parse("x", &s);
            let _ = CpuMax::parse(&s);
            let _ = CgroupStat::parse(&s);
            let _ = IoStat::parse(&s);
            let _ = crate::mount::parse_mountinfo(&s);
        }

        #[test]
        fn cpu_stat_roundtrip(a in 0u64..u64::MAX, b in 0u64..u64::MAX, c in 0u64..u64::MAX) {
            let t = format!("usage_usec {a}\nuser_usec {b}\nsystem_usec {c}\n");
            let s = CpuStat::parse(&t).unwrap();
            proptest::prop_assert_eq!((s.usage_usec, s.user_usec, s.system_usec), (a, b, c));
        }
    }
}
