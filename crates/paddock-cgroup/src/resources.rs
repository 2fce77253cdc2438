//! The typed writers and readers of the limits that do not fit one value per file —
//! `io.max` (per device), `cpuset.cpus` / `cpuset.mems` (CPU and node lists),
//! `hugetlb.<size>.max` (per page size) — and pressure stall information
//! (`cpu.pressure`, `memory.pressure`, `io.pressure`).

use std::fmt;

use crate::cgroup::Cgroup;
use crate::stats::{Max, MemoryEvents, parse_u64};
use crate::{Error, Result};

/// A block device's number, as cgroup files name it (`MAJ:MIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceNumber {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl DeviceNumber {
    /// Parses `MAJ:MIN`.
    pub fn parse(text: &str) -> Option<Self> {
        let (a, b) = text.split_once(':')?;
        Some(DeviceNumber {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

/// One line of `io.max`: the bandwidth and IOPS caps of one device. `Max::Max` is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoMax {
    /// The device.
    pub device: DeviceNumber,
    /// Read bytes per second.
    pub rbps: Max,
    /// Write bytes per second.
    pub wbps: Max,
    /// Read operations per second.
    pub riops: Max,
    /// Write operations per second.
    pub wiops: Max,
}

impl IoMax {
    /// A line without any cap for `device` (writing it removes the device's caps).
    pub fn unlimited(device: DeviceNumber) -> Self {
        IoMax {
            device,
            rbps: Max::Max,
            wbps: Max::Max,
            riops: Max::Max,
            wiops: Max::Max,
        }
    }

    /// The line the kernel accepts (every key given, so a write replaces all four).
    pub fn to_file_string(&self) -> String {
        format!(
            "{} rbps={} wbps={} riops={} wiops={}",
            self.device,
            self.rbps.to_file_string(),
            self.wbps.to_file_string(),
            self.riops.to_file_string(),
            self.wiops.to_file_string()
        )
    }

    /// Parses `io.max`: one line per device with a cap (devices without any are not listed).
    pub fn parse_file(text: &str) -> Result<Vec<IoMax>> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let dev = it.next().unwrap_or_default();
            let device = DeviceNumber::parse(dev)
                .ok_or_else(|| Error::parse("io.max", text, format!("{dev:?} is not MAJ:MIN")))?;
            let mut m = IoMax::unlimited(device);
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Error::parse("io.max", text, format!("{kv:?} is not key=value"))
                })?;
                let v = Max::parse("io.max", v)?;
                match k {
                    "rbps" => m.rbps = v,
                    "wbps" => m.wbps = v,
                    "riops" => m.riops = v,
                    "wiops" => m.wiops = v,
                    _ => {}
                }
            }
            out.push(m);
        }
        Ok(out)
    }
}

/// Parses the `default N` line of `io.weight` (or a bare number).
pub(crate) fn parse_io_weight(text: &str) -> Result<u64> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("default"), Some(v)) => return parse_u64("io.weight", v),
            (Some(v), None) if v.bytes().all(|b| b.is_ascii_digit()) => {
                return parse_u64("io.weight", v);
            }
            _ => {}
        }
    }
    Err(Error::parse("io.weight", text, "no `default` line"))
}

/// Checks a CPU or memory-node list in the kernel's syntax (`0-3,8,10-11`): non-empty,
/// comma-separated numbers or ascending ranges, each number below `limit`. The error is the
/// reason, for the caller to prefix with the field.
pub fn check_id_list(text: &str, limit: u32) -> std::result::Result<(), String> {
    if text.trim().is_empty() {
        return Err("is empty (give a list such as 0-3,6)".into());
    }
    for part in text.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let num = |s: &str| -> std::result::Result<u32, String> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) || s.len() > 7 {
                return Err(format!(
                    "{part:?} is not a number or a range such as 2-5 (the list syntax is 0-3,6)"
                ));
            }
            s.parse::<u32>().map_err(|e| format!("{part:?}: {e}"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("range {part:?} goes backwards"));
        }
        if b >= limit {
            return Err(format!("{b} is not below {limit}"));
        }
    }
    Ok(())
}

/// The kernel's name of a huge page size in hugetlb files (`2MB`, `1GB`, `64KB`), from its
/// size in bytes.
pub fn hugetlb_size_name(bytes: u64) -> String {
    const K: u64 = 1024;
    if bytes >= K * K * K {
        format!("{}GB", bytes / (K * K * K))
    } else if bytes >= K * K {
        format!("{}MB", bytes / (K * K))
    } else {
        format!("{}KB", bytes / K)
    }
}

/// The huge page sizes this kernel has (`/sys/kernel/mm/hugepages/hugepages-<N>kB`), by the
/// names hugetlb files use, smallest first; empty without huge page support.
pub fn hugetlb_sizes() -> Vec<String> {
    let mut kb: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    kb.sort_unstable();
    kb.into_iter()
        .map(|k| hugetlb_size_name(k * 1024))
        .collect()
}

/// One line of a `*.pressure` file: the share of wall time some (or all) runnable tasks
/// were stalled on the resource.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PressureLine {
    /// Percent over the last 10 s.
    pub avg10: f64,
    /// Percent over the last 60 s.
    pub avg60: f64,
    /// Percent over the last 300 s.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_usec: u64,
}

/// A `*.pressure` file: `some` always, `full` where the kernel reports it (`cpu.pressure`
/// has `full` from 5.13 on, at non-root cgroups).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    /// Some tasks stalled.
    pub some: PressureLine,
    /// All non-idle tasks stalled at once.
    pub full: Option<PressureLine>,
}

/// Which resource's pressure to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiResource {
    /// `cpu.pressure`
    Cpu,
    /// `memory.pressure`
    Memory,
    /// `io.pressure`
    Io,
}

impl PsiResource {
    /// The interface file.
    pub fn file(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu.pressure",
            PsiResource::Memory => "memory.pressure",
            PsiResource::Io => "io.pressure",
        }
    }
}

impl Pressure {
    /// Parses a `*.pressure` file; `what` names it in errors.
    pub fn parse(what: &'static str, text: &str) -> Result<Self> {
        let mut some = None;
        let mut full = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let kind = it.next().unwrap_or_default();
            let mut l = PressureLine::default();
            let mut seen = 0u8;
            for kv in it {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Error::parse(what, text, format!("{kv:?} is not key=value")))?;
                let f = || {
                    v.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .ok_or_else(|| Error::parse(what, text, format!("{k}={v:?}")))
                };
                match k {
                    "avg10" => l.avg10 = f()?,
                    "avg60" => l.avg60 = f()?,
                    "avg300" => l.avg300 = f()?,
                    "total" => {
                        l.total_usec = parse_u64(what, v)?;
                        seen |= 1;
                    }
                    _ => {}
                }
            }
            if seen == 0 {
                return Err(Error::parse(
                    what,
                    text,
                    format!("{kind} line without total"),
                ));
            }
            match kind {
                "some" => some = Some(l),
                "full" => full = Some(l),
                _ => {}
            }
        }
        Ok(Pressure {
            some: some.ok_or_else(|| Error::parse(what, text, "no `some` line"))?,
            full,
        })
    }
}

impl Cgroup {
    /// Sets the `io.max` caps of one device. An absent `io` controller is
    /// [`Error::ControllerUnavailable`]; a device the kernel refuses (not a block device
    /// with a request queue) is the write's `ENODEV`/`EINVAL`, naming the file.
    pub fn set_io_max(&self, max: &IoMax) -> Result<()> {
        self.write_controller_file("io.max", Some("io"), &max.to_file_string())
    }

    /// The `io.max` caps, one per device that has any; `Ok(None)` without the `io`
    /// controller.
    pub fn io_max(&self) -> Result<Option<Vec<IoMax>>> {
        self.dir
            .read_opt("io.max")?
            .map(|t| IoMax::parse_file(&t))
            .transpose()
    }

    /// Sets `cpuset.cpus` (a list such as `0-3,6`; checked first with [`check_id_list`]).
    pub fn set_cpuset_cpus(&self, cpus: &str) -> Result<()> {
        self.set_cpuset("cpuset.cpus", cpus)
    }

    /// Sets `cpuset.mems` (memory nodes, a list such as `0`).
    pub fn set_cpuset_mems(&self, mems: &str) -> Result<()> {
        self.set_cpuset("cpuset.mems", mems)
    }

    fn set_cpuset(&self, file: &'static str, list: &str) -> Result<()> {
        check_id_list(list, u32::MAX)
            .map_err(|reason| Error::InvalidValue { what: file, reason })?;
        self.write_controller_file(file, Some("cpuset"), list.trim())
    }

    /// Empties `cpuset.cpus` or `cpuset.mems` (`file`), so the cgroup uses its parent's, as a
    /// new cgroup does.
    pub fn clear_cpuset(&self, file: &'static str) -> Result<()> {
        self.write_controller_file(file, Some("cpuset"), "\n")
    }

    /// A cpuset file (`cpuset.cpus`, `cpuset.mems`, `cpuset.cpus.effective`,
    /// `cpuset.mems.effective`), trimmed; `Ok(None)` without the `cpuset` controller.
    pub fn cpuset(&self, file: &'static str) -> Result<Option<String>> {
        Ok(self.dir.read_opt(file)?.map(|t| t.trim().to_owned()))
    }

    /// Sets `hugetlb.<size>.max` (`size` as the kernel names it: `2MB`, `1GB`). Without the
    /// `hugetlb` controller, [`Error::ControllerUnavailable`]; a size this cgroup does not
    /// offer is [`Error::InvalidValue`] listing the sizes it does.
    pub fn set_hugetlb_max(&self, size: &str, max: Max) -> Result<()> {
        let offered = self.hugetlb_offered()?;
        if offered.is_empty() {
            return Err(self.unavailable("hugetlb"));
        }
        if !offered.iter().any(|s| s == size) {
            return Err(Error::InvalidValue {
                what: "hugetlb page size",
                reason: format!(
                    "{size:?} is not offered by {} (it has: {})",
                    self.dir.path.display(),
                    offered.join(", ")
                ),
            });
        }
        let file = format!("hugetlb.{size}.max");
        self.write_controller_file(&file, Some("hugetlb"), &max.to_file_string())
    }

    /// `hugetlb.<size>.max`; `Ok(None)` where there is no such file.
    pub fn hugetlb_max(&self, size: &str) -> Result<Option<Max>> {
        let file = format!("hugetlb.{size}.max");
        self.dir
            .read_opt(&file)?
            .map(|t| Max::parse("hugetlb max", &t))
            .transpose()
    }

    /// The huge page sizes this cgroup has `hugetlb.<size>.max` files for (empty without
    /// the `hugetlb` controller), sorted by name.
    pub fn hugetlb_offered(&self) -> Result<Vec<String>> {
        let dir = std::fs::read_dir(&self.dir.path).map_err(|e| {
            Error::io(
                "read_dir",
                &self.dir.path,
                rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
            )
        })?;
        let mut out: Vec<String> = dir
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let n = n.to_str()?;
                let size = n.strip_prefix("hugetlb.")?.strip_suffix(".max")?;
                (!size.contains('.')).then(|| size.to_owned())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads `<resource>.pressure`; `Ok(None)` where the kernel has no PSI (built without
    /// it, or booted with `psi=0`).
    pub fn pressure(&self, resource: PsiResource) -> Result<Option<Pressure>> {
        let file = resource.file();
        match self.dir.read_opt(file) {
            Ok(Some(t)) => Pressure::parse(file, &t).map(Some),
            Ok(None) => Ok(None),
            // PSI compiled in but disabled: the files exist and reading them fails.
            Err(e) if e.errno() == Some(rustix::io::Errno::OPNOTSUPP) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `memory.events`; `Ok(None)` without the memory controller.
    pub fn memory_events(&self) -> Result<Option<MemoryEvents>> {
        self.dir
            .read_opt("memory.events")?
            .map(|t| MemoryEvents::parse(&t))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_max_lines() {
        let d = DeviceNumber { major: 7, minor: 0 };
        let m = IoMax {
            rbps: Max::Value(1 << 20),
            wiops: Max::Value(100),
            ..IoMax::unlimited(d)
        };
        assert_eq!(
            m.to_file_string(),
            "7:0 rbps=1048576 wbps=max riops=max wiops=100"
        );
        assert_eq!(IoMax::parse_file(&m.to_file_string()).unwrap(), vec![m]);
        assert_eq!(IoMax::parse_file("").unwrap(), vec![]);
        assert!(IoMax::parse_file("x rbps=1").is_err());
        assert!(IoMax::parse_file("7:0 rbps").is_err());
        assert!(IoMax::parse_file("7:0 rbps=-1").is_err());
    }

    #[test]
    fn io_weight_file() {
        assert_eq!(parse_io_weight("default 100\n").unwrap(), 100);
        assert_eq!(parse_io_weight("default 50\n8:0 200\n").unwrap(), 50);
        assert!(parse_io_weight("8:0 200\n").is_err());
    }

    #[test]
    fn id_lists() {
        for ok in ["0", "0-3", "0-3,6", "1,3,5-7", " 2 "] {
            check_id_list(ok, 8).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "a", "3-1", "0-8", "1,,2", "-1", "0-", "1:2", "99999999"] {
            assert!(check_id_list(bad, 8).is_err(), "{bad}");
        }
    }

    #[test]
    fn hugetlb_names() {
        assert_eq!(hugetlb_size_name(2 << 20), "2MB");
        assert_eq!(hugetlb_size_name(1 << 30), "1GB");
        assert_eq!(hugetlb_size_name(64 << 10), "64KB");
    }

    #[test]
    fn pressure_files() {
        let t = "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        let p = Pressure::parse("cpu.pressure", t).unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_usec, 12345);
        assert_eq!(p.full.unwrap().total_usec, 7);
        let only_some = Pressure::parse(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(only_some.full, None);
        for bad in [
            "",
            "full avg10=0 total=1",
            "some avg10=x total=1",
            "some avg10=1",
            "some total=-1",
        ] {
            assert!(Pressure::parse("cpu.pressure", bad).is_err(), "{bad}");
        }
    }
}
