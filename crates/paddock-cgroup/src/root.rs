//! The managed root: the one cgroup subtree paddock owns.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::cgroup::{Cgroup, read_owner};
use crate::counters::Counters;
use crate::dir::{Dir, join_hier};
use crate::mount::{self, MountEntry};
use crate::name::CgroupName;
use crate::stats::CgroupStat;
use crate::{Error, Result};

/// Default name of the managed root under the cgroup2 mount.
pub const DEFAULT_ROOT: &str = "paddock";

/// The cgroup subtree paddock owns. Everything paddock creates is a child of it, every
/// file access below it goes through directory fds, and nothing outside it is touched.
#[derive(Debug, Clone)]
pub struct Root {
    dir: Arc<Dir>,
    mount: Arc<MountEntry>,
    counters: Arc<Counters>,
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
