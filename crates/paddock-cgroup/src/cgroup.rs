//! The handle on one sandbox cgroup.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

use crate::counters::Counters;
use crate::dir::Dir;
use crate::events::EventsWatch;
use crate::limit::{Limit, LimitKind};
use crate::name::CgroupName;
use crate::stats::{CpuMax, CpuStat, Events, IoStat, Max, MemoryEvents, parse_u64};
use crate::{Error, Result};

/// The extended attribute that records who owns a cgroup.
pub const OWNER_XATTR: &str = "user.paddock.owner";

/// One cgroup that paddock created or opened under its root, held by directory fd.
///
/// The handle stays usable after a failed or cancelled removal: nothing is marked removed
/// before removal succeeded, and removing twice is not an error.
#[derive(Debug)]
pub struct Cgroup {
    pub(crate) parent: Arc<Dir>,
    pub(crate) name: CgroupName,
    pub(crate) dir: Dir,
    pub(crate) counters: Arc<Counters>,
}

/// Resource usage of a cgroup subtree. A field is `None` when its controller is not enabled
/// for this cgroup: absent, not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// `cpu.stat` (always present in cgroup v2).
    pub cpu: Option<CpuStat>,
    /// `memory.current`, bytes.
    pub memory_current: Option<u64>,
    /// `memory.peak`, bytes (kernel 5.19+).
    pub memory_peak: Option<u64>,
    /// `memory.events`.
    pub memory_events: Option<MemoryEvents>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `io.stat`, summed over devices.
    pub io: Option<IoStat>,
}

/// A live member of a cgroup, held by pidfd so that signalling it can never hit a process
/// that reused its PID.
#[derive(Debug)]
pub struct Member {
    /// The PID read from `cgroup.procs`.
    pub pid: i32,
    /// A pidfd bound to that process, verified to be in the cgroup after it was opened.
    pub pidfd: OwnedFd,
}

impl Cgroup {
    /// The cgroup's name (its directory name under the root).
    pub fn name(&self) -> &CgroupName {
        &self.name
    }

    /// The absolute path of the cgroup directory.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The path inside the cgroup hierarchy, as `/proc/<pid>/cgroup` shows it for members.
    pub fn hierarchy_path(&self) -> &str {
        &self.dir.hier
    }

    /// The cgroup directory's `O_DIRECTORY` fd, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.borrowed()
    }

    /// A separate fd of the cgroup directory that the caller owns and releases by dropping.
    pub fn open_dir_fd(&self) -> Result<OwnedFd> {
        self.dir.fd.try_clone().map_err(|e| {
            Error::io(
                "dup",
                &self.dir.path,
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
            )
        })
    }

    /// The counters this cgroup reports into.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Reads `cgroup.events`.
    pub fn events(&self) -> Result<Events> {
        Events::parse(&self.dir.read("cgroup.events")?)
    }

    /// Opens `cgroup.events` for event-driven waits (needs a tokio runtime).
    pub fn watch(&self) -> Result<EventsWatch> {
        EventsWatch::open(&self.dir)
    }

    /// PIDs in this cgroup only (`cgroup.procs`). For a threaded cgroup, which has no
    /// process list of its own, the processes that have a thread in it (from
    /// `cgroup.threads`).
    pub fn procs(&self) -> Result<Vec<i32>> {
        Ok(self.dir.procs()?.unwrap_or_default())
    }

    /// PIDs in this cgroup and all descendants, each once, in no particular order; for
    /// threaded cgroups the processes that have a thread there. Read errors are returned,
    /// never ignored; only descendants that vanish during the walk contribute nothing.
    pub fn procs_recursive(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        self.dir.procs_recursive(&mut out)?;
        // A threaded subtree lists a process at its threaded domain and again at each
        // threaded cgroup holding one of its threads.
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Names of the child cgroups (created by the payload, or by paddock for nesting).
    pub fn children(&self) -> Result<Vec<String>> {
        self.dir.children()
    }

    /// Creates a child cgroup under this one.
    pub fn create_child(&self, name: &CgroupName) -> Result<Cgroup> {
        if !self.dir.mkdir_child(name.as_str())? {
            return Err(Error::AlreadyExists {
                path: self.dir.path.join(name.as_str()),
            });
        }
        self.open_child(name)
    }

    /// Opens an existing child cgroup.
    pub fn open_child(&self, name: &CgroupName) -> Result<Cgroup> {
        let dir = self.dir.open_child(name.as_str())?;
        let parent = Dir {
            fd: self.open_dir_fd()?,
            path: self.dir.path.clone(),
            hier: self.dir.hier.clone(),
        };
        Ok(Cgroup {
            parent: Arc::new(parent),
            name: name.clone(),
            dir,
            counters: self.counters.clone(),
        })
    }

    /// Requests a freeze (`cgroup.freeze` = 1); it completes when `frozen 1` is reported.
    pub fn freeze(&self) -> Result<()> {
        self.dir.write("cgroup.freeze", "1")
    }

    /// Requests a thaw (`cgroup.freeze` = 0).
    pub fn thaw(&self) -> Result<()> {
        self.dir.write("cgroup.freeze", "0")
    }

    /// Freezes and waits (event-driven) for `frozen 1`; `Ok(false)` on timeout (a process
    /// in uninterruptible sleep can delay a freeze).
    pub async fn freeze_wait(&self, timeout: std::time::Duration) -> Result<bool> {
        let w = self.watch()?;
        self.freeze()?;
        w.wait_frozen(true, timeout).await
    }

    /// Thaws and waits for `frozen 0`.
    pub async fn thaw_wait(&self, timeout: std::time::Duration) -> Result<bool> {
        let w = self.watch()?;
        self.thaw()?;
        w.wait_frozen(false, timeout).await
    }

    /// Sets a limit. A controller that is not enabled for this cgroup is a
    /// [`Error::ControllerUnavailable`] naming it; an out-of-range value changes nothing.
    pub fn set_limit(&self, limit: Limit) -> Result<()> {
        let value = limit.value()?;
        let (file, ctrl) = limit.kind().file();
        self.write_controller_file(file, ctrl, &value)
    }

    /// Writes `value` to `file` of `ctrl` (`None`: a core file). A missing file of a
    /// controller that is not enabled here is [`Error::ControllerUnavailable`] naming it; a
    /// missing file of an enabled controller is [`Error::InvalidValue`] saying the kernel
    /// does not offer that file (`memory.swap.max` without swap accounting, a hugetlb page
    /// size the kernel lacks).
    pub(crate) fn write_controller_file(
        &self,
        file: &str,
        ctrl: Option<&'static str>,
        value: &str,
    ) -> Result<()> {
        match (self.dir.write(file, value), ctrl) {
            // The controller's files exist only where it is enabled. (A core file is always
            // there: its ENOENT means the cgroup is gone, and is returned as it is.)
            (Err(e), Some(ctrl)) if e.errno() == Some(Errno::NOENT) => {
                if self.has_controller(ctrl).unwrap_or(false) {
                    Err(Error::InvalidValue {
                        what: ctrl,
                        reason: format!(
                            "{} does not exist although the {ctrl} controller is enabled: this \
                             kernel does not offer it (for memory.swap.max: no swap accounting, \
                             `swapaccount=0`); run without this limit",
                            self.dir.path.join(file).display()
                        ),
                    })
                } else {
                    Err(self.unavailable(ctrl))
                }
            }
            (other, _) => other,
        }
    }

    /// Reads a limit back; `Ok(None)` when its controller is not enabled here.
    pub fn limit(&self, kind: LimitKind) -> Result<Option<Limit>> {
        let (file, _) = kind.file();
        let Some(text) = self.dir.read_opt(file)? else {
            return Ok(None);
        };
        Ok(Some(match kind {
            LimitKind::MemoryMax => Limit::MemoryMax(Max::parse("memory.max", &text)?),
            LimitKind::MemoryHigh => Limit::MemoryHigh(Max::parse("memory.high", &text)?),
            LimitKind::CpuMax => Limit::CpuMax(CpuMax::parse(&text)?),
            LimitKind::CpuWeight => Limit::CpuWeight(parse_u64("cpu.weight", &text)?),
            LimitKind::PidsMax => Limit::PidsMax(Max::parse("pids.max", &text)?),
            LimitKind::MaxDescendants => {
                Limit::MaxDescendants(Max::parse("cgroup.max.descendants", &text)?)
            }
            LimitKind::MaxDepth => Limit::MaxDepth(Max::parse("cgroup.max.depth", &text)?),
            LimitKind::MemoryLow => Limit::MemoryLow(Max::parse("memory.low", &text)?),
            LimitKind::MemoryMin => Limit::MemoryMin(Max::parse("memory.min", &text)?),
            LimitKind::MemorySwapMax => Limit::MemorySwapMax(Max::parse("memory.swap.max", &text)?),
            LimitKind::MemoryOomGroup => {
                Limit::MemoryOomGroup(parse_u64("memory.oom.group", &text)? != 0)
            }
            LimitKind::IoWeight => Limit::IoWeight(crate::resources::parse_io_weight(&text)?),
        }))
    }

    /// Whether `controller` is enabled for this cgroup (listed in its `cgroup.controllers`).
    pub fn has_controller(&self, controller: &str) -> Result<bool> {
        Ok(self
            .dir
            .read("cgroup.controllers")?
            .split_whitespace()
            .any(|c| c == controller))
    }

    /// The error for a limit whose controller is not enabled for this cgroup, saying what
    /// to do: enable it in the parent's `cgroup.subtree_control` if the parent has it, else
    /// have it delegated down to the parent first; or run without that limit.
    pub(crate) fn unavailable(&self, controller: &str) -> Error {
        let parent = &self.parent.path;
        let parent_has = self
            .parent
            .read("cgroup.controllers")
            .is_ok_and(|t| t.split_whitespace().any(|c| c == controller));
        let detail = unavailable_detail(controller, parent, parent_has);
        Error::ControllerUnavailable {
            controller: controller.to_owned(),
            path: self.dir.path.clone(),
            detail,
        }
    }

    /// Reads usage statistics; missing controllers give `None` fields.
    pub fn stats(&self) -> Result<Stats> {
        let num = |file: &'static str| -> Result<Option<u64>> {
            self.dir
                .read_opt(file)?
                .map(|t| parse_u64(file, &t))
                .transpose()
        };
        Ok(Stats {
            cpu: self
                .dir
                .read_opt("cpu.stat")?
                .map(|t| CpuStat::parse(&t))
                .transpose()?,
            memory_current: num("memory.current")?,
            memory_peak: num("memory.peak")?,
            memory_events: self
                .dir
                .read_opt("memory.events")?
                .map(|t| MemoryEvents::parse(&t))
                .transpose()?,
            pids_current: num("pids.current")?,
            io: self
                .dir
                .read_opt("io.stat")?
                .map(|t| IoStat::parse(&t))
                .transpose()?,
        })
    }

    /// Total CPU time (`cpu.stat` usage_usec) and peak memory (`memory.peak`, `None`
    /// without the memory controller, or when `memory` is false: the caller knows the
    /// controller is not enabled for this cgroup, which spares a failing open): the two
    /// figures a stop reports, read with two files instead of all of [`Cgroup::stats`].
    pub fn usage_summary(&self, memory: bool) -> Result<(Option<u64>, Option<u64>)> {
        let cpu = self
            .dir
            .read_opt("cpu.stat")?
            .map(|t| CpuStat::parse(&t))
            .transpose()?
            .map(|c| c.usage_usec);
        if !memory {
            return Ok((cpu, None));
        }
        let peak = self
            .dir
            .read_opt("memory.peak")?
            .map(|t| parse_u64("memory.peak", &t))
            .transpose()?;
        Ok((cpu, peak))
    }

    /// Tags the cgroup with [`OWNER_XATTR`] = `owner`, so a restarted supervisor can prove
    /// which cgroups are its own.
    pub fn set_owner(&self, owner: &str) -> Result<()> {
        rustix::fs::fsetxattr(
            &self.dir.fd,
            OWNER_XATTR,
            owner.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| Error::io("setxattr user.paddock.owner", &self.dir.path, e))
    }

    /// Reads the owner tag; `Ok(None)` when the cgroup has none.
    pub fn owner(&self) -> Result<Option<String>> {
        read_owner(self.dir.borrowed(), &self.dir.path)
    }

    /// Opens pidfds for every live process in the subtree. Each PID read from
    /// `cgroup.procs` is opened with `pidfd_open`, then checked to still be a live process
    /// in this subtree, so a PID that was reused by an unrelated process in between is never
    /// returned.
    pub fn members(&self) -> Result<Vec<Member>> {
        let mut out = Vec::new();
        for pid in self.procs_recursive()? {
            if let Some(m) = self.member(pid)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Opens a pidfd for `pid` and returns it when it names a live process in this subtree.
    pub(crate) fn member(&self, pid: i32) -> Result<Option<Member>> {
        let Some(p) = Pid::from_raw(pid) else {
            return Ok(None);
        };
        let pidfd = match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Ok(None),
            Err(e) => return Err(Error::io("pidfd_open", format!("/proc/{pid}"), e)),
        };
        Ok(self
            .verify_member(pid, pidfd.as_fd())
            .then_some(Member { pid, pidfd }))
    }

    /// True when the process behind `pidfd` (opened for `pid`) is alive and in this subtree:
    /// its main thread is, or (threaded subtrees) another of its threads is.
    fn verify_member(&self, pid: i32, pidfd: BorrowedFd<'_>) -> bool {
        let mine = self.hierarchy_path_for_proc();
        let inside = |file: &str| {
            let Ok(text) = std::fs::read_to_string(file) else {
                return false;
            };
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .is_some_and(|path| {
                    path == mine
                        || path
                            .strip_prefix(mine.as_str())
                            .is_some_and(|r| r.starts_with('/'))
                })
        };
        let inside = inside(&format!("/proc/{pid}/cgroup"))
            || std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.flatten().any(|t| {
                    let tid = t.file_name();
                    let tid = tid.to_string_lossy();
                    tid != pid.to_string().as_str()
                        && inside(&format!("/proc/{pid}/task/{tid}/cgroup"))
                })
            });
        // The /proc reads above named the process behind the pidfd only if that process
        // was still alive afterwards (a live process keeps its PID): check it has not
        // exited.
        inside && !pidfd_exited(pidfd)
    }

    /// This cgroup's path as seen in `/proc/<pid>/cgroup` from paddock's cgroup namespace.
    fn hierarchy_path_for_proc(&self) -> String {
        self.dir.hier.clone()
    }
}

/// Thaws a cgroup when an operation that froze it ends early (error or cancellation).
/// Forget it (`std::mem::forget`) once the operation thaws by itself.
pub(crate) struct ThawOnDrop<'a>(pub(crate) &'a Cgroup);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        match self.0.thaw() {
            Ok(()) => {}
            // Nothing left to thaw.
            Err(e) if matches!(e.errno(), Some(Errno::NOENT) | Some(Errno::NODEV)) => {}
            Err(e) => {
                tracing::warn!(cgroup = %self.0.path().display(), error = %e, "could not thaw after an interrupted freeze");
            }
        }
    }
}

/// The `detail` of [`Cgroup::unavailable`]'s error, for a cgroup whose parent is `parent`
/// and which the parent does (`parent_has`) or does not offer `controller` to.
fn unavailable_detail(controller: &str, parent: &Path, parent_has: bool) -> String {
    let control = parent.join("cgroup.subtree_control");
    if parent_has {
        format!(
            "it is not enabled for this cgroup: enable it for the children of {} \
             (`echo +{controller} > {}`), or run without this limit",
            parent.display(),
            control.display()
        )
    } else {
        format!(
            "{} does not have it (it is not in its cgroup.controllers): it must be delegated down \
             to there, enabled in the cgroup.subtree_control of every cgroup above it, before it \
             can be enabled in {}; where the cgroup v2 hierarchy does not offer it at all (on a \
             hybrid host it may be bound to a v1 hierarchy), run without this limit",
            parent.display(),
            control.display()
        )
    }
}

pub(crate) fn read_owner(fd: BorrowedFd<'_>, path: &Path) -> Result<Option<String>> {
    let mut buf = [0u8; 256];
    match rustix::fs::fgetxattr(fd, OWNER_XATTR, &mut buf[..]) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(Error::io("getxattr user.paddock.owner", path, e)),
    }
}

/// Whether the process behind a pidfd has exited (the pidfd polls readable).
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_says_where_to_enable_the_controller() {
        let p = Path::new("/sys/fs/cgroup/paddock");
        let d = unavailable_detail("memory", p, true);
        assert!(
            d.contains("`echo +memory > /sys/fs/cgroup/paddock/cgroup.subtree_control`"),
            "{d}"
        );
        assert!(d.contains("or run without this limit"), "{d}");
        let d = unavailable_detail("memory", p, false);
        assert!(
            d.starts_with("/sys/fs/cgroup/paddock does not have it"),
            "{d}"
        );
        assert!(d.contains("delegated down"), "{d}");
        assert!(
            d.contains("/sys/fs/cgroup/paddock/cgroup.subtree_control"),
            "{d}"
        );
        assert!(d.contains("run without this limit"), "{d}");
        for d in [
            unavailable_detail("pids", p, true),
            unavailable_detail("pids", p, false),
        ] {
            assert!(!d.contains("--"), "no command-line flag is named: {d}");
        }
    }
}
