//! The watcher of [`super::LogDir`]: looks at each active log's size and rotates it past
//! its cap (collapse the rotated range where the file system can, copy and truncate where
//! it cannot), and the file helpers that needs.

use super::*;

/// Reads into `buf` from `off` until it is full or the file ends; returns the bytes read.
pub(super) fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
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
pub(super) fn copy_range(src: &File, off: u64, len: u64, dst: &File) -> io::Result<()> {
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
pub(super) struct Look {
    due: Instant,
    size: u64,
    at: Instant,
    /// The time between the last two looks.
    interval: Duration,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn active(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub(super) fn rotated(&self, name: &str, k: u32) -> PathBuf {
        self.dir.join(format!("{name}.log.{k}"))
    }

    /// The files of a log that exist, oldest first. Rotated files are numbered without
    /// gaps from `.1`, so the search stops at the first one missing.
    pub(super) fn files_of(&self, name: &str) -> Vec<PathBuf> {
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
    pub(super) fn take_spare(&self, path: &Path) {
        let spare = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(spare) = spare
            && std::fs::rename(&spare, path).is_err()
        {
            let _ = std::fs::remove_file(&spare);
        }
    }

    /// Empties `path` and keeps it as a spare, or unlinks it.
    pub(super) fn recycle(&self, path: &Path) {
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
    pub(super) fn shift(&self, name: &str) -> io::Result<File> {
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
    pub(super) fn enforce(&self, name: &str) -> io::Result<Option<(u64, u64)>> {
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
    pub(super) fn truncate_rest(
        &self,
        name: &str,
        f: &File,
        from: u64,
        max: u64,
    ) -> io::Result<u64> {
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

    pub(super) fn warn_fallback(&self, name: &str, e: io::Error) {
        if !self.fallback_warned.swap(true, Relaxed) {
            tracing::warn!(log = %self.active(name).display(), error = %e, "log rotation: the file system cannot collapse a file range (fallocate FALLOC_FL_COLLAPSE_RANGE); rotating by copy-then-truncate, which loses what a payload writes during a rotation (logged once)");
        }
    }

    /// The watcher thread: looks at each watched log when it is due (see the module docs)
    /// and rotates it when above the cap; ends when the [`LogDir`] is dropped.
    pub(super) fn watch(self: Arc<Self>, rx: mpsc::Receiver<Msg>) {
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
pub(super) fn truncate(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    f.set_len(0)
}
