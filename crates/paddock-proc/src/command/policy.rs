//! The fallback policy: which clone a spawn tries first, and what it does when the kernel
//! refuses one — decided by pure functions of the cached detection results and the errno
//! ([`first_attempt`], [`after_error`], [`after_success`], [`choose_close_mode`]), unit-tested
//! below without root. The caller applies a decision: it records what was learned with
//! [`record`] (the process-global cache, and one `warn` line per fallback) and clones again.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::io::Errno;

use super::Namespaces;
use super::{CloseMethod, SpawnPath};
use crate::jail::Jail;
use crate::sys::{self, CloneKind, CloseMode};

/// What is known about one kernel feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Not found out yet.
    Unknown,
    /// The kernel has it.
    Yes,
    /// The kernel refused it; not tried again.
    No,
}

/// The detection results a decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Detected {
    /// `clone3` usable.
    pub clone3: Known,
    /// `CLONE_INTO_CGROUP` accepted.
    pub into_cgroup: Known,
    /// `CLONE_CLEAR_SIGHAND` accepted.
    pub clear_sighand: Known,
}

/// Something a clone attempt found out about the kernel (or the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// `clone3` rejects `CLONE_CLEAR_SIGHAND` (`EINVAL`): handlers are reset in the child.
    NoClearSighand,
    /// `clone3` rejects `CLONE_INTO_CGROUP` (`E2BIG`): children write `cgroup.procs`.
    NoIntoCgroup,
    /// This target cgroup refuses `CLONE_INTO_CGROUP` (`EOPNOTSUPP`): this spawn writes
    /// `cgroup.procs` instead. Not cached (it is about the target, not the kernel).
    TargetRefusesIntoCgroup,
    /// `clone3` is missing (`ENOSYS`): legacy `clone` from now on.
    NoClone3,
    /// `clone3` fails with `EPERM` where legacy `clone` worked (seccomp): legacy `clone`
    /// from now on.
    Clone3Denied,
    /// `clone3` worked.
    Clone3Works,
}

/// What to do after a failed clone attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Clone again as `kind`, after recording `finding`. With `probing_eperm`, the attempt
    /// is a probe: its success means [`Finding::Clone3Denied`].
    Retry {
        kind: CloneKind,
        finding: Option<Finding>,
        probing_eperm: bool,
    },
    /// The target has controllers enabled (`EBUSY`): [`crate::SpawnError::CgroupNotLeaf`].
    NotLeaf,
    /// Give up: `op` failed with `errno`.
    Fail { op: &'static str, errno: Errno },
}

/// The clone a spawn tries first.
pub(crate) fn first_attempt(path: SpawnPath, d: Detected) -> CloneKind {
    match path {
        SpawnPath::Auto if d.clone3 == Known::No => CloneKind::Legacy,
        SpawnPath::Auto => CloneKind::Clone3 {
            into_cgroup: d.into_cgroup != Known::No,
            clear_sighand: d.clear_sighand != Known::No,
        },
        SpawnPath::Clone3WithoutIntoCgroup => CloneKind::Clone3 {
            into_cgroup: false,
            clear_sighand: d.clear_sighand != Known::No,
        },
        SpawnPath::LegacyClone => CloneKind::Legacy,
    }
}

/// What to do after the clone `kind` failed with `errno`, for a spawn into a cgroup
/// (`has_cgroup`) or into the caller's own.
pub(crate) fn after_error(kind: CloneKind, errno: Errno, has_cgroup: bool, d: Detected) -> Next {
    let retry = |kind, finding| Next::Retry {
        kind,
        finding: Some(finding),
        probing_eperm: false,
    };
    match (kind, errno) {
        (
            CloneKind::Clone3 {
                into_cgroup,
                clear_sighand: true,
            },
            Errno::INVAL,
        ) if d.clear_sighand != Known::Yes => retry(
            CloneKind::Clone3 {
                into_cgroup,
                clear_sighand: false,
            },
            Finding::NoClearSighand,
        ),
        (
            CloneKind::Clone3 {
                into_cgroup: true,
                clear_sighand,
            },
            Errno::TOOBIG,
        ) if has_cgroup => retry(
            CloneKind::Clone3 {
                into_cgroup: false,
                clear_sighand,
            },
            Finding::NoIntoCgroup,
        ),
        (
            CloneKind::Clone3 {
                into_cgroup: true,
                clear_sighand,
            },
            Errno::OPNOTSUPP,
        ) if has_cgroup => retry(
            CloneKind::Clone3 {
                into_cgroup: false,
                clear_sighand,
            },
            Finding::TargetRefusesIntoCgroup,
        ),
        (
            CloneKind::Clone3 {
                into_cgroup: true, ..
            },
            Errno::BUSY,
        ) if has_cgroup => Next::NotLeaf,
        (CloneKind::Clone3 { .. }, Errno::NOSYS) => retry(CloneKind::Legacy, Finding::NoClone3),
        // Could be seccomp or a real permission problem: try clone.
        (CloneKind::Clone3 { .. }, Errno::PERM) if d.clone3 != Known::Yes => Next::Retry {
            kind: CloneKind::Legacy,
            finding: None,
            probing_eperm: true,
        },
        (CloneKind::Clone3 { .. }, errno) => Next::Fail {
            op: "clone3",
            errno,
        },
        (CloneKind::Legacy, errno) => Next::Fail { op: "clone", errno },
    }
}

/// What a successful clone `kind` found out (`probing_eperm` as [`Next::Retry`] set it).
pub(crate) fn after_success(kind: CloneKind, probing_eperm: bool) -> Option<Finding> {
    if probing_eperm {
        Some(Finding::Clone3Denied)
    } else if matches!(kind, CloneKind::Clone3 { .. }) {
        Some(Finding::Clone3Works)
    } else {
        None
    }
}

/// Whether the child must join the cgroup itself (write `cgroup.procs`): a spawn into a
/// cgroup by any clone but `clone3` with `CLONE_INTO_CGROUP`.
pub(crate) fn needs_procs_write(kind: CloneKind, has_cgroup: bool) -> bool {
    has_cgroup
        && !matches!(
            kind,
            CloneKind::Clone3 {
                into_cgroup: true,
                ..
            }
        )
}

/// Whether a spawn must clone like `fork` rather than `vfork` (`CLONE_VM | CLONE_VFORK`):
/// when asked (`forced`), or when its jail changes the uid or gid away from the caller's
/// (`caller`: its effective uid and gid) to ids other processes may hold — a task of
/// another user must not share the memory of the daemon, and a vfork parent stays suspended
/// while a process of that user could stop the child; ids that are the jail's alone
/// ([`Jail::exclusive_ids`]: a dynamic user) leave no such process —, makes a user
/// namespace (the parent writes the maps while the child waits,
/// and a vfork parent is suspended), or runs an init without the init image (`init_image`:
/// an init that does not exec the image runs on in the memory it was cloned with, so that
/// must be a copy). Other jails (a root jail dropping capabilities, say, or an init that
/// execs the image), and plain spawns, keep the cheaper vfork-like clone.
pub(crate) fn needs_fork_like(
    jail: Option<&Jail>,
    ns_new: Namespaces,
    forced: bool,
    caller: (u32, u32),
    init_image: bool,
) -> bool {
    forced
        || jail.is_some_and(|j| {
            changes_ids(j, caller) && !j.exclusive_ids
                || j.init && !init_image
                || ns_new.contains(Namespaces::USER)
        })
}

/// Whether the jail changes the uid or gid away from the caller's (`caller`: its effective
/// uid and gid).
pub(crate) fn changes_ids(jail: &Jail, caller: (u32, u32)) -> bool {
    jail.user.as_ref().is_some_and(|u| (u.uid, u.gid) != caller)
}

/// Whether the child must reset every signal handler itself (no `CLONE_CLEAR_SIGHAND`).
pub(crate) fn resets_all_handlers(kind: CloneKind) -> bool {
    !matches!(
        kind,
        CloneKind::Clone3 {
            clear_sighand: true,
            ..
        }
    )
}

/// The `close_range` variant from the probes: `CLOSE_RANGE_CLOEXEC` if accepted, else plain
/// `close_range` if accepted (probed only then), else the `fcntl` loop; with the error of
/// the refused `CLOSE_RANGE_CLOEXEC` probe when it was refused.
pub(crate) fn choose_close_mode(
    cloexec: io::Result<()>,
    plain: impl FnOnce() -> io::Result<()>,
) -> (CloseMode, Option<io::Error>) {
    match cloexec {
        Ok(()) => (CloseMode::CloseRangeCloexec, None),
        Err(e) if plain().is_ok() => (CloseMode::CloseRange, Some(e)),
        Err(e) => (CloseMode::Fcntl, Some(e)),
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static HAVE_CLEAR_SIGHAND: AtomicU8 = AtomicU8::new(UNKNOWN);
static HAVE_INTO_CGROUP: AtomicU8 = AtomicU8::new(UNKNOWN);
static HAVE_CLONE3: AtomicU8 = AtomicU8::new(UNKNOWN);
static CLOSE_MODE: OnceLock<CloseMode> = OnceLock::new();

fn known(a: &AtomicU8) -> Known {
    match a.load(Ordering::Relaxed) {
        YES => Known::Yes,
        NO => Known::No,
        _ => Known::Unknown,
    }
}

/// The process-global detection results so far.
pub(crate) fn detected() -> Detected {
    Detected {
        clone3: known(&HAVE_CLONE3),
        into_cgroup: known(&HAVE_INTO_CGROUP),
        clear_sighand: known(&HAVE_CLEAR_SIGHAND),
    }
}

/// Record `finding` in the process-global cache and log the fallback it means (once per
/// process for each cached one: later spawns do not try the refused feature again).
pub(crate) fn record(finding: Finding) {
    match finding {
        Finding::NoClearSighand => {
            HAVE_CLEAR_SIGHAND.store(NO, Ordering::Relaxed);
            tracing::warn!(
                "clone3 rejects CLONE_CLEAR_SIGHAND (EINVAL, kernel < 5.5?); \
                 resetting signal handlers in the child instead"
            );
        }
        Finding::NoIntoCgroup => {
            HAVE_INTO_CGROUP.store(NO, Ordering::Relaxed);
            tracing::warn!(
                "clone3 rejects CLONE_INTO_CGROUP (E2BIG, kernel < 5.7); \
                 children join their cgroup via cgroup.procs before exec"
            );
        }
        Finding::TargetRefusesIntoCgroup => {
            tracing::warn!(
                "clone3 into the target cgroup fails with EOPNOTSUPP (threaded \
                 cgroup?); retrying with a cgroup.procs write in the child"
            );
        }
        Finding::NoClone3 => {
            HAVE_CLONE3.store(NO, Ordering::Relaxed);
            tracing::warn!(
                "clone3 is unavailable (ENOSYS: old kernel or seccomp); using \
                 clone + cgroup.procs + pidfd_open"
            );
        }
        Finding::Clone3Denied => {
            HAVE_CLONE3.store(NO, Ordering::Relaxed);
            tracing::warn!(
                "clone3 fails with EPERM but legacy clone works (seccomp filter?); \
                 using clone + cgroup.procs + pidfd_open from now on"
            );
        }
        Finding::Clone3Works => HAVE_CLONE3.store(YES, Ordering::Relaxed),
    }
}

/// What the spawner has found out about the kernel so far (each `None` until the first
/// spawn that needed to know). Process-global and cached: each fallback is detected once.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnCapabilities {
    /// `clone3` usable (false after `ENOSYS`, or `EPERM` where legacy `clone` worked).
    pub clone3: Option<bool>,
    /// `CLONE_INTO_CGROUP` accepted (false after `E2BIG`).
    pub into_cgroup: Option<bool>,
    /// `CLONE_CLEAR_SIGHAND` accepted (false after `EINVAL`).
    pub clear_sighand: Option<bool>,
    /// The `close_range` variant in use (`None` before the first spawn).
    pub close_method: Option<CloseMethod>,
}

/// The cached results of the spawner's kernel feature detection, for tests and diagnostics.
#[doc(hidden)]
pub fn spawn_capabilities() -> SpawnCapabilities {
    let tri = |k: Known| match k {
        Known::Yes => Some(true),
        Known::No => Some(false),
        Known::Unknown => None,
    };
    let d = detected();
    SpawnCapabilities {
        clone3: tri(d.clone3),
        into_cgroup: tri(d.into_cgroup),
        clear_sighand: tri(d.clear_sighand),
        close_method: CLOSE_MODE.get().map(|m| match m {
            CloseMode::CloseRangeCloexec => CloseMethod::CloseRangeCloexec,
            CloseMode::CloseRange => CloseMethod::CloseRange,
            CloseMode::Fcntl => CloseMethod::Fcntl,
        }),
    }
}

/// How the child keeps unmapped fds from the program for `method`, and the end of the
/// `fcntl` loop when that is the way (else 0).
pub(crate) fn close_mode(method: CloseMethod) -> (CloseMode, u32) {
    let mode = match method {
        CloseMethod::Auto => detected_close_mode(),
        CloseMethod::CloseRangeCloexec => CloseMode::CloseRangeCloexec,
        CloseMethod::CloseRange => CloseMode::CloseRange,
        CloseMethod::Fcntl => CloseMode::Fcntl,
    };
    let fd_limit = if mode == CloseMode::Fcntl {
        fd_scan_limit()
    } else {
        0
    };
    (mode, fd_limit)
}

/// The kernel's best `close_range` variant, probed once (the reason for a fallback logged).
fn detected_close_mode() -> CloseMode {
    *CLOSE_MODE.get_or_init(|| {
        let (mode, refused) = sys::probe_close_mode();
        if let Some(e) = refused {
            match mode {
                CloseMode::CloseRange => tracing::warn!(
                    error = %e,
                    "close_range rejects CLOSE_RANGE_CLOEXEC (kernel < 5.11?); children \
                     close unmapped fds with close_range(lo, hi, 0) instead"
                ),
                _ => tracing::warn!(
                    error = %e,
                    "close_range is unavailable (kernel < 5.9?); children mark unmapped fds \
                     close-on-exec one by one with fcntl, up to the highest open fd"
                ),
            }
        }
        mode
    })
}

/// One above the highest fd open in this process (from `/proc/self/fd`), or the
/// `RLIMIT_NOFILE` soft limit if that cannot be read: the end of the fcntl loop.
///
/// An fd opened by another thread between this read and the clone, at a higher number and
/// without `O_CLOEXEC`, would escape the loop; Rust's standard library and this crate open
/// everything with `O_CLOEXEC`, and this is only the path for kernels before 5.9.
fn fd_scan_limit() -> u32 {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let highest = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max();
        if let Some(h) = highest {
            return h.saturating_add(1);
        }
    }
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    lim.current
        .map_or(1 << 20, |c| c.min(u32::MAX as u64) as u32)
}

#[cfg(test)]
mod tests;
