//! The bench cgroup root `<cgroup2 mount>/paddock-bench.<pid>`, independent leak checks,
//! and a cleanup that runs on success, on error and on Ctrl-C / SIGTERM.
//!
//! Deliberately plain `std::fs` (no paddock code): what checks paddock must not share its
//! bugs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A step run first at cleanup (stopping a daemon the benchmark started).
pub type CleanupHook = Box<dyn FnOnce() + Send>;

/// The bench root and what the benchmark created outside it.
pub struct BenchRoot {
    /// `<mount>/paddock-bench.<pid>`.
    pub path: PathBuf,
    /// The root's path inside the cgroup2 hierarchy (as in `/proc/<pid>/cgroup`).
    pub hier: String,
    /// runc/crun containers created (binary, name); deleted at cleanup if still there.
    pub containers: Mutex<Vec<(String, String)>>,
    /// Temporary directories (bundles) to remove.
    pub temp_dirs: Mutex<Vec<PathBuf>>,
    /// Run first at cleanup, before anything is killed or removed (the `paddock-api`
    /// daemon is stopped here on error, Ctrl-C or SIGTERM).
    pub hooks: Mutex<Vec<CleanupHook>>,
    done: Mutex<bool>,
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> io::Result<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            let f: Vec<&str> = left.split_whitespace().collect();
            if f.len() > 4 {
                return Ok((PathBuf::from(f[4]), f[3].to_string()));
            }
        }
    }
    Err(io::Error::other("no cgroup2 hierarchy is mounted"))
}

impl BenchRoot {
    /// Creates `<mount>/paddock-bench.<pid>`.
    pub fn create() -> io::Result<BenchRoot> {
        let (mount, mroot) = cgroup2_mount()?;
        let name = format!("paddock-bench.{}", std::process::id());
        let path = mount.join(&name);
        std::fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        let hier = if mroot == "/" {
            format!("/{name}")
        } else {
            format!("{mroot}/{name}")
        };
        Ok(BenchRoot {
            path,
            hier,
            containers: Mutex::new(Vec::new()),
            temp_dirs: Mutex::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
            done: Mutex::new(false),
        })
    }

    /// The directory name of the root.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Processes or cgroups left under `sub` (a directory of the bench root), counted
    /// independently: cgroup directories below it, plus processes anywhere on the host
    /// whose `/proc/<pid>/cgroup` lies below it.
    pub fn leaks(&self, sub: &str) -> usize {
        let dir = self.path.join(sub);
        let cgroups = count_dirs(&dir);
        let prefix = format!("{}/{sub}", self.hier);
        cgroups + procs_under(&prefix)
    }

    /// Runs the hooks (stops daemons), kills everything under the root, removes it, deletes leftover containers and their
    /// cgroup v1 directories, and removes temporary directories. Idempotent.
    pub fn cleanup(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return;
        }
        *done = true;
        let hooks = std::mem::take(&mut *self.hooks.lock().unwrap_or_else(|e| e.into_inner()));
        for h in hooks {
            h();
        }
        let containers =
            std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        for (bin, name) in containers {
            crate::runtime::force_delete(&bin, &name);
        }
        if self.path.exists() {
            let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(10);
            while populated(&self.path) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Err(e) = remove_tree(&self.path, Duration::from_secs(5)) {
                eprintln!(
                    "paddock-bench: bench root not removed path={} error=\"{e}\"",
                    self.path.display()
                );
            }
        }
        // runc on a hybrid host also creates the path in every v1 hierarchy.
        let name = self.name();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join(&name);
                if p != self.path && p.is_dir() {
                    let _ = remove_tree(&p, Duration::from_secs(2));
                }
            }
        }
        for d in std::mem::take(&mut *self.temp_dirs.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for BenchRoot {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn populated(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events"))
        .map(|s| !s.lines().any(|l| l.trim() == "populated 0"))
        .unwrap_or(false)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Cgroup directories strictly below `dir`.
pub fn count_dirs(dir: &Path) -> usize {
    subdirs(dir).iter().map(|d| 1 + count_dirs(d)).sum()
}

/// Processes on the host whose cgroup v2 path is `prefix` or below it.
pub fn procs_under(prefix: &str) -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        for l in cg.lines() {
            if let Some(p) = l.strip_prefix("0::") {
                let p = p.trim_end_matches(" (deleted)");
                if p == prefix || p.starts_with(&format!("{prefix}/")) {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Removes a cgroup directory tree bottom-up, retrying `EBUSY` until `budget`.
pub fn remove_tree(dir: &Path, budget: Duration) -> io::Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        for d in subdirs(dir) {
            let _ = remove_tree(&d, Duration::ZERO);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
