//! Landlock: a ruleset prepared in the parent (paths opened by inode before any
//! `pivot_root`), enforced by the child (`landlock_restrict_self`) after everything else but
//! seccomp.
//!
//! # What the rules allow
//!
//! The ruleset handles every filesystem access right of the ABI in use (and, from ABI 4,
//! TCP bind and connect when [`Landlock::tcp_bind`] / [`Landlock::tcp_connect`] are given),
//! so anything no rule allows is refused with `EACCES`. The rules are attached to inodes
//! opened in the parent (`O_PATH`, before the clone and so before any `pivot_root`):
//!
//! * **With a rootfs:** the rootfs directory, all rights (read and execute only when
//!   [`Filesystem::readonly`](super::Filesystem::readonly)). Landlock checks an access by
//!   walking the file's path up to the root *through mount points*, so the mounts the jail
//!   makes below the rootfs (tmpfs, proc, the minimal `/dev`, binds) are reached through the
//!   rootfs rule; a file is allowed when a rule on any directory on its path allows it (a
//!   mount's root counts; the directory a mount hides does not).
//! * **Without a rootfs** (the host tree with mounts on top, or no filesystem at all): the
//!   host's `/`, read and execute only. The payload can read what its uid may read, as
//!   without Landlock, but write nothing except through the rules below.
//! * Every [`Mount::Bind`](super::Mount::Bind) source: all rights, or read and execute
//!   when the bind is read-only. (A rule on the source also allows the source by its host
//!   path, which an escape from the mount namespace would see; under a writable rootfs the
//!   rootfs rule already covers the bind through its target, so a read-only bind there is
//!   kept read-only by its `MS_RDONLY` mount flag, not by Landlock: Landlock rules add
//!   rights, they cannot take away what an enclosing rule gives.)
//! * Every device in [`Filesystem::devices`](super::Filesystem::devices) and, with
//!   [`Filesystem::minimal_dev`](super::Filesystem::minimal_dev), the host nodes it binds
//!   (`null`, `zero`, `full`, `random`, `urandom`, `tty`): read and write, plus `ioctl` on
//!   devices from ABI 5.
//! * Where the enclosing rule is read-only (a read-only rootfs, or no rootfs), the
//!   writable mounts the jail makes — tmpfs, mqueue and the minimal `/dev` (its tmpfs, the
//!   new devpts instance with `ptmx`, and `shm`) — need a rule of their own, all rights.
//!   Their root inodes do not exist before the spawn, and a rule on the directory they are
//!   mounted on would not help: Landlock's walk skips a mountpoint hidden under a mount
//!   (it checks the mount's root, then goes on from the mountpoint's parent). So these
//!   rules are added by the child (`ChildRule`, crate-internal) after its mounts and before
//!   `landlock_restrict_self`, on the new mounts' roots.
//!
//! Nothing else: no rule for proc or sysfs (under a read-only rootfs they are read-only to
//! Landlock too: no writes to `/proc/self/...`), none for the cwd.
//!
//! Once restricted, a process cannot change mounts (`mount`, `umount`, `pivot_root` fail
//! with `EPERM`), and an fd it inherited cannot be used to open anything outside the rules
//! (`openat` on an inherited `O_PATH` fd is checked like any open). Files it already had
//! open stay usable: Landlock checks opens, not reads and writes on open files.
//!
//! # Modes and kernels
//!
//! [`LandlockMode::BestEffort`] enforces what the kernel supports and reports the rest as
//! warnings; [`LandlockMode::Required`] fails the spawn instead. What is missing, by ABI:
//! no Landlock at all (Linux < 5.13 or not in `lsm=`); `truncate(2)` of files outside the
//! rules (ABI 3, Linux 6.2); the TCP rules (ABI 4, Linux 6.7). On ABI 1, renaming or
//! linking a file into another directory is always refused (stricter, so a warning in both
//! modes). [`plan`] says what a jail would get without opening anything.

mod rules;

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use super::Jail;
use crate::SpawnError;

/// Whether and how a jail uses Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LandlockMode {
    /// No Landlock.
    #[default]
    Off,
    /// Enforce what the kernel supports; a kernel without Landlock (or without an ABI
    /// feature asked for) gets a warning, not a failure.
    BestEffort,
    /// Fail the spawn when the kernel cannot enforce every rule asked for.
    Required,
}

/// The Landlock part of a jail. The filesystem rules are derived from the jail's
/// [`Filesystem`](super::Filesystem): the rootfs and every bind and device, read-only binds
/// read-only; nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landlock {
    /// Off, best effort or required.
    pub mode: LandlockMode,
    /// TCP ports the program may bind (Landlock ABI 4); `None`: not restricted.
    pub tcp_bind: Option<Vec<u16>>,
    /// TCP ports the program may connect to (Landlock ABI 4); `None`: not restricted.
    pub tcp_connect: Option<Vec<u16>>,
}

/// What Landlock a jail gets on this kernel, for `paddock inspect` and the start event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LandlockReport {
    /// The Landlock ABI the ruleset is built for (the kernel's, capped at the newest the
    /// `landlock` crate knows); `None`: no Landlock is enforced (off, or not supported).
    pub abi: Option<u32>,
    /// One line per rule or feature that is not enforced as asked (best effort), or is
    /// stricter than asked; empty when everything is enforced as asked.
    pub warnings: Vec<String>,
    /// With [`LandlockMode::Required`]: why the spawn would fail (what the kernel lacks);
    /// `abi` is then `None`. Always `None` in the other modes.
    pub error: Option<String>,
}

/// A rule the child adds to the ruleset after making its mounts (after `pivot_root`, and the
/// read-only remount), before `landlock_restrict_self`, with raw system calls only:
///
/// ```text
/// fd = open(path, O_PATH | O_CLOEXEC | O_DIRECTORY)
/// attr = landlock_path_beneath_attr { allowed_access: access, parent_fd: fd }   // packed
/// landlock_add_rule(ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &attr, 0)
/// close(fd)
/// ```
///
/// A failure is the child's (stage `landlock rule`, the path, the errno). See
/// [`PathBeneathAttr`] and [`LANDLOCK_RULE_PATH_BENEATH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildRule {
    /// The new mount's root, in the program's view (`/tmp`, `/dev`).
    #[allow(dead_code)]
    pub path: std::ffi::CString,
    /// The access rights (`LANDLOCK_ACCESS_FS_*` bits), all of the ruleset's.
    #[allow(dead_code)]
    pub access: u64,
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel declares it).
#[repr(C, packed)]
#[allow(dead_code)]
pub(crate) struct PathBeneathAttr {
    /// `LANDLOCK_ACCESS_FS_*` bits.
    pub allowed_access: u64,
    /// The directory the rule is for (an `O_PATH` fd is enough).
    pub parent_fd: i32,
}

/// `LANDLOCK_RULE_PATH_BENEATH`, the rule type of [`PathBeneathAttr`].
#[allow(dead_code)]
pub(crate) const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;

/// A ruleset ready for the child: the ruleset fd and the ABI version enforced.
#[derive(Debug)]
pub(crate) struct PreparedLandlock {
    /// The ruleset fd, passed to `landlock_restrict_self` in the child.
    #[allow(dead_code)]
    pub fd: OwnedFd,
    /// The Landlock ABI version the ruleset uses.
    #[allow(dead_code)]
    pub abi: u32,
    /// The report's warnings (as [`plan`] gives them); already logged with
    /// `tracing::warn!`.
    #[allow(dead_code)]
    pub warnings: Vec<String>,
    /// Rules the child adds after its mounts, before `landlock_restrict_self`.
    #[allow(dead_code)]
    pub child_rules: Vec<ChildRule>,
}

/// The Landlock ABI version of the running kernel (`landlock_create_ruleset` with
/// `LANDLOCK_CREATE_RULESET_VERSION`), or `None` when the kernel has no Landlock (not built
/// in, or not enabled in `lsm=`). Probed once per process; no fd is created.
pub fn kernel_abi() -> Option<u32> {
    probe().kernel
}

/// What the spawn would build for `jail` on this kernel, without opening any path or
/// creating a ruleset: the ABI, the warnings, and in required mode the reason the spawn
/// would fail. A path that cannot be opened for its rule is found only by the spawn (an
/// error naming it). Cheap and non-blocking (one cached probe, no filesystem access).
pub fn plan(jail: &Jail) -> LandlockReport {
    report(jail, probe().effective)
}

/// Build the ruleset for `jail` in the parent; `Ok(None)` when Landlock is off (or
/// unsupported in best-effort mode).
pub(crate) fn prepare(jail: &Jail) -> Result<Option<PreparedLandlock>, SpawnError> {
    prepare_at(jail, probe().effective)
}

/// Test entry: [`plan`] as if the kernel's ABI were at most `abi_cap` (`Some(0)`: no
/// Landlock). Not a stable interface.
#[doc(hidden)]
pub fn plan_capped(jail: &Jail, abi_cap: Option<u32>) -> LandlockReport {
    report(jail, capped(abi_cap))
}

/// Test entry: what the spawn builds, as if the kernel's ABI were at most `abi_cap`
/// (`Some(0)`: no Landlock), or `None` when no ruleset is made. Not a stable interface.
#[doc(hidden)]
pub fn prepare_capped(
    jail: &Jail,
    abi_cap: Option<u32>,
) -> Result<Option<TestPrepared>, SpawnError> {
    Ok(prepare_at(jail, capped(abi_cap))?.map(|p| TestPrepared {
        fd: p.fd,
        abi: p.abi,
        warnings: p.warnings,
        child_rules: p
            .child_rules
            .into_iter()
            .map(|r| (r.path, r.access))
            .collect(),
    }))
}

/// What [`prepare_capped`] returns. Not a stable interface.
#[doc(hidden)]
#[derive(Debug)]
pub struct TestPrepared {
    /// The ruleset fd.
    pub fd: OwnedFd,
    /// The ABI it is built for.
    pub abi: u32,
    /// The warnings.
    pub warnings: Vec<String>,
    /// The child's rules: path and access bits.
    pub child_rules: Vec<(std::ffi::CString, u64)>,
}

fn capped(abi_cap: Option<u32>) -> Option<u32> {
    let effective = probe().effective;
    match abi_cap {
        None => effective,
        Some(0) => None,
        Some(cap) => effective.map(|e| e.min(cap)),
    }
}

struct Probe {
    /// The kernel's ABI, as it reports it.
    kernel: Option<u32>,
    /// The ABI the ruleset is built for: the kernel's, capped at the crate's newest.
    effective: Option<u32>,
}

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        use landlock::{LandlockStatus, RestrictSelf};
        // With no flag and no_new_privs off, `apply` only reads the status probed by
        // `default()` (landlock_create_ruleset(NULL, 0, VERSION)): no restriction, no fd.
        let status = RestrictSelf::default()
            .no_new_privs(false)
            .apply()
            .map(|s| s.landlock);
        match status {
            Ok(LandlockStatus::Available {
                effective_abi,
                kernel_abi,
            }) => {
                let effective = effective_abi as u32;
                Probe {
                    kernel: Some(kernel_abi.map_or(effective, |k| k as u32)),
                    effective: Some(effective),
                }
            }
            _ => Probe {
                kernel: None,
                effective: None,
            },
        }
    })
}

/// What a ruleset handles beyond the filesystem, and the report, decided from the jail and
/// the ABI alone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    /// `None`: no ruleset (off, or best effort without Landlock).
    abi: Option<u32>,
    tcp_bind: bool,
    tcp_connect: bool,
    warnings: Vec<String>,
}

/// The decision for a jail on a kernel whose effective ABI is `abi`. `Err` (required mode
/// only) says everything that is missing, in one line.
fn decide(ll: &Landlock, abi: Option<u32>) -> Result<Decision, String> {
    let mut d = Decision {
        abi: None,
        tcp_bind: false,
        tcp_connect: false,
        warnings: Vec::new(),
    };
    if ll.mode == LandlockMode::Off {
        return Ok(d);
    }
    let required = ll.mode == LandlockMode::Required;
    let Some(abi) = abi else {
        let what = "the kernel has no Landlock (it needs Linux 5.13 or newer with \
                    CONFIG_SECURITY_LANDLOCK and `landlock` in the lsm= boot parameter)";
        if required {
            return Err(format!(
                "Landlock is required but {what}; enable it, or ask for Landlock \
                 best-effort or off"
            ));
        }
        d.warnings.push(format!("Landlock is not enforced: {what}"));
        return Ok(d);
    };
    let mut missing = Vec::new();
    if abi < 3 {
        missing.push(format!(
            "truncate(2) of files outside the rules is not restricted (needs Landlock ABI 3, \
             Linux 6.2; the kernel has ABI {abi})"
        ));
    }
    let tcp = ll.tcp_bind.is_some() || ll.tcp_connect.is_some();
    if tcp && abi < 4 {
        missing.push(format!(
            "the TCP bind/connect port rules are not enforced (they need Landlock ABI 4, \
             Linux 6.7; the kernel has ABI {abi})"
        ));
    } else {
        d.tcp_bind = ll.tcp_bind.is_some();
        d.tcp_connect = ll.tcp_connect.is_some();
    }
    if required && !missing.is_empty() {
        return Err(format!(
            "Landlock is required but the kernel cannot enforce every rule: {}; use a \
             newer kernel, or ask for Landlock best-effort",
            missing.join("; ")
        ));
    }
    d.warnings
        .extend(missing.into_iter().map(|m| format!("Landlock: {m}")));
    if abi < 2 {
        d.warnings.push(
            "Landlock: renaming or linking a file into another directory is always refused \
             (Landlock ABI 1 has no `refer` right)"
                .into(),
        );
    }
    d.abi = Some(abi);
    Ok(d)
}

fn report(jail: &Jail, abi: Option<u32>) -> LandlockReport {
    match decide(&jail.landlock, abi) {
        Ok(d) => LandlockReport {
            abi: d.abi,
            warnings: d.warnings,
            error: None,
        },
        Err(e) => LandlockReport {
            abi: None,
            warnings: Vec::new(),
            error: Some(e),
        },
    }
}

fn prepare_at(jail: &Jail, abi: Option<u32>) -> Result<Option<PreparedLandlock>, SpawnError> {
    let d = decide(&jail.landlock, abi).map_err(SpawnError::Invalid)?;
    let Some(abi) = d.abi else {
        for w in &d.warnings {
            tracing::warn!("{w}");
        }
        return Ok(None);
    };
    let (fd, child_rules) = rules::build(jail, abi, d.tcp_bind, d.tcp_connect)?;
    for w in &d.warnings {
        tracing::warn!("{w}");
    }
    Ok(Some(PreparedLandlock {
        fd,
        abi,
        warnings: d.warnings,
        child_rules,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(mode: LandlockMode, tcp: bool) -> Landlock {
        Landlock {
            mode,
            tcp_bind: None,
            tcp_connect: tcp.then(|| vec![443]),
        }
    }

    #[test]
    fn off_decides_nothing_whatever_the_kernel() {
        for abi in [None, Some(1), Some(7)] {
            let d = decide(&ll(LandlockMode::Off, true), abi).unwrap();
            assert_eq!(d.abi, None);
            assert!(d.warnings.is_empty());
        }
    }

    #[test]
    fn no_landlock_warns_in_best_effort_and_fails_when_required() {
        let d = decide(&ll(LandlockMode::BestEffort, false), None).unwrap();
        assert_eq!(d.abi, None);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("no Landlock"), "{:?}", d.warnings);
        let e = decide(&ll(LandlockMode::Required, false), None).unwrap_err();
        assert!(e.contains("required") && e.contains("lsm="), "{e}");
    }

    #[test]
    fn tcp_rules_need_abi_4() {
        let d = decide(&ll(LandlockMode::BestEffort, true), Some(3)).unwrap();
        assert_eq!(d.abi, Some(3));
        assert!(!d.tcp_connect);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("TCP") && w.contains("ABI 4"))
        );
        let e = decide(&ll(LandlockMode::Required, true), Some(3)).unwrap_err();
        assert!(e.contains("TCP") && e.contains("ABI 3"), "{e}");
        // Without TCP rules, ABI 3 is enough even when required.
        let d = decide(&ll(LandlockMode::Required, false), Some(3)).unwrap();
        assert_eq!(d.abi, Some(3));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        for mode in [LandlockMode::BestEffort, LandlockMode::Required] {
            let d = decide(&ll(mode, true), Some(4)).unwrap();
            assert!(d.tcp_connect && !d.tcp_bind);
            assert!(d.warnings.is_empty());
        }
    }

    #[test]
    fn old_abis_name_every_gap() {
        let d = decide(&ll(LandlockMode::BestEffort, true), Some(1)).unwrap();
        assert_eq!(d.abi, Some(1));
        let all = d.warnings.join("\n");
        assert!(all.contains("truncate") && all.contains("TCP") && all.contains("refer"));
        let e = decide(&ll(LandlockMode::Required, true), Some(2)).unwrap_err();
        assert!(e.contains("truncate") && e.contains("TCP"), "{e}");
        // ABI 1's missing `refer` is stricter, not weaker: no failure for it alone.
        let e = decide(&ll(LandlockMode::Required, false), Some(1)).unwrap_err();
        assert!(!e.contains("refer"), "{e}");
    }

    #[test]
    fn report_carries_the_required_failure() {
        let jail = Jail {
            landlock: ll(LandlockMode::Required, true),
            ..Default::default()
        };
        let r = report(&jail, Some(3));
        assert_eq!(r.abi, None);
        assert!(r.error.as_deref().unwrap().contains("TCP"));
        let r = report(&jail, Some(7));
        assert_eq!((r.abi, r.error), (Some(7), None));
    }
}
