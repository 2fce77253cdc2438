//! The sandboxes' log files, recycled.
//!
//! A sandbox whose stdout or stderr is [`StdioTarget::Log`](crate::StdioTarget::Log)
//! writes to `<log dir>/<id>@<lifecycle>.log`. Creating a file allocates an inode and
//! deleting one frees it, and ext4 skips inodes freed in the last few seconds when it looks
//! for a free one (`recently_deleted()`, which reads each candidate's inode block): with
//! many short-lived sandboxes that search was the daemon's largest cost in a burst of
//! starts (17% of its CPU samples; 564 starts/s with log files against 854 without, 3
//! rounds of 1,000). So a deleted log is truncated and kept as a spare
//! (`<log dir>/.spare/<n>`, at most [`MAX_SPARES`]), and the next log is renamed from a
//! spare: while sandboxes come and go at a steady rate, no inode is allocated or freed.
//!
//! A spare is always empty: it is truncated before it becomes one, and a spare that is
//! not empty when the directory is opened (say, after a crash between the two steps) is
//! deleted, so nothing one sandbox wrote can show up in another's log.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::ids::{LifecycleId, cgroup_name};

/// Most spare files kept; more deleted logs are unlinked.
pub const MAX_SPARES: usize = 1024;

/// A directory of sandbox log files with a pool of spare (empty) files.
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    spare_dir: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
}

impl LogDir {
    /// Opens (creating if needed) the log directory `dir` and its `.spare` directory, and
    /// takes the empty spares a previous supervisor left there (deleting any other file).
    pub fn open(dir: &Path) -> io::Result<LogDir> {
        let spare_dir = dir.join(".spare");
        std::fs::create_dir_all(&spare_dir)?;
        let mut spares = Vec::new();
        let mut next = 0u64;
        for e in std::fs::read_dir(&spare_dir)? {
            let e = e?;
            let n = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            match (n, e.metadata()) {
                (Some(n), Ok(m)) if m.is_file() && m.len() == 0 && spares.len() < MAX_SPARES => {
                    next = next.max(n + 1);
                    spares.push(e.path());
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(LogDir {
            dir: dir.to_owned(),
            spare_dir,
            spares: Mutex::new(spares),
            next: AtomicU64::new(next),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file of one lifecycle.
    pub fn path(&self, id: &str, lifecycle: LifecycleId) -> PathBuf {
        self.dir.join(format!("{}.log", cgroup_name(id, lifecycle)))
    }

    /// Creates (or opens, appending) the log file of one lifecycle, from a spare when there
    /// is one.
    pub fn create(&self, id: &str, lifecycle: LifecycleId) -> io::Result<File> {
        let path = self.path(id, lifecycle);
        let spare = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(spare) = spare {
            // A spare that cannot be moved is dropped (deleted if it is still there).
            if std::fs::rename(&spare, &path).is_err() {
                let _ = std::fs::remove_file(&spare);
            }
        }
        OpenOptions::new().create(true).append(true).open(&path)
    }

    /// Deletes the log file of one lifecycle (absent is fine): it is emptied and kept as a
    /// spare while there are fewer than [`MAX_SPARES`], else unlinked.
    pub fn remove(&self, id: &str, lifecycle: LifecycleId) {
        let path = self.path(id, lifecycle);
        let keep = self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_SPARES;
        if keep && truncate(&path).is_ok() {
            let spare = self
                .spare_dir
                .join(self.next.fetch_add(1, Relaxed).to_string());
            if std::fs::rename(&path, &spare).is_ok() {
                let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
                if spares.len() < MAX_SPARES {
                    spares.push(spare);
                    return;
                }
                drop(spares);
                let _ = std::fs::remove_file(&spare);
                return;
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Spare files in the pool.
    pub fn spares(&self) -> usize {
        self.spares.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Empties the file at `path` (without following a symlink: log files are regular files
/// paddock created, and anything else is left to be unlinked).
fn truncate(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    f.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A removed log becomes an empty spare that the next log is made from; nothing of the
    /// old content survives; spares left non-empty are deleted on open.
    #[test]
    fn removed_logs_are_recycled_empty() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::open(dir.path()).unwrap();
        let (a, b) = (LifecycleId::fresh(), LifecycleId::fresh());
        let mut f = logs.create("a", a).unwrap();
        f.write_all(b"secret of a\n").unwrap();
        drop(f);
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let ino_a = ino(&logs.path("a", a));
        logs.remove("a", a);
        assert!(!logs.path("a", a).exists());
        assert_eq!(logs.spares(), 1);
        let mut f = logs.create("b", b).unwrap();
        assert_eq!(logs.spares(), 0);
        // The same inode, emptied.
        assert_eq!(ino(&logs.path("b", b)), ino_a);
        assert_eq!(std::fs::read(logs.path("b", b)).unwrap(), b"");
        f.write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read(logs.path("b", b)).unwrap(), b"b\n");
        // Removing an absent log is fine.
        logs.remove("nope", LifecycleId::fresh());
        // A spare left with content (a crash mid-way) is deleted when the dir is reopened.
        logs.remove("b", b);
        std::fs::write(dir.path().join(".spare/77"), b"left over").unwrap();
        drop(logs);
        let logs = LogDir::open(dir.path()).unwrap();
        assert_eq!(logs.spares(), 1);
        assert!(!dir.path().join(".spare/77").exists());
        let c = LifecycleId::fresh();
        logs.create("c", c).unwrap();
        assert_eq!(std::fs::read(logs.path("c", c)).unwrap(), b"");
    }
}
