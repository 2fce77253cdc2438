//! The resource flags beyond `--memory`, `--cpus` and `--pids` (Docker's names where Docker
//! has the limit; see docs/limits.md), shared by `paddock run` and `paddock update`, and the
//! [`Limits`] fields they set. Parsing is pure and unit-tested.

use anyhow::{Context, Result, bail};
use hyper::Method;
use paddock_supervisor::{IoDeviceLimit, Limits, LimitsUpdate, parse_size};

use crate::cli::{Out, print_json, term_safe};
use crate::client::{Client, enc};

/// The resource flags (see docs/limits.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Memory protected from reclaim as long as possible (memory.low), e.g. 256M.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub memory_low: Option<String>,
    /// Memory never reclaimed (memory.min), e.g. 128M.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub memory_min: Option<String>,
    /// Swap the sandbox may use (memory.swap.max; 0 = none), e.g. 1G. (Docker's
    /// --memory-swap counts memory and swap together; this is swap alone.)
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub memory_swap_max: Option<String>,
    /// Let the OOM killer kill one process instead of the whole sandbox (memory.oom.group
    /// = 0; by default it is 1 wherever the memory controller is available).
    #[arg(long, help_heading = "Limits")]
    pub no_oom_group: bool,
    /// Proportional I/O weight, 1..=10000 (io.weight; default 100).
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub io_weight: Option<u64>,
    /// Read bandwidth cap of a block device (io.max rbps), e.g. /dev/vdb:10M; repeatable.
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Limits")]
    pub device_read_bps: Vec<String>,
    /// Write bandwidth cap of a block device (io.max wbps), e.g. /dev/vdb:10M; repeatable.
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Limits")]
    pub device_write_bps: Vec<String>,
    /// Read operations per second cap of a block device (io.max riops); repeatable.
    #[arg(long, value_name = "DEVICE:N", help_heading = "Limits")]
    pub device_read_iops: Vec<String>,
    /// Write operations per second cap of a block device (io.max wiops); repeatable.
    #[arg(long, value_name = "DEVICE:N", help_heading = "Limits")]
    pub device_write_iops: Vec<String>,
    /// CPUs the sandbox may run on (cpuset.cpus), e.g. 0-3,6.
    #[arg(long, value_name = "LIST", help_heading = "Limits")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes it may allocate from (cpuset.mems), e.g. 0.
    #[arg(long, value_name = "LIST", help_heading = "Limits")]
    pub cpuset_mems: Option<String>,
    /// Huge pages of one size (hugetlb.<size>.max), e.g. 2MB=64M; repeatable.
    #[arg(long, value_name = "PAGESIZE=SIZE", help_heading = "Limits")]
    pub hugetlb: Vec<String>,
}

impl LimitArgs {
    /// Sets the fields of `l` these flags give (others are left as they are).
    pub fn apply(&self, l: &mut Limits) -> Result<()> {
        let size = |flag: &str, v: &Option<String>| -> Result<Option<u64>> {
            v.as_deref()
                .map(|s| {
                    if s.trim() == "0" {
                        return Ok(0);
                    }
                    parse_size(s).with_context(|| format!("--{flag}"))
                })
                .transpose()
        };
        if let Some(v) = size("memory-low", &self.memory_low)? {
            l.memory_low = Some(v);
        }
        if let Some(v) = size("memory-min", &self.memory_min)? {
            l.memory_min = Some(v);
        }
        if let Some(v) = size("memory-swap-max", &self.memory_swap_max)? {
            l.memory_swap_max = Some(v);
        }
        if self.no_oom_group {
            l.oom_group = Some(false);
        }
        if self.io_weight.is_some() {
            l.io_weight = self.io_weight;
        }
        type Slot = fn(&mut IoDeviceLimit) -> &mut Option<u64>;
        let io: [(&str, &Vec<String>, bool, Slot); 4] = [
            ("device-read-bps", &self.device_read_bps, true, |d| {
                &mut d.read_bps
            }),
            ("device-write-bps", &self.device_write_bps, true, |d| {
                &mut d.write_bps
            }),
            ("device-read-iops", &self.device_read_iops, false, |d| {
                &mut d.read_iops
            }),
            ("device-write-iops", &self.device_write_iops, false, |d| {
                &mut d.write_iops
            }),
        ];
        for (flag, values, bytes, slot) in io {
            for v in values {
                let (dev, rate) = v
                    .rsplit_once(':')
                    .with_context(|| format!("--{flag} {v:?}: expected DEVICE:RATE"))?;
                if dev.is_empty() {
                    bail!("--{flag} {v:?}: no device path before ':'");
                }
                let n = if bytes {
                    parse_size(rate).with_context(|| format!("--{flag} {v:?}"))?
                } else {
                    rate.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| {
                            format!("--{flag} {v:?}: {rate:?} is not a positive number")
                        })?
                };
                let i = match l.io_max.iter().position(|d| d.device.as_os_str() == dev) {
                    Some(i) => i,
                    None => {
                        l.io_max.push(IoDeviceLimit {
                            device: dev.into(),
                            read_bps: None,
                            write_bps: None,
                            read_iops: None,
                            write_iops: None,
                        });
                        l.io_max.len() - 1
                    }
                };
                *slot(&mut l.io_max[i]) = Some(n);
            }
        }
        if let Some(c) = &self.cpuset_cpus {
            l.cpuset_cpus = Some(c.clone());
        }
        if let Some(m) = &self.cpuset_mems {
            l.cpuset_mems = Some(m.clone());
        }
        for h in &self.hugetlb {
            let (page, limit) = h.split_once('=').with_context(|| {
                format!("--hugetlb {h:?}: expected PAGESIZE=SIZE, e.g. 2MB=64M")
            })?;
            let bytes = if limit.trim() == "0" {
                0
            } else {
                parse_size(limit).with_context(|| format!("--hugetlb {h:?}"))?
            };
            l.hugetlb_max.insert(page.to_owned(), bytes);
        }
        Ok(())
    }
}

/// Arguments of `paddock update`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    /// Sandbox ID.
    pub id: String,
    /// Hard memory limit (memory.max), e.g. 1G; `max` lifts it.
    #[arg(long, value_name = "SIZE|max")]
    pub memory: Option<String>,
    /// Memory throttling limit (memory.high); `max` lifts it.
    #[arg(long, value_name = "SIZE|max")]
    pub memory_high: Option<String>,
    /// CPU quota in CPUs (cpu.max), e.g. 2; `max` lifts it.
    #[arg(long, value_name = "CPUS|max")]
    pub cpus: Option<String>,
    /// CPU weight, 1..=10000 (cpu.weight).
    #[arg(long, value_name = "N")]
    pub cpu_weight: Option<u64>,
    /// Maximum number of processes and threads (pids.max); `max` lifts it.
    #[arg(long, value_name = "N|max")]
    pub pids: Option<String>,
    /// The other limits (the --device-* flags replace the sandbox's whole io.max list,
    /// --hugetlb its whole hugetlb list).
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl UpdateArgs {
    /// The change these flags ask for.
    pub fn to_update(&self) -> Result<LimitsUpdate> {
        fn lift<T>(
            flag: &str,
            v: &Option<String>,
            parse: impl Fn(&str) -> Result<T>,
        ) -> Result<Option<Option<T>>> {
            v.as_deref()
                .map(|s| match s.trim() {
                    "max" => Ok(None),
                    s => parse(s).with_context(|| format!("--{flag}")).map(Some),
                })
                .transpose()
        }
        let mut u = LimitsUpdate {
            memory_max: lift("memory", &self.memory, |s| Ok(parse_size(s)?))?,
            memory_high: lift("memory-high", &self.memory_high, |s| Ok(parse_size(s)?))?,
            cpus: lift("cpus", &self.cpus, |s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite())
                    .with_context(|| format!("{s:?} is not a number of CPUs"))
            })?,
            pids_max: lift("pids", &self.pids, |s| {
                s.parse::<u64>()
                    .with_context(|| format!("{s:?} is not a number"))
            })?,
            cpu_weight: self.cpu_weight.map(Some),
            ..LimitsUpdate::default()
        };
        let mut l = Limits::default();
        self.limits.apply(&mut l)?;
        let d = Limits::default();
        macro_rules! given {
            ($($f:ident),*) => {$(
                if l.$f != d.$f {
                    u.$f = Some(l.$f.clone());
                }
            )*};
        }
        given!(
            memory_low,
            memory_min,
            memory_swap_max,
            oom_group,
            io_weight,
            cpuset_cpus,
            cpuset_mems
        );
        if !l.io_max.is_empty() {
            u.io_max = Some(l.io_max);
        }
        if !l.hugetlb_max.is_empty() {
            u.hugetlb_max = Some(l.hugetlb_max);
        }
        if u.is_empty() {
            bail!("nothing to change: give at least one limit (see paddock update --help)");
        }
        Ok(u)
    }
}

/// `paddock update`: `PATCH /v1/sandboxes/{id}`; prints the limits now in force.
pub async fn update(c: &Client, out: Out, a: &UpdateArgs) -> Result<u8> {
    let body = serde_json::to_vec(&serde_json::json!({ "limits": a.to_update()? }))?;
    let v = c
        .json(
            Method::PATCH,
            &format!("/v1/sandboxes/{}", enc(&a.id)),
            Some(body),
        )
        .await?;
    if out.json {
        print_json(&v)?;
    } else {
        let limits = v.pointer("/spec/limits").cloned().unwrap_or_default();
        println!(
            "{}: limits {}",
            term_safe(&a.id),
            term_safe(&limits.to_string())
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        l: LimitArgs,
    }

    fn limits(args: &[&str]) -> Result<Limits> {
        let c = Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        let mut l = Limits::default();
        c.l.apply(&mut l)?;
        Ok(l)
    }

    #[test]
    fn flags_set_their_fields() {
        let l = limits(&[
            "--memory-low=256M",
            "--memory-min=1M",
            "--memory-swap-max=0",
            "--no-oom-group",
            "--io-weight=50",
            "--device-write-bps=/dev/loop0:1M",
            "--device-read-iops=/dev/loop0:100",
            "--device-read-bps=/dev/vdb:2k",
            "--cpuset-cpus=0-1",
            "--cpuset-mems=0",
            "--hugetlb=2MB=4M",
            "--hugetlb=1GB=0",
        ])
        .unwrap();
        assert_eq!(l.memory_low, Some(256 << 20));
        assert_eq!(l.memory_min, Some(1 << 20));
        assert_eq!(l.memory_swap_max, Some(0));
        assert_eq!(l.oom_group, Some(false));
        assert_eq!(l.io_weight, Some(50));
        assert_eq!(l.io_max.len(), 2);
        let dev = |p: &str| {
            l.io_max
                .iter()
                .find(|d| d.device.to_str() == Some(p))
                .unwrap()
        };
        assert_eq!(dev("/dev/loop0").write_bps, Some(1 << 20));
        assert_eq!(dev("/dev/loop0").read_iops, Some(100));
        assert_eq!(dev("/dev/vdb").read_bps, Some(2048));
        assert_eq!(dev("/dev/vdb").write_bps, None);
        assert_eq!(l.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(l.hugetlb_max["2MB"], 4 << 20);
        assert_eq!(l.hugetlb_max["1GB"], 0);
        assert_eq!(limits(&[]).unwrap(), Limits::default());
    }

    #[test]
    fn update_flags_build_the_change() {
        #[derive(Parser)]
        struct U {
            #[command(flatten)]
            u: UpdateArgs,
        }
        let u = |args: &[&str]| {
            U::try_parse_from(["x", "web-1"].iter().chain(args.iter()).copied())
                .unwrap()
                .u
                .to_update()
        };
        let c = u(&["--memory=1G", "--cpus=2", "--pids=max", "--memory-low=1M"]).unwrap();
        assert_eq!(c.memory_max, Some(Some(1 << 30)));
        assert_eq!(c.cpus, Some(Some(2.0)));
        assert_eq!(c.pids_max, Some(None));
        assert_eq!(c.memory_low, Some(Some(1 << 20)));
        assert_eq!(c.memory_high, None);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"memory_max": 1073741824u64, "cpus": 2.0, "pids_max": null, "memory_low": 1048576})
        );
        assert!(format!("{:#}", u(&[]).unwrap_err()).contains("nothing to change"));
        assert!(format!("{:#}", u(&["--cpus=x"]).unwrap_err()).contains("--cpus"));
    }

    #[test]
    fn bad_flags_name_themselves() {
        for (args, want) in [
            (&["--device-write-bps=/dev/loop0"][..], "--device-write-bps"),
            (&["--device-write-bps=:1M"][..], "--device-write-bps"),
            (&["--device-read-iops=/dev/x:0"][..], "--device-read-iops"),
            (&["--hugetlb=2MB"][..], "--hugetlb"),
            (&["--memory-low=lots"][..], "--memory-low"),
        ] {
            let e = format!("{:#}", limits(args).unwrap_err());
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
