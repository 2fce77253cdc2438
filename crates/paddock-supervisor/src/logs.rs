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

/// Reads into `buf` from `off` until it is full or the file ends; returns the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies `len` bytes of `src` from `off` to the end of `dst` (in the kernel where it
/// can: `copy_file_range`).
fn copy_range(src: &File, off: u64, len: u64, dst: &File) -> io::Result<()> {
    let mut off_in = off;
    let end = off + len;
    while off_in < end {
        let want = (end - off_in).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, None, want) {
            Ok(0) => return Err(io::Error::other("the log file ended early")),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                // By hand.
                let mut buf = vec![0u8; 64 * 1024];
                let mut at = dst.metadata()?.len();
                while off_in < end {
                    let want = (end - off_in).min(buf.len() as u64) as usize;
                    let n = read_full_at(src, &mut buf[..want], off_in)?;
                    if n == 0 {
                        return Err(io::Error::other("the log file ended early"));
                    }
                    dst.write_all_at(&buf[..n], at)?;
                    at += n as u64;
                    off_in += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// When the watcher looks at one log next, and what it saw last.
struct Look {
    due: Instant,
    size: u64,
    at: Instant,
    /// The time between the last two looks.
    interval: Duration,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn rotated(&self, name: &str, k: u32) -> PathBuf {
        self.dir.join(format!("{name}.log.{k}"))
    }

    /// The files of a log that exist, oldest first. Rotated files are numbered without
    /// gaps from `.1`, so the search stops at the first one missing.
    fn files_of(&self, name: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for k in 1..=MAX_LOG_FILES {
            let p = self.rotated(name, k);
            if std::fs::symlink_metadata(&p).is_err() {
                break;
            }
            v.push(p);
        }
        v.reverse();
        let a = self.active(name);
        if std::fs::symlink_metadata(&a).is_ok() {
            v.push(a);
        }
        v
    }

    /// Moves a spare to `path`, if there is one (a spare that cannot be moved is dropped).
    fn take_spare(&self, path: &Path) {
        let spare = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(spare) = spare
            && std::fs::rename(&spare, path).is_err()
        {
            let _ = std::fs::remove_file(&spare);
        }
    }

    /// Empties `path` and keeps it as a spare, or unlinks it.
    fn recycle(&self, path: &Path) {
        let keep = self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_SPARES;
        if keep && truncate(path).is_ok() {
            let spare = self
                .spare_dir
                .join(self.next.fetch_add(1, Relaxed).to_string());
            if std::fs::rename(path, &spare).is_ok() {
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
        let _ = std::fs::remove_file(path);
    }

    /// Makes room for a new `.1`: deletes the oldest rotated file, shifts the others up,
    /// and returns a new, empty `.1` open for writing.
    fn shift(&self, name: &str) -> io::Result<File> {
        let keep = self.limits.max_files - 1;
        self.recycle(&self.rotated(name, keep));
        for k in (1..keep).rev() {
            match std::fs::rename(self.rotated(name, k), self.rotated(name, k + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let first = self.rotated(name, 1);
        self.take_spare(&first);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&first)
    }

    /// Brings one log under the cap (see the module docs); returns the active file's size
    /// before and after, or `None` if it does not exist.
    fn enforce(&self, name: &str) -> io::Result<Option<(u64, u64)>> {
        let Some(max) = self.limits.max_size else {
            return Ok(None);
        };
        let _g = self.lock();
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.active(name))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        let size = meta.len();
        if !meta.is_file() || size <= max {
            return Ok(Some((size, size)));
        }
        let keep = u64::from(self.limits.max_files - 1);
        let blk = meta.blksize().clamp(512, 1 << 20);
        let chunk = (max / blk) * blk;
        // The head moved out: whole chunks (block-aligned, as collapsing needs, each at
        // most `max`), ending before the end of file. What stays is at most one chunk.
        let head = (((size - 1) / blk) * blk)
            .checked_div(chunk)
            .map_or(0, |n| n * chunk);
        if head > 0 && !self.no_collapse.load(Relaxed) {
            // Copy the newest `keep` chunks of the head, oldest first, each into a new
            // `.1`; anything older is dropped uncopied.
            let kept = head.min(keep * chunk);
            let mut from = head - kept;
            while from < head {
                let dst = self.shift(name)?;
                copy_range(&f, from, chunk, &dst)?;
                from += chunk;
            }
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::COLLAPSE_RANGE, 0, head) {
                Ok(()) => return Ok(Some((size, f.metadata()?.len()))),
                Err(e) => {
                    if e == rustix::io::Errno::OPNOTSUPP {
                        // The file system cannot: do not try again.
                        self.no_collapse.store(true, Relaxed);
                    }
                    self.warn_fallback(name, e.into());
                    // The copies are made; the head goes below, with what follows it.
                    let after = self.truncate_rest(name, &f, head, max)?;
                    return Ok(Some((size, after)));
                }
            }
        }
        let after = self.truncate_rest(name, &f, 0, max)?;
        Ok(Some((size, after)))
    }

    /// The fallback: copies `[from, size)` into rotated files (at most `max` each, the
    /// newest kept) and truncates the active file to 0.
    fn truncate_rest(&self, name: &str, f: &File, from: u64, max: u64) -> io::Result<u64> {
        let size = f.metadata()?.len();
        let keep = u64::from(self.limits.max_files - 1);
        if keep > 0 && size > from {
            let kept = (size - from).min(keep * max);
            let mut at = size - kept;
            // The last chunk ends at `size`; the first may be short.
            let first = kept % max;
            let mut len = if first == 0 { max } else { first };
            while at < size {
                let dst = self.shift(name)?;
                copy_range(f, at, len, &dst)?;
                at += len;
                len = max;
            }
        }
        f.set_len(0)?;
        Ok(0)
    }

    fn warn_fallback(&self, name: &str, e: io::Error) {
        if !self.fallback_warned.swap(true, Relaxed) {
            tracing::warn!(log = %self.active(name).display(), error = %e, "log rotation: the file system cannot collapse a file range (fallocate FALLOC_FL_COLLAPSE_RANGE); rotating by copy-then-truncate, which loses what a payload writes during a rotation (logged once)");
        }
    }

    /// The watcher thread: looks at each watched log when it is due (see the module docs)
    /// and rotates it when above the cap; ends when the [`LogDir`] is dropped.
    fn watch(self: Arc<Self>, rx: mpsc::Receiver<Msg>) {
        let Some(max) = self.limits.max_size else {
            return;
        };
        let mut looks: HashMap<String, Look> = HashMap::new();
        let mut due: BTreeSet<(Instant, String)> = BTreeSet::new();
        loop {
            let wait = due.first().map_or(Duration::from_secs(3600), |(t, _)| {
                t.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait) {
                Ok(Msg::Watch(name)) => {
                    let now = Instant::now();
                    if let Some(old) = looks.insert(
                        name.clone(),
                        Look {
                            due: now,
                            size: 0,
                            at: now,
                            interval: LOOK_MIN,
                        },
                    ) {
                        due.remove(&(old.due, name.clone()));
                    }
                    due.insert((now, name));
                }
                Ok(Msg::Done(name)) => {
                    if let Some(old) = looks.remove(&name) {
                        due.remove(&(old.due, name.clone()));
                    }
                    if let Err(e) = self.enforce(&name) {
                        tracing::warn!(log = %self.active(&name).display(), error = %e, "could not rotate the log of a finished sandbox");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            while let Some((t, name)) = due.first().cloned() {
                if t > now {
                    break;
                }
                due.remove(&(t, name.clone()));
                let (before, after) = match self.enforce(&name) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        looks.remove(&name);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(log = %self.active(&name).display(), error = %e, "could not rotate a log above its cap; trying again in a second");
                        (0, u64::MAX)
                    }
                };
                let Some(look) = looks.get_mut(&name) else {
                    continue;
                };
                let next = if after == u64::MAX {
                    LOOK_MAX
                } else {
                    // What the payload wrote since the last look, against the room left:
                    // look again before it could fill half of it. A quiet file is looked
                    // at less and less often (a new one every 10 ms at first).
                    let grew = before.saturating_sub(look.size) as f64;
                    let secs = now.duration_since(look.at).as_secs_f64().max(1e-3);
                    let rate = grew / secs;
                    let room = max.saturating_sub(after) as f64;
                    if rate <= 0.0 {
                        (look.interval * 2).min(LOOK_MAX)
                    } else {
                        Duration::from_secs_f64((room / rate / 2.0).min(LOOK_MAX.as_secs_f64()))
                            .max(LOOK_MIN)
                    }
                };
                look.interval = next;
                if after != u64::MAX {
                    look.size = after;
                }
                look.at = now;
                look.due = now + next;
                due.insert((look.due, name));
            }
        }
    }
}

/// Empties the file at `path` (without following a symlink: log files are regular files
/// paddock created, and anything else is left to be unlinked).
fn truncate(path: &Path) -> io::Result<()> {
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
