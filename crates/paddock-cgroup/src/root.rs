//! The managed root: the one cgroup subtree paddock owns.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::cgroup::{Cgroup, read_owner};
use crate::counters::Counters;
use crate::dir::{Dir, join_hier};
use crate::mount::{self, MountEntry};
use crate::name::CgroupName;
use crate::stats::CgroupStat;
use crate::{Error, Result};

fn io_errno(e: &std::io::Error) -> rustix::io::Errno {
    e.raw_os_error()
        .map(rustix::io::Errno::from_raw_os_error)
        .unwrap_or(rustix::io::Errno::IO)
}

/// The PID `/proc/locks` names as holding a `FLOCK` on the inode of `fd`.
fn lock_holder(fd: &OwnedFd) -> Option<i32> {
    let st = rustix::fs::fstat(fd).ok()?;
    let dev = rustix::fs::Dev::from(st.st_dev);
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        st.st_ino
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // `1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// Default name of the managed root under the cgroup2 mount.
pub const DEFAULT_ROOT: &str = "paddock";

/// In a delegated cgroup ([`Root::open_delegated`]): the leaf the supervisor runs in.
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// In a delegated cgroup ([`Root::open_delegated`]): the managed root of the sandboxes.
pub const SANDBOXES: &str = "sandboxes";

/// How often [`Root::open_delegated`] re-reads the delegated cgroup's processes while
/// moving them into the leaf (a process forked meanwhile appears in the next read).
const MOVE_ROUNDS: usize = 100;

/// The cgroup subtree paddock owns. Everything paddock creates is a child of it, every
/// file access below it goes through directory fds, and nothing outside it is touched.
#[derive(Debug, Clone)]
pub struct Root {
    dir: Arc<Dir>,
    mount: Arc<MountEntry>,
    counters: Arc<Counters>,
}

/// The exclusive claim of one process on a managed root ([`Root::lock_exclusive`]). Held
/// until dropped, or until the process dies (the kernel drops the lock with the last
/// descriptor of its open file).
#[derive(Debug)]
pub struct RootLock {
    _fd: OwnedFd,
}

impl Root {
    /// Opens (creating it if needed) `<cgroup2 mount>/paddock`.
    pub fn open_default() -> Result<Root> {
        Root::open_or_create(Path::new(DEFAULT_ROOT))
    }

    /// Opens (creating missing components) the root at `path`: relative paths are taken
    /// under the discovered cgroup2 mount; absolute paths must lie inside it. Each component
    /// is validated like a cgroup name.
    pub fn open_or_create(path: &Path) -> Result<Root> {
        let mount = mount::discover()?;
        Root::open_in(mount, path)
    }

    /// The absolute path [`Root::open_or_create`] would open for `path` (relative paths
    /// are taken under the discovered cgroup2 mount), without creating or checking
    /// anything there.
    pub fn resolve(path: &Path) -> Result<PathBuf> {
        let mount = mount::discover()?;
        Ok(mount.mount_point.join(path))
    }

    /// Like [`Root::open_or_create`] with an explicit mount entry.
    pub fn open_in(mount: MountEntry, path: &Path) -> Result<Root> {
        let rel = if path.is_absolute() {
            path.strip_prefix(&mount.mount_point)
                .map_err(|_| Error::InvalidValue {
                    what: "cgroup root",
                    reason: format!(
                        "{} is not under the cgroup2 mount {}",
                        path.display(),
                        mount.mount_point.display()
                    ),
                })?
        } else {
            path
        };
        let mut comps = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    comps.push(CgroupName::new(s.to_string_lossy().into_owned())?)
                }
                Component::CurDir => {}
                _ => {
                    return Err(Error::InvalidValue {
                        what: "cgroup root",
                        reason: format!("{} must not contain `..`", path.display()),
                    });
                }
            }
        }
        let mut dir = Dir::open_abs(
            &mount.mount_point,
            mount.root.to_string_lossy().into_owned(),
        )?;
        for c in &comps {
            dir.mkdir_child(c.as_str())?;
            dir = dir.open_child(c.as_str())?;
        }
        Ok(Root {
            dir: Arc::new(dir),
            mount: Arc::new(mount),
            counters: Arc::new(Counters::default()),
        })
    }

    /// Lays out a delegated cgroup the way cgroup v2's no-internal-process rule requires,
    /// and opens its managed root: the cgroup at `base` (for example a systemd unit's,
    /// with `Delegate=yes`, that the supervisor itself runs in) gets two children,
    /// the leaf [`SUPERVISOR_LEAF`], into which every process in `base` itself is moved
    /// (the supervisor, and anything else started there), and [`SANDBOXES`], which is
    /// returned as the root. Of `controllers`, those `base` is offered are enabled in
    /// `base` (for both children) and in `sandboxes` (for the sandboxes); the others are
    /// skipped (see [`Root::controllers`]). Idempotent: a restarted supervisor finds the
    /// layout made and is moved into the leaf again. `base` is taken like the path of
    /// [`Root::open_or_create`].
    pub fn open_delegated(base: &Path, controllers: &[&str]) -> Result<Root> {
        Root::open_delegated_with_leaf(base, SUPERVISOR_LEAF, controllers)
    }

    /// [`Root::open_delegated`] with the processes of `base` moved into the leaf `leaf`
    /// instead of [`SUPERVISOR_LEAF`] (`paddock hold-cgroup` uses `holder`). `leaf` is
    /// validated like a cgroup name and must not be [`SANDBOXES`].
    pub fn open_delegated_with_leaf(base: &Path, leaf: &str, controllers: &[&str]) -> Result<Root> {
        let leaf_name = CgroupName::new(leaf.to_owned())?;
        if leaf_name.as_str() == SANDBOXES {
            return Err(Error::InvalidValue {
                what: "delegated cgroup leaf",
                reason: format!("the leaf must not be named {SANDBOXES:?} (the managed root)"),
            });
        }
        let base = Root::open_or_create(base)?;
        base.dir.mkdir_child(leaf_name.as_str())?;
        let leaf = base.dir.open_child(leaf_name.as_str())?;
        let leaf_procs = leaf.open_file("cgroup.procs")?;
        let mut moved_all = false;
        for _ in 0..MOVE_ROUNDS {
            let pids = base.dir.procs()?.unwrap_or_default();
            if pids.is_empty() {
                moved_all = true;
                break;
            }
            for pid in pids {
                match leaf.write_open(&leaf_procs, "cgroup.procs", &pid.to_string()) {
                    Ok(()) => {}
                    // Exited since the read.
                    Err(e) if e.errno() == Some(rustix::io::Errno::SRCH) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !moved_all {
            return Err(Error::InvalidValue {
                what: "delegated cgroup",
                reason: format!(
                    "processes keep appearing in {} itself after {MOVE_ROUNDS} rounds of moving \
                     them into {}/; whatever starts them there must start them in a leaf",
                    base.path().display(),
                    leaf_name.as_str()
                ),
            });
        }
        let offered = base.controllers()?;
        let want: Vec<&str> = controllers
            .iter()
            .copied()
            .filter(|c| offered.iter().any(|o| o == c))
            .collect();
        base.enable_controllers(&want)?;
        let sandboxes = Root::open_in((*base.mount).clone(), &base.path().join(SANDBOXES))?;
        sandboxes.enable_controllers(&want)?;
        Ok(sandboxes)
    }

    /// The cgroup the calling process is in (its `0::` line of `/proc/self/cgroup`), as
    /// an absolute path under the discovered cgroup2 mount: the `base` of
    /// [`Root::open_delegated`] for a supervisor started in its delegated cgroup.
    pub fn own_cgroup() -> Result<PathBuf> {
        let mount = mount::discover()?;
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Error::io("read", "/proc/self/cgroup", io_errno(&e)))?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| Error::parse("/proc/self/cgroup", &text, "no cgroup v2 (`0::`) line"))?;
        let rel = Path::new(rel.trim());
        let inside = rel
            .strip_prefix(&mount.root)
            .map_err(|_| Error::InvalidValue {
                what: "own cgroup",
                reason: format!(
                    "{} is outside the cgroup2 mount's root {} (another cgroup namespace?)",
                    rel.display(),
                    mount.root.display()
                ),
            })?;
        Ok(mount.mount_point.join(inside))
    }

    /// Claims the root for this process alone: `flock(LOCK_EX | LOCK_NB)` on a descriptor
    /// of the root's directory opened for the lock (so the lock is the directory inode's
    /// whatever path named it, needs no file of its own, and goes with the process). Only
    /// processes that call this are excluded (a daemon takes it; `paddock run` does not).
    /// [`Error::RootLocked`] names the holder's PID when `/proc/locks` shows it.
    pub fn lock_exclusive(&self) -> Result<RootLock> {
        let fd = rustix::fs::openat(
            &self.dir.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", &self.dir.path, e))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(RootLock { _fd: fd }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::RootLocked {
                path: self.dir.path.clone(),
                holder: lock_holder(&fd),
            }),
            Err(e) => Err(Error::io("flock", &self.dir.path, e)),
        }
    }

    /// The absolute path of the root.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The cgroup2 mount the root lives under.
    pub fn mount(&self) -> &MountEntry {
        &self.mount
    }

    /// The counters of everything under this root.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The root's `<resource>.pressure`: the pressure of all its sandboxes together;
    /// `Ok(None)` where the kernel has no PSI.
    pub fn pressure(
        &self,
        resource: crate::resources::PsiResource,
    ) -> Result<Option<crate::resources::Pressure>> {
        let file = resource.file();
        match self.dir.read_opt(file) {
            Ok(Some(t)) => crate::resources::Pressure::parse(file, &t).map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.errno() == Some(rustix::io::Errno::OPNOTSUPP) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Controllers the root can hand to its children (its `cgroup.controllers`).
    pub fn controllers(&self) -> Result<Vec<String>> {
        Ok(self
            .dir
            .read("cgroup.controllers")?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// Controllers enabled for the root's children (its `cgroup.subtree_control`).
    pub fn enabled_controllers(&self) -> Result<Vec<String>> {
        Ok(self
            .dir
            .read("cgroup.subtree_control")?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// Enables `controllers` for the root's children in `cgroup.subtree_control`. A
    /// controller the v2 hierarchy does not offer here is an error that says where it is
    /// instead (for example bound to a v1 hierarchy); nothing is enabled in that case.
    pub fn enable_controllers(&self, controllers: &[&str]) -> Result<()> {
        let available = self.controllers()?;
        for c in controllers {
            if !available.iter().any(|a| a == c) {
                return Err(self.explain_missing(c));
            }
        }
        if controllers.is_empty() {
            return Ok(());
        }
        let line = controllers
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.dir.write("cgroup.subtree_control", &line)
    }

    fn explain_missing(&self, controller: &str) -> Error {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let entries = mount::parse_mountinfo(&text).unwrap_or_default();
        let at_mount = std::fs::read_to_string(self.mount.mount_point.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == controller);
        let detail = if let Some(v1) = mount::v1_location(&entries, controller) {
            format!(
                "it is bound to a cgroup v1 hierarchy at {} (a hybrid host); use a host with a pure \
                 cgroup v2 hierarchy to get this limit",
                v1.display()
            )
        } else if at_mount {
            format!(
                "the cgroup2 mount offers it but a parent of {} does not delegate it; enable it in the \
                 parents' cgroup.subtree_control",
                self.dir.path.display()
            )
        } else {
            "the kernel's cgroup v2 hierarchy does not offer it (not compiled in, or disabled with \
             cgroup_no_v1/cgroup_disable on the kernel command line)"
                .to_owned()
        };
        Error::ControllerUnavailable {
            controller: controller.to_owned(),
            path: self.dir.path.clone(),
            detail,
        }
    }

    /// Creates the cgroup `name` under the root. An existing cgroup of that name is
    /// [`Error::AlreadyExists`] (never silently shared).
    pub fn create(&self, name: &CgroupName) -> Result<Cgroup> {
        if !self.dir.mkdir_child(name.as_str())? {
            return Err(Error::AlreadyExists {
                path: self.dir.path.join(name.as_str()),
            });
        }
        self.open(name)
    }

    /// Opens the existing cgroup `name` under the root.
    pub fn open(&self, name: &CgroupName) -> Result<Cgroup> {
        let dir = self.dir.open_child(name.as_str())?;
        Ok(Cgroup {
            parent: self.dir.clone(),
            name: name.clone(),
            dir,
            counters: self.counters.clone(),
        })
    }

    /// The child cgroups of the root. Names that paddock would never create (which cannot
    /// be its own) are returned separately as the second list.
    pub fn list(&self) -> Result<(Vec<CgroupName>, Vec<String>)> {
        let mut ok = Vec::new();
        let mut other = Vec::new();
        for n in self.dir.children()? {
            match CgroupName::new(n.clone()) {
                Ok(name) => ok.push(name),
                Err(_) => other.push(n),
            }
        }
        ok.sort();
        Ok((ok, other))
    }

    /// The owner tag of child `name`, without opening a full handle.
    pub fn owner_of(&self, name: &CgroupName) -> Result<Option<String>> {
        let d = self.dir.open_child(name.as_str())?;
        read_owner(d.borrowed(), &d.path)
    }

    /// `cgroup.stat` of the root: live and dying descendants.
    pub fn stat(&self) -> Result<CgroupStat> {
        CgroupStat::parse(&self.dir.read("cgroup.stat")?)
    }

    /// The path of child `name` (no I/O).
    pub fn child_path(&self, name: &CgroupName) -> PathBuf {
        self.dir.path.join(name.as_str())
    }

    /// The hierarchy path of the root, as `/proc/<pid>/cgroup` would show it.
    pub fn hierarchy_path(&self) -> &str {
        &self.dir.hier
    }

    /// Hierarchy path of a child (no I/O).
    pub fn child_hierarchy_path(&self, name: &CgroupName) -> String {
        join_hier(&self.dir.hier, name.as_str())
    }
}
