//! The limits beyond memory, cpu and pids: their spec types ([`IoDeviceLimit`]), their
//! validation (pure, naming the field), the resolution of `io_max` devices from path to
//! major:minor (in the supervisor, before anything is created), and writing them to a
//! sandbox's cgroup, with `memory.oom.group` on by default.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use paddock_cgroup::{Cgroup, DeviceNumber, IoMax, Limit, Max};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::spec::Limits;

/// At most this many devices in `limits.io_max`.
pub const MAX_IO_DEVICES: usize = 64;

/// At most this many page sizes in `limits.hugetlb_max`.
pub const MAX_HUGETLB_SIZES: usize = 8;

/// Largest CPU or memory-node number accepted in a cpuset list (the kernel's `NR_CPUS`
/// bound is 8192 on the largest configurations).
pub const MAX_CPUSET_ID: u32 = 8191;

/// The `io.max` caps of one block device. Absent fields are not capped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IoDeviceLimit {
    /// The block device by path (`/dev/vdb`, `/dev/loop0`): a whole device, not a
    /// partition; resolved to its major:minor when the sandbox starts.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::io_device))]
    pub device: PathBuf,
    /// Read bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub write_bps: Option<u64>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub read_iops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub write_iops: Option<u64>,
}

impl IoDeviceLimit {
    /// The `io.max` line for this device once resolved to `device`.
    pub fn to_io_max(&self, device: DeviceNumber) -> IoMax {
        let m = |v: Option<u64>| v.map_or(Max::Max, Max::Value);
        IoMax {
            device,
            rbps: m(self.read_bps),
            wbps: m(self.write_bps),
            riops: m(self.read_iops),
            wiops: m(self.write_iops),
        }
    }
}

/// Adds the controllers of the limits [`Limits::controllers`] does not cover itself.
pub(crate) fn more_controllers(l: &Limits, v: &mut Vec<&'static str>) {
    let memory = l.memory_low.is_some()
        || l.memory_min.is_some()
        || l.memory_swap_max.is_some()
        || l.oom_group == Some(true);
    if memory && !v.contains(&"memory") {
        v.push("memory");
    }
    if l.io_weight.is_some() || !l.io_max.is_empty() {
        v.push("io");
    }
    if l.cpuset_cpus.is_some() || l.cpuset_mems.is_some() {
        v.push("cpuset");
    }
    if !l.hugetlb_max.is_empty() {
        v.push("hugetlb");
    }
}

/// Checks the limits of this module without touching the system; the error names the
/// field.
pub(crate) fn validate(l: &Limits) -> Result<(), String> {
    if let Some(w) = l.io_weight
        && !(1..=10_000).contains(&w)
    {
        return Err(format!("limits.io_weight = {w}: must be in 1..=10000"));
    }
    if l.io_max.len() > MAX_IO_DEVICES {
        return Err(format!(
            "limits.io_max: {} devices; at most {MAX_IO_DEVICES}",
            l.io_max.len()
        ));
    }
    for (i, d) in l.io_max.iter().enumerate() {
        let b = d.device.as_os_str().as_encoded_bytes();
        if !d.device.is_absolute() || b.contains(&0) {
            return Err(format!(
                "limits.io_max[{i}].device {:?}: must be an absolute path without NUL bytes",
                d.device
            ));
        }
        let caps = [
            ("read_bps", d.read_bps),
            ("write_bps", d.write_bps),
            ("read_iops", d.read_iops),
            ("write_iops", d.write_iops),
        ];
        for (name, v) in caps {
            if v == Some(0) {
                return Err(format!("limits.io_max[{i}].{name} must be at least 1"));
            }
        }
    }
    for (name, v) in [
        ("cpuset_cpus", &l.cpuset_cpus),
        ("cpuset_mems", &l.cpuset_mems),
    ] {
        if let Some(list) = v
            && !is_id_list(list)
        {
            return Err(format!(
                "limits.{name} {list:?}: not a list such as 0-3,6 (numbers of up to 7 digits and ranges, comma-separated)"
            ));
        }
    }
    if l.hugetlb_max.len() > MAX_HUGETLB_SIZES {
        return Err(format!(
            "limits.hugetlb_max: {} page sizes; at most {MAX_HUGETLB_SIZES}",
            l.hugetlb_max.len()
        ));
    }
    for size in l.hugetlb_max.keys() {
        if !is_size_name(size) {
            return Err(format!(
                "limits.hugetlb_max: {size:?} is not a page size as the kernel names it (2MB, 1GB, 64KB)"
            ));
        }
    }
    Ok(())
}

/// The syntax of a cpuset list, as the schema's pattern states it: `N` or `N-M` parts of
/// up to 7 digits each, comma-separated.
fn is_id_list(s: &str) -> bool {
    let num = |p: &str| !p.is_empty() && p.len() <= 7 && p.bytes().all(|b| b.is_ascii_digit());
    s.split(',').all(|part| match part.split_once('-') {
        Some((a, b)) => num(a) && num(b),
        None => num(part),
    })
}

/// What the limits' schema cannot say (the API's 422: each field is valid on its own):
/// each `io_max` device is given once and caps something; each cpuset range goes forwards
/// and stays below the kernel's `NR_CPUS` bound ([`MAX_CPUSET_ID`]).
pub(crate) fn check_consistency(l: &Limits) -> Result<(), String> {
    for (i, d) in l.io_max.iter().enumerate() {
        if [d.read_bps, d.write_bps, d.read_iops, d.write_iops]
            .iter()
            .all(Option::is_none)
        {
            return Err(format!(
                "limits.io_max[{i}]: give at least one of read_bps, write_bps, read_iops, write_iops"
            ));
        }
        if l.io_max[..i].iter().any(|o| o.device == d.device) {
            return Err(format!(
                "limits.io_max[{i}].device {:?} is given twice",
                d.device
            ));
        }
    }
    for (name, v) in [
        ("cpuset_cpus", &l.cpuset_cpus),
        ("cpuset_mems", &l.cpuset_mems),
    ] {
        if let Some(list) = v {
            paddock_cgroup::resources::check_id_list(list, MAX_CPUSET_ID + 1)
                .map_err(|why| format!("limits.{name} {list:?}: {why}"))?;
        }
    }
    Ok(())
}

/// `<digits>KB|MB|GB`, as the kernel names huge page sizes in hugetlb files.
fn is_size_name(s: &str) -> bool {
    let Some(num) = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"))
    else {
        return false;
    };
    !num.is_empty()
        && num.len() <= 6
        && num.bytes().all(|b| b.is_ascii_digit())
        && !num.starts_with('0')
}

/// Resolves each `io_max` device path to its major:minor: it must be a block device and a
/// whole disk (the kernel takes `io.max` on whole devices only). Runs in the supervisor, so
/// a bad path is refused before anything is recorded or created.
pub(crate) fn resolve_io(l: &Limits) -> Result<Vec<IoMax>, Error> {
    l.io_max
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let dev = block_device(&d.device).map_err(|why| {
                Error::InvalidSpec(format!("limits.io_max[{i}].device {:?}: {why}", d.device))
            })?;
            Ok(d.to_io_max(dev))
        })
        .collect()
}

/// The device number of the whole block device at `path`, or why it is not one.
pub fn block_device(path: &Path) -> Result<DeviceNumber, String> {
    let md = std::fs::metadata(path).map_err(|e| format!("stat: {e}"))?;
    if !md.file_type().is_block_device() {
        return Err("is not a block device (io.max caps block devices, such as /dev/vdb)".into());
    }
    let rdev = md.rdev();
    let dev = DeviceNumber {
        major: rustix::fs::major(rdev),
        minor: rustix::fs::minor(rdev),
    };
    if Path::new(&format!("/sys/dev/block/{dev}/partition")).exists() {
        return Err(format!(
            "is a partition ({dev}); io.max takes whole devices only: give the disk it is on"
        ));
    }
    Ok(dev)
}

/// Writes the limits of this module to `cg` (after the single-value ones of
/// [`crate::spawn::limits`]). `memory.oom.group` is set to 1 unless `oom_group` is false,
/// wherever the memory controller is enabled for `cg` (where it is not, it is skipped,
/// unless `oom_group` is true: then the error names the controller).
pub(crate) fn apply(cg: &Cgroup, l: &Limits, io: &[IoMax]) -> Result<(), Error> {
    for (v, mk) in [
        (l.memory_min, Limit::MemoryMin as fn(Max) -> Limit),
        (l.memory_low, Limit::MemoryLow),
        (l.memory_swap_max, Limit::MemorySwapMax),
    ] {
        if let Some(v) = v {
            cg.set_limit(mk(Max::Value(v)))?;
        }
    }
    if let Some(w) = l.io_weight {
        cg.set_limit(Limit::IoWeight(w))?;
    }
    for m in io {
        cg.set_io_max(m)?;
    }
    // mems before cpus: the usual order of cpuset tools (both are independent in v2).
    if let Some(m) = &l.cpuset_mems {
        cg.set_cpuset_mems(m)?;
    }
    if let Some(c) = &l.cpuset_cpus {
        cg.set_cpuset_cpus(c)?;
    }
    for (size, bytes) in &l.hugetlb_max {
        cg.set_hugetlb_max(size, Max::Value(*bytes))?;
    }
    set_oom_group(cg, l.oom_group)?;
    Ok(())
}

/// `memory.oom.group` by the spec's `oom_group`: 1 by default, 0 when off, each only where
/// the memory controller is enabled; `true` insists on it (the error names `memory`).
fn set_oom_group(cg: &Cgroup, want: Option<bool>) -> Result<(), Error> {
    match cg.set_limit(Limit::MemoryOomGroup(want.unwrap_or(true))) {
        Ok(()) => Ok(()),
        Err(paddock_cgroup::Error::ControllerUnavailable { .. }) if want != Some(true) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(p: &str) -> IoDeviceLimit {
        IoDeviceLimit {
            device: p.into(),
            read_bps: None,
            write_bps: Some(1 << 20),
            read_iops: None,
            write_iops: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let ok = Limits {
            io_weight: Some(10_000),
            io_max: vec![dev("/dev/loop0"), dev("/dev/vdb")],
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
            hugetlb_max: [("2MB".to_string(), 4 << 20), ("1GB".into(), 0)].into(),
            ..Limits::default()
        };
        validate(&ok).unwrap();
        type Case = (fn(&mut Limits), &'static str);
        let cases: Vec<Case> = vec![
            (|l| l.io_weight = Some(0), "limits.io_weight"),
            (|l| l.io_weight = Some(10_001), "limits.io_weight"),
            (
                |l| l.io_max[1].device = "dev/vdb".into(),
                "limits.io_max[1].device",
            ),
            (
                |l| l.io_max[0].read_iops = Some(0),
                "limits.io_max[0].read_iops",
            ),
            (|l| l.cpuset_cpus = Some("".into()), "limits.cpuset_cpus"),
            (
                |l| l.cpuset_cpus = Some("1,,2".into()),
                "limits.cpuset_cpus",
            ),
            (
                |l| l.cpuset_cpus = Some("1-2-3".into()),
                "limits.cpuset_cpus",
            ),
            (
                |l| l.cpuset_mems = Some("12345678".into()),
                "limits.cpuset_mems",
            ),
            (
                |l| {
                    l.hugetlb_max.insert("2M".into(), 1);
                },
                "limits.hugetlb_max",
            ),
            (
                |l| {
                    l.hugetlb_max.insert("0MB".into(), 1);
                },
                "limits.hugetlb_max",
            ),
        ];
        for (set, want) in cases {
            let mut l = ok.clone();
            set(&mut l);
            let e = validate(&l).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        // What the schema cannot say is checked apart (the API's 422).
        let cases: Vec<Case> = vec![
            (|l| l.io_max[1] = dev("/dev/loop0"), "given twice"),
            (|l| l.io_max[0].write_bps = None, "at least one of"),
            (|l| l.cpuset_cpus = Some("3-1".into()), "limits.cpuset_cpus"),
            (
                |l| l.cpuset_mems = Some("0-9000".into()),
                "limits.cpuset_mems",
            ),
        ];
        for (set, want) in cases {
            let mut l = ok.clone();
            set(&mut l);
            assert!(validate(&l).is_ok(), "{want}");
            let e = check_consistency(&l).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(check_consistency(&ok).is_ok());
    }

    #[test]
    fn controllers_of_the_new_limits() {
        let l = Limits {
            memory_low: Some(1),
            io_weight: Some(5),
            cpuset_cpus: Some("0".into()),
            hugetlb_max: [("2MB".to_string(), 0)].into(),
            ..Limits::default()
        };
        assert_eq!(l.controllers(), vec!["memory", "io", "cpuset", "hugetlb"]);
        // oom_group's default needs nothing; asking for it needs memory.
        assert!(Limits::default().controllers().is_empty());
        let l = Limits {
            oom_group: Some(true),
            ..Limits::default()
        };
        assert_eq!(l.controllers(), vec!["memory"]);
        let l = Limits {
            oom_group: Some(false),
            ..Limits::default()
        };
        assert!(l.controllers().is_empty());
    }

    #[test]
    fn block_devices_only() {
        let e = block_device(Path::new("/dev/null")).unwrap_err();
        assert!(e.contains("not a block device"), "{e}");
        let e = block_device(Path::new("/nonexistent/dev")).unwrap_err();
        assert!(e.contains("stat"), "{e}");
        let l = Limits {
            io_max: vec![dev("/dev/null")],
            ..Limits::default()
        };
        let e = resolve_io(&l).unwrap_err().to_string();
        assert!(e.contains("limits.io_max[0].device"), "{e}");
    }
}
