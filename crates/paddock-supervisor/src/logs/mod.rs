//! The sandboxes' log files: recycled, size-capped and rotated.
//!
//! A sandbox whose stdout or stderr is [`StdioTarget::Log`](crate::StdioTarget::Log)
//! writes to `<log dir>/<id>@<lifecycle>.log`.
//!
//! **Recycling.** Creating a file allocates an inode and deleting one frees it, and ext4
//! skips inodes freed in the last few seconds when it looks for a free one
//! (`recently_deleted()`, which reads each candidate's inode block): with many
//! short-lived sandboxes that search was the daemon's largest cost in a burst of starts
//! (17% of its CPU samples; 564 starts/s with log files against 854 without, 3 rounds of
//! 1,000). So a deleted log is truncated and kept as a spare (`<log dir>/.spare/<n>`, at
//! most [`MAX_SPARES`]), and the next log (or rotated file) is renamed from a spare: while
//! sandboxes come and go at a steady rate, no inode is allocated or freed. A spare is
//! always empty: it is truncated before it becomes one, and a spare that is not empty
//! when the directory is opened (say, after a crash between the two steps) is deleted, so
//! nothing one sandbox wrote can show up in another's log.
//!
//! **The cap.** With [`LogLimits::max_size`] set, each lifecycle keeps at most
//! [`LogLimits::max_files`] files: the active `<name>.log` and rotated ones
//! `<name>.log.1` (newest) … `<name>.log.<max_files - 1>` (oldest), each of at most
//! `max_size` bytes. The payload writes straight into the active file — through a
//! descriptor opened `O_APPEND`, with no pipe and no copier in between — so its output
//! never depends on the supervisor being alive: a supervisor that crashes and is
//! restarted (adoption) costs the payload nothing (a pipe whose reader died would give it
//! `EPIPE`/`SIGPIPE`, and a full pipe would block it). The cap is enforced from outside
//! by one watcher thread per log directory (not one per sandbox): it `stat`s each active
//! file on a schedule adapted to its growth — every 10 ms for a new file, backing off
//! (doubling) to once a second while it stays quiet; for a growing one, early enough to
//! look again before it could fill half the room left, but at most every 10 ms — and
//! rotates a file found above the cap, and once more when its lifecycle stops. Between two looks a file can exceed the cap by what the payload writes in that
//! time; while no supervisor runs, nothing is enforced, and the first look of the next
//! one (after adoption) brings the file back under the cap.
//!
//! **Rotation** copies the head of the active file into new rotated files (`.1`, the
//! older ones shifted to `.2` … and the oldest deleted) and then removes that head from
//! the active file with `fallocate(FALLOC_FL_COLLAPSE_RANGE)`, which the file system does
//! under the inode's lock: a write racing the rotation lands after the collapsed range,
//! so no byte the payload wrote is lost or duplicated. The head moved is block-aligned
//! (the call's requirement); the active file keeps the unaligned tail (less than one
//! block). Where the file system does not support collapsing (tmpfs, ext4 without
//! extents, NFS), rotation falls back to copy-then-truncate (logged once as a WARN): then
//! what the payload writes between the copy and the truncate is lost. Output beyond
//! `max_files × max_size` is dropped oldest first without being copied.
//!
//! Every file operation here runs on the caller's thread or the watcher thread; the
//! supervisor calls them from blocking contexts only where noted.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ids::{LifecycleId, cgroup_name};

mod watch;
use watch::*;

/// Most spare files kept; more deleted logs are unlinked.
pub const MAX_SPARES: usize = 1024;

/// The smallest [`LogLimits::max_size`] accepted.
pub const MIN_LOG_MAX_SIZE: u64 = 64 * 1024;

/// The largest [`LogLimits::max_files`] accepted.
pub const MAX_LOG_FILES: u32 = 100;

/// The longest time between two looks at a quiet log file.
const LOOK_MAX: Duration = Duration::from_secs(1);
/// The shortest time between two looks at a log file growing fast.
const LOOK_MIN: Duration = Duration::from_millis(10);

/// The size cap of each lifecycle's log (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most bytes per file — the active one and each rotated one; `None`: no cap, no
    /// rotation, no watcher thread.
    pub max_size: Option<u64>,
    /// Files per lifecycle, the active one included (1: no rotated file, the oldest output
    /// is dropped). At least 1, at most [`MAX_LOG_FILES`].
    pub max_files: u32,
}

impl LogLimits {
    /// No cap.
    pub const UNLIMITED: LogLimits = LogLimits {
        max_size: None,
        max_files: 1,
    };

    /// Checks the bounds ([`MIN_LOG_MAX_SIZE`], 1 ..= [`MAX_LOG_FILES`]); the error names
    /// the value and the bound.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.max_size
            && s < MIN_LOG_MAX_SIZE
        {
            return Err(format!(
                "log max size {s} bytes is below the minimum of {MIN_LOG_MAX_SIZE} (64K)"
            ));
        }
        if !(1..=MAX_LOG_FILES).contains(&self.max_files) {
            return Err(format!(
                "log max files {} is out of range (1 to {MAX_LOG_FILES})",
                self.max_files
            ));
        }
        Ok(())
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits::UNLIMITED
    }
}

/// A directory of sandbox log files with a pool of spare (empty) files and, when capped,
/// the watcher thread that enforces the cap.
#[derive(Debug)]
pub struct LogDir {
    shared: Arc<Shared>,
    /// To the watcher thread (only with a cap); dropping it ends the thread.
    watcher: Option<mpsc::Sender<Msg>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    spare_dir: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    limits: LogLimits,
    /// Serialises rotations, reads of a whole log and removals, so a reader never sees a
    /// rotation half done.
    files: Mutex<()>,
    /// Whether the copy-then-truncate fallback has been logged.
    fallback_warned: AtomicBool,
    /// Whether the file system refused to collapse a range (rotations then copy and
    /// truncate at once).
    no_collapse: AtomicBool,
}

enum Msg {
    /// Watch this log (its name, `<id>@<lifecycle>`).
    Watch(String),
    /// Its lifecycle ended: enforce the cap once more and stop watching it.
    Done(String),
}

impl LogDir {
    /// Opens (creating if needed) the log directory `dir` and its `.spare` directory, and
    /// takes the empty spares a previous supervisor left there (deleting any other file).
    /// No cap.
    pub fn open(dir: &Path) -> io::Result<LogDir> {
        Self::open_with(dir, LogLimits::UNLIMITED)
    }

    /// Like [`LogDir::open`], with `limits`; with a cap, starts the watcher thread
    /// (`paddock-logs`), which ends when the `LogDir` is dropped.
    pub fn open_with(dir: &Path, limits: LogLimits) -> io::Result<LogDir> {
        limits.validate().map_err(io::Error::other)?;
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
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            spare_dir,
            spares: Mutex::new(spares),
            next: AtomicU64::new(next),
            limits,
            files: Mutex::new(()),
            fallback_warned: AtomicBool::new(false),
            no_collapse: AtomicBool::new(false),
        });
        let watcher = match limits.max_size {
            Some(_) => {
                let (tx, rx) = mpsc::channel();
                let s = shared.clone();
                std::thread::Builder::new()
                    .name("paddock-logs".into())
                    .spawn(move || s.watch(rx))?;
                Some(tx)
            }
            None => None,
        };
        Ok(LogDir { shared, watcher })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The cap.
    pub fn limits(&self) -> LogLimits {
        self.shared.limits
    }

    /// The (active) log file of one lifecycle.
    pub fn path(&self, id: &str, lifecycle: LifecycleId) -> PathBuf {
        self.shared.active(&cgroup_name(id, lifecycle))
    }

    /// Creates (or opens, appending) the log file of one lifecycle, from a spare when there
    /// is one, and has the watcher enforce the cap on it.
    pub fn create(&self, id: &str, lifecycle: LifecycleId) -> io::Result<File> {
        let path = self.path(id, lifecycle);
        self.shared.take_spare(&path);
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        self.watch(id, lifecycle);
        Ok(f)
    }

    /// Has the watcher enforce the cap on this lifecycle's log (for a lifecycle adopted
    /// from a previous supervisor, whose payload still writes to it). No-op without a cap.
    pub fn watch(&self, id: &str, lifecycle: LifecycleId) {
        if let Some(tx) = &self.watcher {
            let _ = tx.send(Msg::Watch(cgroup_name(id, lifecycle)));
        }
    }

    /// The lifecycle ended: the watcher enforces the cap once more (its last writer is
    /// gone) and stops watching the log. No-op without a cap.
    pub fn finished(&self, id: &str, lifecycle: LifecycleId) {
        if let Some(tx) = &self.watcher {
            let _ = tx.send(Msg::Done(cgroup_name(id, lifecycle)));
        }
    }

    /// Brings the log of one lifecycle under the cap now, on the caller's thread (the
    /// watcher does this by itself; for tests and tools).
    pub fn enforce(&self, id: &str, lifecycle: LifecycleId) -> io::Result<()> {
        self.shared.enforce(&cgroup_name(id, lifecycle)).map(drop)
    }

    /// The files of one lifecycle's log that exist, oldest first (rotated ones, then the
    /// active one).
    pub fn files(&self, id: &str, lifecycle: LifecycleId) -> Vec<PathBuf> {
        let _g = self.shared.lock();
        self.shared.files_of(&cgroup_name(id, lifecycle))
    }

    /// The last `max` bytes of one lifecycle's log across its rotated files and the active
    /// one, in order; empty if it has none. Never sees a rotation half done.
    pub fn read_tail(&self, id: &str, lifecycle: LifecycleId, max: u64) -> io::Result<Vec<u8>> {
        let _g = self.shared.lock();
        let mut files = Vec::new();
        for p in self.shared.files_of(&cgroup_name(id, lifecycle)) {
            match File::open(&p) {
                Ok(f) => {
                    let len = f.metadata()?.len();
                    files.push((f, len));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let total: u64 = files.iter().map(|(_, l)| l).sum();
        let mut skip = total.saturating_sub(max);
        let mut out = Vec::with_capacity(total.min(max) as usize);
        for (f, len) in files {
            if skip >= len {
                skip -= len;
                continue;
            }
            let start = out.len();
            out.resize(start + (len - skip) as usize, 0);
            let n = read_full_at(&f, &mut out[start..], skip)?;
            out.truncate(start + n);
            skip = 0;
        }
        Ok(out)
    }

    /// Deletes the log files of one lifecycle, rotated ones included (absent is fine):
    /// each is emptied and kept as a spare while there are fewer than [`MAX_SPARES`], else
    /// unlinked.
    pub fn remove(&self, id: &str, lifecycle: LifecycleId) {
        let _g = self.shared.lock();
        for p in self.shared.files_of(&cgroup_name(id, lifecycle)) {
            self.shared.recycle(&p);
        }
    }

    /// Spare files in the pool.
    pub fn spares(&self) -> usize {
        self.shared
            .spares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
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

    /// Numbered lines 1..=n, as `seq` prints them.
    fn seq(from: u64, to: u64) -> Vec<u8> {
        (from..=to)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect()
    }

    /// Checks that `text` is a run of consecutive numbered lines ending with `last`
    /// (the first line may be cut); returns the first whole number.
    fn consecutive_ending_at(text: &[u8], last: u64) -> u64 {
        let s = std::str::from_utf8(text).unwrap();
        let mut lines: Vec<&str> = s.lines().collect();
        assert!(s.ends_with('\n'));
        lines.remove(0); // may be cut
        let nums: Vec<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
        for w in nums.windows(2) {
            assert_eq!(w[1], w[0] + 1, "a gap or a duplicate in the log");
        }
        assert_eq!(*nums.last().unwrap(), last);
        nums[0]
    }

    fn sizes(logs: &LogDir, id: &str, lc: LifecycleId) -> Vec<u64> {
        logs.files(id, lc)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect()
    }

    /// Rotation in a directory of `dir_in` (an ext4/xfs one collapses; tmpfs falls back):
    /// appends far beyond the cap, enforced between writes; every file stays within the
    /// cap, at most `max_files` exist, and the log reads back as the newest output in
    /// order.
    fn rotation_in(base: &Path, lossless: bool) {
        let dir = tempfile::tempdir_in(base).unwrap();
        let limits = LogLimits {
            max_size: Some(64 * 1024),
            max_files: 3,
        };
        let logs = LogDir::open_with(dir.path(), limits).unwrap();
        let lc = LifecycleId::fresh();
        let mut f = logs.create("a", lc).unwrap();
        let mut last = 0;
        for _ in 0..40 {
            let next = last + 5000;
            f.write_all(&seq(last + 1, next)).unwrap();
            last = next;
            logs.enforce("a", lc).unwrap();
            let s = sizes(&logs, "a", lc);
            assert!(s.len() <= 3, "{s:?}");
            assert!(s.iter().all(|&x| x <= 64 * 1024), "{s:?}");
        }
        let all = logs.read_tail("a", lc, u64::MAX).unwrap();
        let total: u64 = sizes(&logs, "a", lc).iter().sum();
        assert_eq!(all.len() as u64, total);
        let first = consecutive_ending_at(&all, last);
        if lossless {
            // Rotated by collapsing: two full rotated files.
            assert!(!logs.shared.no_collapse.load(Relaxed));
            assert!(!logs.shared.fallback_warned.load(Relaxed));
            assert!(total >= 2 * 64 * 1024, "{total}");
        }
        assert!(first > 1, "old output was dropped");
        // The tail is the tail.
        let tail = logs.read_tail("a", lc, 1000).unwrap();
        assert_eq!(tail.len(), 1000);
        assert!(all.ends_with(&tail));
        // Removal takes every file.
        logs.remove("a", lc);
        assert!(logs.files("a", lc).is_empty());
        assert!(logs.read_tail("a", lc, 100).unwrap().is_empty());
    }

    #[test]
    fn rotation_keeps_the_newest_output_within_the_cap() {
        let tmp = std::env::temp_dir();
        // ext4 and XFS collapse ranges; elsewhere rotation falls back to truncation.
        let magic = rustix::fs::statfs(&tmp).unwrap().f_type as u64;
        let collapses = magic == 0xEF53 || magic == 0x5846_5342;
        if !collapses {
            eprintln!("{} is not ext4 or XFS: testing the fallback", tmp.display());
        }
        rotation_in(&tmp, collapses);
    }

    #[test]
    fn rotation_falls_back_to_truncation_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            paddock_testutil::skip(
                "rotation_falls_back_to_truncation_on_tmpfs",
                "no /dev/shm (tmpfs)",
            );
            return;
        }
        rotation_in(shm, false);
    }

    /// The watcher thread rotates a log growing past the cap by itself, and once more when
    /// its lifecycle is finished.
    #[test]
    fn the_watcher_rotates_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::open_with(
            dir.path(),
            LogLimits {
                max_size: Some(64 * 1024),
                max_files: 2,
            },
        )
        .unwrap();
        let lc = LifecycleId::fresh();
        let mut f = logs.create("w", lc).unwrap();
        f.write_all(&vec![b'x'; 1 << 20]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sizes(&logs, "w", lc).iter().any(|&s| s > 64 * 1024) {
            assert!(Instant::now() < deadline, "{:?}", sizes(&logs, "w", lc));
            std::thread::sleep(Duration::from_millis(10));
        }
        f.write_all(&vec![b'y'; 200 * 1024]).unwrap();
        logs.finished("w", lc);
        while sizes(&logs, "w", lc).iter().any(|&s| s > 64 * 1024) {
            assert!(Instant::now() < deadline, "{:?}", sizes(&logs, "w", lc));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(sizes(&logs, "w", lc).len() <= 2);
    }

    #[test]
    fn limits_are_validated() {
        assert!(LogLimits::UNLIMITED.validate().is_ok());
        let l = |s, n| LogLimits {
            max_size: Some(s),
            max_files: n,
        };
        assert!(l(10 << 20, 3).validate().is_ok());
        assert!(l(1000, 3).validate().unwrap_err().contains("minimum"));
        assert!(
            l(1 << 20, 0)
                .validate()
                .unwrap_err()
                .contains("out of range")
        );
        assert!(l(1 << 20, 101).validate().is_err());
    }
}
