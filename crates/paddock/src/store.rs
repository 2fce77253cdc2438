//! The store of the daemon: one `redb` database in the state directory, one row per
//! lifecycle (`<id>@<lifecycle>` → the supervisor's [`Record`] as JSON).
//!
//! `redb` is an embedded, pure-Rust, ACID key-value store. It needs no C toolchain (unlike
//! SQLite through `rusqlite`) and no server.
//!
//! **What survives what.** Every write whose future has resolved survives a crash of the
//! daemon (SIGKILL, panic, OOM kill): its transaction is committed in full (data and
//! header) with `write(2)`s into the kernel's page cache before the future resolves. It is
//! not fsynced: what an fsync adds is surviving a crash of the *kernel*, and that ends
//! every sandbox anyway (processes and cgroups live in memory), so paying ~1 ms per start
//! for it would buy nothing a restarted daemon could act on. A clean shutdown
//! ([`Store::flush`]) does fsync. After a reboot the file may be torn; the store records
//! the boot it was written in (`<db>.boot-id`), and a database from an earlier boot that
//! cannot be opened is moved aside (`<db>.unreadable-<unix time>`, with a warning) and a
//! fresh one started — every sandbox it described died with that boot. In the same boot, a
//! database that cannot be opened is an error: its sandboxes may be alive.
//!
//! **Group commit.** Writes go through a channel to one writer thread, which commits
//! whatever is queued (up to [`MAX_BATCH`] writes) in one transaction, then answers each
//! write's future. So 1,000 concurrent starts share commits, no commit runs on a caller's
//! (tokio worker's) thread, and a caller waits only for the commit that holds its own
//! record. The writes of one caller are committed in the order it made them.
//!
//! **Events.** The supervisor's events ([`Store::push_event`], from the `on_event` hook,
//! which never blocks) go through the same queue and are numbered and stored by the same
//! commits, in a bounded ring (see [`events`]); only then are they handed to the live
//! stream ([`Store::subscribe`]), so a client only ever sees committed events. An event
//! adds no commit of its own to a start or a stop: nobody waits for it, and it shares the
//! transaction of whatever records are queued with it. A commit that fails keeps its
//! events for the next one (retried within [`EVENT_RETRY`] even if nothing else is
//! queued), up to [`MAX_PENDING_EVENTS`]; past that the oldest are lost, counted
//! (`paddock_events_lost`) and logged.
//!
//! **Reads** (the reconciliation's scan) open a read transaction of their own: redb's
//! reads are MVCC, so a scan of 10,000 records never holds up the writer, and it sees
//! every write whose future has resolved.
//!
//! Over 600 lines with its unit tests (about 720 without): the writer thread (which also
//! numbers, commits and publishes the events), the boot-id handling and the reads share one
//! database handle and its reopen rule; the crash and boot semantics above are tested next
//! to the code that gives them. The event ring's table layout and wire form are in
//! [`events`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use paddock_supervisor::{
    Event, HookError, HookErrorKind, LifecycleId, Persisting, Record, SandboxId, cgroup_name,
    parse_cgroup_name,
};
use redb::backends::FileBackend;
use redb::{Database, ReadableTable, StorageBackend, TableDefinition};
use tokio::sync::{broadcast, oneshot};

pub mod events;
pub use events::{Committed, DEFAULT_RETENTION, EventPage, MAX_RETENTION, SequencedEvent};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

/// At most this many writes in one transaction.
const MAX_BATCH: usize = 1024;

/// Events a failing store keeps for its next commit; past this the oldest are lost (and
/// counted).
pub const MAX_PENDING_EVENTS: usize = 65_536;

/// How soon events of a failed commit are retried when nothing else is queued.
pub const EVENT_RETRY: Duration = Duration::from_secs(1);

/// Committed events the live stream buffers for each subscriber; one that falls further
/// behind reads the rest from the ring.
const LIVE_CAPACITY: usize = 1024;

/// The sandbox records of one state directory.
///
/// After an I/O error (a full or failing disk) redb refuses further use of the open
/// database ([`redb::Error::PreviousIo`]); the store then reopens it when it is next used,
/// so the daemon recovers by itself when space returns.
pub struct Store {
    shared: Arc<Shared>,
    /// The writer thread's queue; `None` once the store is dropped.
    queue: Option<Sender<Op>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// What the writer thread and the readers share.
struct Shared {
    /// The open database; `None` after an I/O error left it unusable (or a reopen failed),
    /// until the next use reopens it. The lock is held only to take a reference (or to
    /// reopen), never across a transaction.
    db: Mutex<Option<Arc<OpenDb>>>,
    path: PathBuf,
    counters: Arc<StoreCounters>,
    /// Events kept in the ring (`--event-retention`).
    retention: u64,
    /// The seq of the last committed event (set by the writer after each commit, before
    /// the events are sent on [`Shared::live`]).
    last_seq: AtomicU64,
    /// Committed events, in order of seq.
    live: broadcast::Sender<Arc<Committed>>,
    /// The name of the thread that made the last commit (the tests check that it is the
    /// writer thread's).
    #[cfg(test)]
    last_committer: Mutex<Option<String>>,
}

/// What the store counts (the daemon exports them as metrics).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Transactions committed (each holds one or more writes).
    pub commits: AtomicU64,
    /// Writes that failed (each is also logged).
    pub write_failures: AtomicU64,
    /// Events committed to the ring.
    pub events_committed: AtomicU64,
    /// Events lost before they could be committed: more than [`MAX_PENDING_EVENTS`] kept
    /// for a failing store, or one that could not be encoded (each loss is logged).
    pub events_lost: AtomicU64,
    /// Events that event streams could not deliver: the ring had dropped them before a
    /// slow client read them (each gap is a `lagged` event on that stream).
    pub stream_missed: AtomicU64,
}

/// The open database and a second handle on its file, to fsync it.
struct OpenDb {
    db: Database,
    file: File,
}

/// redb's file backend, except that a commit's sync is left to the kernel: committed
/// pages and header are written (`pwrite`) before the commit returns, so they survive the
/// daemon's crash; they are not fsynced (see the module docs for why). [`Store::flush`]
/// fsyncs through [`OpenDb::file`].
#[derive(Debug)]
struct PageCacheBackend(FileBackend);

impl StorageBackend for PageCacheBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.0.read(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        // Writes to one file reach the page cache in the order they were made, which is
        // the barrier a daemon crash needs.
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

/// Opens (creating if needed) the database at `path` on a [`PageCacheBackend`].
fn open_db(path: &Path) -> Result<OpenDb, String> {
    let what =
        |e: &dyn std::fmt::Display| format!("open the state database {}: {e}", path.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| what(&e))?;
    let fsync = file.try_clone().map_err(|e| what(&e))?;
    let backend = FileBackend::new(file).map_err(|e| {
        what(&format_args!(
            "{e} (is another paddock daemon using this state directory?)"
        ))
    })?;
    let db = Database::builder()
        .create_with_backend(PageCacheBackend(backend))
        .map_err(|e| what(&e))?;
    let tx = db.begin_write().map_err(|e| what(&e))?;
    tx.open_table(SANDBOXES).map_err(|e| what(&e))?;
    tx.open_table(events::EVENTS).map_err(|e| what(&e))?;
    tx.open_table(events::META).map_err(|e| what(&e))?;
    tx.commit().map_err(|e| what(&e))?;
    Ok(OpenDb { db, file: fsync })
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id`), if the kernel tells.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `<path>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens the database at `path`, moving aside one from an earlier boot that cannot be
/// opened (see the module docs), then records this boot as the file's.
fn open_for_this_boot(path: &Path, boot: Option<&str>) -> anyhow::Result<OpenDb> {
    let marker = sibling(path, "boot-id");
    let recorded = std::fs::read_to_string(&marker).ok();
    let earlier_boot = path.exists() && recorded.as_deref().map(str::trim) != boot;
    let open = match open_db(path) {
        Ok(o) => o,
        Err(e) if earlier_boot => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = sibling(path, &format!("unreadable-{secs}"));
            std::fs::rename(path, &aside).map_err(|r| {
                anyhow::anyhow!(
                    "{e}; it is from an earlier boot, and moving it aside to {} failed: {r}",
                    aside.display()
                )
            })?;
            tracing::warn!(error = %e, moved_to = %aside.display(), "the state database is from an earlier boot (whose sandboxes all ended with it) and cannot be opened; starting a fresh one");
            open_db(path).map_err(anyhow::Error::msg)?
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "{e}; it was written in this boot, so its sandboxes may still be running: fix or restore the file (or, if none is, move it away) and start again"
            ));
        }
    };
    if let Some(boot) = boot
        && recorded.as_deref().map(str::trim) != Some(boot)
    {
        // The database is fsynced first, so a marker of this boot never sits beside a
        // file whose content has not reached the disk.
        let tmp = sibling(path, "boot-id.tmp");
        let write = || -> io::Result<()> {
            open.file.sync_all()?;
            let mut f = File::create(&tmp)?;
            io::Write::write_all(&mut f, boot.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &marker)
        };
        write().map_err(|e| anyhow::anyhow!("record the boot ID in {}: {e}", marker.display()))?;
    }
    Ok(open)
}

/// What the writer thread is handed.
enum Op {
    /// A record write (or a flush).
    Write(Write),
    /// An event to number, store and publish.
    Event(Box<Event>),
}

/// One queued write.
struct Write {
    key: String,
    /// The row to write; `None` deletes it.
    value: Option<Vec<u8>>,
    /// fsync the file after the commit ([`Store::flush`]).
    fsync: bool,
    /// What the write is, for errors ("write record <key> (state running)").
    what: String,
    done: oneshot::Sender<Result<(), String>>,
}

impl Store {
    /// Opens (creating if needed) the database file at `path` and starts its writer
    /// thread, which counts into `counters`; the event ring keeps the newest
    /// `event_retention` events (at least 1). Event numbering continues after the highest
    /// seq the database holds. A database from an earlier boot that cannot be opened is
    /// moved aside (see the module docs); one from this boot is an error.
    pub fn open(
        path: &Path,
        counters: Arc<StoreCounters>,
        event_retention: u64,
    ) -> anyhow::Result<Store> {
        Self::open_in_boot(path, boot_id().as_deref(), counters, event_retention)
    }

    /// [`Store::open`] as if the current boot's ID were `boot`.
    fn open_in_boot(
        path: &Path,
        boot: Option<&str>,
        counters: Arc<StoreCounters>,
        event_retention: u64,
    ) -> anyhow::Result<Store> {
        let db = open_for_this_boot(path, boot)?;
        #[allow(clippy::result_large_err)] // redb's own error type
        let last = db
            .db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|tx| events::last_seq_in(&tx))
            .map_err(|e| {
                anyhow::anyhow!(
                    "read the last event seq of the state database {}: {e}",
                    path.display()
                )
            })?;
        let shared = Arc::new(Shared {
            db: Mutex::new(Some(Arc::new(db))),
            path: path.to_owned(),
            counters,
            retention: event_retention.max(1),
            last_seq: AtomicU64::new(last),
            live: broadcast::channel(LIVE_CAPACITY).0,
            #[cfg(test)]
            last_committer: Mutex::new(None),
        });
        let (queue, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("paddock-store".into())
            .spawn(move || s.run(&rx))
            .map_err(|e| anyhow::anyhow!("start the state database writer thread: {e}"))?;
        Ok(Store {
            shared,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// Queues a write (insert or replace) of a record; the returned future resolves when
    /// its transaction has committed, from when it survives a crash of the daemon. The
    /// supervisor awaits the `running` record before a start succeeds (and kills a sandbox
    /// whose record failed), and a graceful stop awaits its `stopping` record, so a
    /// restarted daemon adopts every started sandbox and finishes every interrupted stop.
    /// Losing the `creating` record in a crash is safe: the start never returned, and the
    /// next daemon reclaims the cgroup by its owner tag (which is set before anything runs
    /// in it). Losing a later state only makes the next daemon finish a stop that was
    /// already finished, which it does (the cgroup is gone). Dropping the future does not
    /// cancel the write. The commit runs on the writer thread, never in the future's `poll`.
    pub fn put(&self, rec: &Record) -> Persisting {
        let key = cgroup_name(rec.spec.id.as_str(), rec.lifecycle);
        let value = match serde_json::to_vec(rec) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("encode record {key}: {e}");
                return Box::pin(std::future::ready(Err(HookError::new(
                    HookErrorKind::Encode,
                    msg,
                ))));
            }
        };
        let what = format!("write record {key} (state {})", rec.state);
        self.enqueue(key, Some(value), false, what)
    }

    /// Queues the deletion of one lifecycle's record (absent is fine); the future resolves
    /// like [`Store::put`]'s.
    pub fn delete(&self, id: &SandboxId, lc: LifecycleId) -> Persisting {
        let key = cgroup_name(id.as_str(), lc);
        let what = format!("delete record {key}");
        self.enqueue(key, None, false, what)
    }

    /// Waits until every write queued before the call is committed and fsynced (on disk,
    /// surviving a crash of the kernel too).
    pub async fn flush(&self) -> Result<(), String> {
        self.enqueue(String::new(), None, true, "flush".into())
            .await
            .map_err(|e| e.to_string())
    }

    /// Queues an event to be numbered, committed to the ring and then published to
    /// [`Store::subscribe`]rs. Never blocks (the supervisor calls it from its `on_event`
    /// hook). After the store is closed the event is lost, counted and logged.
    pub fn push_event(&self, ev: &Event) {
        let sent = match &self.queue {
            Some(q) => q.send(Op::Event(Box::new(ev.clone()))).is_ok(),
            None => false,
        };
        if !sent {
            self.shared.counters.events_lost.fetch_add(1, Relaxed);
            tracing::error!(sandbox = %ev.id, lifecycle = %ev.lifecycle, "EVENT LOST: the state database is closed (its writer thread stopped)");
        }
    }

    /// Subscribes to committed events, in order of seq, from now on. A receiver that
    /// falls behind gets `Lagged` and reads what it missed with [`Store::events_after`]
    /// (every event it is sent is committed before it is sent, so a read made after
    /// receiving or missing it sees it).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.shared.live.subscribe()
    }

    /// The seq of the last committed event (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Relaxed)
    }

    /// The events with seq > `since` (at most `max`, in order) and the ring's bounds, in
    /// one snapshot. It blocks: call it off the async workers.
    pub fn events_after(&self, since: u64, max: usize) -> anyhow::Result<EventPage> {
        let open = self
            .shared
            .current()
            .map_err(|e| anyhow::anyhow!("read events from {}: {e}", self.shared.path.display()))?;
        #[allow(clippy::result_large_err)]
        let read = || -> Result<EventPage, redb::Error> {
            let tx = open.db.begin_read()?;
            events::read_after(&tx, since, max)
        };
        let r = read();
        self.shared.check(&open, &r);
        r.map_err(|e| anyhow::anyhow!("read events from {}: {e}", self.shared.path.display()))
    }

    /// Hands one write to the writer thread; the future resolves with its commit's outcome.
    fn enqueue(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        fsync: bool,
        what: String,
    ) -> Persisting {
        let (done, rx) = oneshot::channel();
        let op = Write {
            key,
            value,
            fsync,
            what,
            done,
        };
        let sent = match &self.queue {
            Some(q) => q.send(Op::Write(op)).map_err(|e| match e.0 {
                Op::Write(w) => w.what,
                Op::Event(_) => String::new(),
            }),
            None => Err(op.what),
        };
        if let Err(what) = sent {
            return Box::pin(std::future::ready(Err(HookError::new(
                HookErrorKind::Closed,
                format!("{what}: the state database is closed (its writer thread stopped)"),
            ))));
        }
        Box::pin(async move {
            match rx.await {
                Ok(done) => done.map_err(|e| HookError::new(HookErrorKind::Write, e)),
                Err(_) => Err(HookError::new(
                    HookErrorKind::Closed,
                    "the state database writer stopped before committing this write",
                )),
            }
        })
    }

    /// Every record. Rows that cannot be decoded are returned as errors with their key.
    /// Sees every write whose future has resolved.
    #[cfg(test)]
    pub fn all(&self) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        self.records_where(|_| true)
    }

    /// The records whose key (`<id>@<lifecycle>`) `want` accepts; the others are not
    /// decoded (a periodic reconciliation wants only the few its supervisor does not know,
    /// out of possibly 10,000). Rows that cannot be decoded are returned as errors with
    /// their key. Sees every write whose future has resolved. The scan runs in a read
    /// transaction of its own (a snapshot), so writes commit while it runs; it blocks, so
    /// call it off the async workers.
    pub fn records_where(
        &self,
        want: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        let what = || format!("read the state database {}", self.shared.path.display());
        let open = self
            .shared
            .current()
            .map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
        // redb's own error type, matched by variant (`PreviousIo`) in `check`.
        #[allow(clippy::result_large_err)]
        let read = || -> Result<_, redb::Error> {
            let tx = open.db.begin_read()?;
            let t = tx.open_table(SANDBOXES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                if !want(k.value()) {
                    continue;
                }
                out.push(
                    serde_json::from_slice(v.value())
                        .map_err(|e| (k.value().to_owned(), e.to_string())),
                );
            }
            Ok(out)
        };
        let r = read();
        self.shared.check(&open, &r);
        r.map_err(|e| anyhow::anyhow!("{}: {e}", what()))
    }
}

impl Drop for Store {
    /// Commits what is queued, then stops the writer thread.
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has drained the queue.
        drop(self.queue.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    /// The open database, reopened first when a previous I/O error left it unusable (or a
    /// reopen failed before). The lock is released before the caller uses it.
    fn current(&self) -> Result<Arc<OpenDb>, String> {
        let mut g = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = &*g {
            return Ok(open.clone());
        }
        let open = Arc::new(open_db(&self.path).map_err(|e| format!("re{e}"))?);
        tracing::warn!(path = %self.path.display(), "reopened the state database after an I/O error");
        *g = Some(open.clone());
        Ok(open)
    }

    /// After an operation on `open` ended in `r`: when redb refuses the database for a
    /// previous I/O error, drops it (once its last user lets go, its file lock goes too),
    /// so that the next use reopens it.
    fn check<T>(&self, open: &Arc<OpenDb>, r: &Result<T, redb::Error>) {
        if let Err(redb::Error::PreviousIo) = r {
            let mut g = self.db.lock().unwrap_or_else(|p| p.into_inner());
            if g.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, open)) {
                *g = None;
            }
        }
    }

    /// The writer thread: commits everything queued, one transaction per batch of what has
    /// accumulated meanwhile, until the store is dropped and the queue empty. Events of a
    /// failed commit stay pending and go into the next one (within [`EVENT_RETRY`]).
    fn run(&self, queue: &Receiver<Op>) {
        let mut pending: VecDeque<Event> = VecDeque::new();
        loop {
            let first = if pending.is_empty() {
                match queue.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                }
            } else {
                match queue.recv_timeout(EVENT_RETRY) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    // Closing: one last try for what is pending.
                    Err(RecvTimeoutError::Disconnected) => {
                        self.commit_and_answer(Vec::new(), &mut pending);
                        self.lose(pending.len(), "the store closed while its commits failed");
                        break;
                    }
                }
            };
            let mut batch = Vec::new();
            let mut ops = 0;
            let mut take = |op: Op, batch: &mut Vec<Write>| match op {
                Op::Write(w) => batch.push(w),
                Op::Event(ev) => pending.push_back(*ev),
            };
            if let Some(op) = first {
                take(op, &mut batch);
                ops += 1;
            }
            while ops < MAX_BATCH {
                match queue.try_recv() {
                    Ok(op) => {
                        take(op, &mut batch);
                        ops += 1;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if pending.len() > MAX_PENDING_EVENTS {
                let n = pending.len() - MAX_PENDING_EVENTS;
                pending.drain(..n);
                self.lose(n, "more events than the store keeps while its commits fail");
            }
            self.commit_and_answer(batch, &mut pending);
        }
    }

    /// Counts and logs `n` lost events.
    fn lose(&self, n: usize, why: &str) {
        if n > 0 {
            self.counters.events_lost.fetch_add(n as u64, Relaxed);
            tracing::error!(
                lost = n,
                "EVENTS LOST: {why}; event streams will not show them"
            );
        }
    }

    /// Commits `batch` and the `pending` events in one transaction, answers each write's
    /// future, and publishes the committed events (which leave `pending`; on failure they
    /// stay).
    fn commit_and_answer(&self, batch: Vec<Write>, pending: &mut VecDeque<Event>) {
        #[cfg(test)]
        {
            *self
                .last_committer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                std::thread::current().name().map(str::to_owned);
        }
        let fsync = batch.iter().any(|op| op.fsync);
        // Number and encode the events; one that cannot be encoded is lost (and logged).
        let mut seq = self.last_seq.load(Relaxed);
        let mut encoded = Vec::with_capacity(pending.len());
        let mut committed = Vec::with_capacity(pending.len());
        let mut bad = Vec::new();
        for (i, ev) in pending.iter().enumerate() {
            match events::encode(seq + 1, ev) {
                Ok((json, c)) => {
                    seq += 1;
                    encoded.push((seq, json));
                    committed.push(Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(sandbox = %ev.id, lifecycle = %ev.lifecycle, error = %e, "encode an event for the ring");
                    bad.push(i);
                }
            }
        }
        for i in bad.iter().rev() {
            pending.remove(*i);
        }
        self.lose(bad.len(), "events that could not be encoded");
        let r = self.commit(&batch, &encoded, fsync);
        if r.is_ok() {
            self.counters.commits.fetch_add(1, Relaxed);
            if !committed.is_empty() {
                pending.clear();
                self.counters
                    .events_committed
                    .fetch_add(committed.len() as u64, Relaxed);
                self.last_seq.store(seq, Relaxed);
                for c in committed {
                    // No subscriber: fine.
                    let _ = self.live.send(c);
                }
            }
        } else if !pending.is_empty() {
            tracing::warn!(
                events = pending.len(),
                "events not committed; retrying with the next commit"
            );
        }
        for op in batch {
            let res = r
                .as_ref()
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", op.what));
            if let Err(e) = &res {
                self.counters.write_failures.fetch_add(1, Relaxed);
                // The key is the lifecycle's cgroup name, `<id>@<lifecycle>`.
                let (sandbox, lifecycle) = parse_cgroup_name(&op.key)
                    .map(|(id, lc)| (id.to_owned(), lc.to_string()))
                    .unwrap_or_else(|| (op.key.clone(), String::new()));
                tracing::error!(%sandbox, %lifecycle, error = %e, "STATE WRITE FAILED: a crash now would lose this sandbox's latest state");
            }
            // The caller may have stopped waiting: fine.
            let _ = op.done.send(res);
        }
    }

    /// One transaction with every write of `batch`, in order, and the `events` appended to
    /// the ring, then an fsync if asked.
    fn commit(
        &self,
        batch: &[Write],
        events: &[(u64, Vec<u8>)],
        fsync: bool,
    ) -> Result<(), String> {
        let open = self.current()?;
        // redb's own error type, matched by variant (`PreviousIo`) in `check`.
        #[allow(clippy::result_large_err)]
        let write = || -> Result<(), redb::Error> {
            // `Immediate` durability (the default): the commit writes its header, so it
            // survives a crash of the daemon (the backend leaves the fsync out).
            let tx = open.db.begin_write()?;
            {
                let mut t = tx.open_table(SANDBOXES)?;
                for op in batch.iter().filter(|op| !op.key.is_empty()) {
                    match &op.value {
                        Some(v) => t.insert(op.key.as_str(), v.as_slice()).map(drop),
                        None => t.remove(op.key.as_str()).map(drop),
                    }?;
                }
            }
            events::append(&tx, events, self.retention)?;
            tx.commit()?;
            Ok(())
        };
        let r = write();
        self.check(&open, &r);
        r.map_err(|e| e.to_string())?;
        if fsync {
            open.file
                .sync_all()
                .map_err(|e| format!("fsync {}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_supervisor::{SandboxSpec, State};

    fn record(id: &str, state: State) -> Record {
        let spec = SandboxSpec::new(
            SandboxId::new(id).unwrap(),
            "/bin/true",
            Vec::<String>::new(),
        );
        let lifecycle = LifecycleId::fresh();
        Record {
            cgroup: cgroup_name(id, lifecycle),
            spec,
            lifecycle,
            state,
            paused: false,
            main_pid: None,
            main_start_time: None,
            stop_reason: None,
            created_at_ms: 0,
            jail: None,
            deadline_at_ms: None,
            restart_count: 0,
            restart_since_reset: 0,
            restart_pending: None,
            network: None,
        }
    }

    /// Concurrent writers share commits, every awaited write is readable, the last write of
    /// a key wins, and what was awaited (durable or not) is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_group_commit_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let counters = Arc::new(StoreCounters::default());
        let store = Arc::new(Store::open(&path, counters.clone(), DEFAULT_RETENTION).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rec = record(&format!("s{i}"), State::Creating);
                store.put(&rec).await.unwrap();
                rec.state = State::Running;
                store.put(&rec).await.unwrap();
                if i % 2 == 0 {
                    rec.state = State::Stopped;
                    store.put(&rec).await.unwrap();
                    store.delete(&rec.spec.id, rec.lifecycle).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 600 writes; concurrent ones share transactions.
        let commits = counters.commits.load(Relaxed);
        assert!(commits < 600, "{commits} commits for 600 writes");
        let rows: Vec<Record> = store
            .all()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 100);
        assert!(rows.iter().all(|r| r.state == State::Running));
        store.flush().await.unwrap();
        drop(Arc::into_inner(store).expect("the only reference"));
        let store = Store::open(&path, Arc::default(), DEFAULT_RETENTION).unwrap();
        assert_eq!(store.all().unwrap().len(), 100);
        assert_eq!(counters.write_failures.load(Relaxed), 0);
    }

    fn event(id: &str) -> Event {
        Event {
            id: SandboxId::new(id).unwrap(),
            lifecycle: LifecycleId::fresh(),
            at_ms: 1,
            kind: paddock_supervisor::EventKind::Paused,
        }
    }

    fn seqs(page: &EventPage) -> Vec<u64> {
        page.events.iter().map(|c| c.seq).collect()
    }

    /// Events are numbered from 1 in the order they were pushed, published only once
    /// committed, and the ring keeps the newest `retention` (the older ones dropped in the
    /// commits that add new ones); a reopened store continues after the highest seq, also
    /// with a smaller retention (trimmed at its first commit).
    #[tokio::test]
    async fn event_ring_numbers_trims_and_continues_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let counters = Arc::new(StoreCounters::default());
        {
            let store = Store::open_in_boot(&path, None, counters.clone(), 5).unwrap();
            assert_eq!(store.last_seq(), 0);
            assert_eq!(store.events_after(0, 100).unwrap().oldest, None);
            let mut rx = store.subscribe();
            for i in 0..12 {
                store.push_event(&event(&format!("e{i}")));
            }
            store.flush().await.unwrap();
            assert_eq!(store.last_seq(), 12);
            for i in 0..12u64 {
                let c = rx.try_recv().expect("every committed event is published");
                assert_eq!(c.seq, i + 1);
                assert_eq!(c.id.as_str(), format!("e{i}"));
                assert_eq!(c.kind, "paused");
                let wire: SequencedEvent = serde_json::from_str(&c.json).unwrap();
                assert_eq!(wire.seq, c.seq);
            }
            let page = store.events_after(0, 100).unwrap();
            assert_eq!(seqs(&page), vec![8, 9, 10, 11, 12]);
            assert_eq!((page.oldest, page.last), (Some(8), 12));
            // Paging and a cursor inside the ring.
            assert_eq!(seqs(&store.events_after(9, 2).unwrap()), vec![10, 11]);
            assert!(store.events_after(12, 100).unwrap().events.is_empty());
        }
        // Reopened (as after a crash: nothing is read from memory) with a smaller ring.
        let store = Store::open_in_boot(&path, None, counters.clone(), 3).unwrap();
        assert_eq!(store.last_seq(), 12);
        store.push_event(&event("after"));
        store.flush().await.unwrap();
        let page = store.events_after(0, 100).unwrap();
        assert_eq!(seqs(&page), vec![11, 12, 13]);
        assert_eq!(page.events[2].id.as_str(), "after");
        assert_eq!(counters.events_committed.load(Relaxed), 13);
        assert_eq!(counters.events_lost.load(Relaxed), 0);
    }

    /// Events share the group commits of records: pushing many events while records are
    /// written adds no commit per event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_share_commits_with_records() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(StoreCounters::default());
        let store =
            Store::open_in_boot(&dir.path().join("s.redb"), None, counters.clone(), 100).unwrap();
        let before = counters.commits.load(Relaxed);
        for i in 0..500 {
            store.push_event(&event(&format!("x{i}")));
        }
        store.put(&record("r", State::Running)).await.unwrap();
        store.flush().await.unwrap();
        let commits = counters.commits.load(Relaxed) - before;
        assert!(
            commits < 50,
            "{commits} commits for 500 events and 2 writes"
        );
        let page = store.events_after(0, 1000).unwrap();
        assert_eq!(seqs(&page), (401..=500).collect::<Vec<_>>());
    }

    /// A write queued after the store was closed fails with an error that says so.
    #[tokio::test]
    async fn writes_after_close_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut store = Store::open(&path, Arc::default(), DEFAULT_RETENTION).unwrap();
        let rec = record("ok", State::Running);
        store.put(&rec).await.unwrap();
        // What dropping the store does first: close the writer's queue.
        drop(store.queue.take());
        store.writer.take().unwrap().join().unwrap();
        let e = store.put(&rec).await.unwrap_err();
        assert_eq!(e.kind(), HookErrorKind::Closed, "{e}");
        assert!(e.to_string().contains("closed"), "{e}");
    }

    /// A database of an earlier boot that cannot be opened is moved aside and a fresh one
    /// started; the same file in the boot that wrote it is an error that changes nothing;
    /// a readable one of an earlier boot keeps its records.
    #[tokio::test]
    async fn unreadable_database_is_moved_aside_only_after_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let marker = sibling(&path, "boot-id");
        {
            let store =
                Store::open_in_boot(&path, Some("boot-a"), Arc::default(), DEFAULT_RETENTION)
                    .unwrap();
            store.put(&record("kept", State::Running)).await.unwrap();
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "boot-a");
        // Readable, from an earlier boot: opened as it is, and the marker updated.
        {
            let store =
                Store::open_in_boot(&path, Some("boot-b"), Arc::default(), DEFAULT_RETENTION)
                    .unwrap();
            let rows = store.all().unwrap();
            assert_eq!(rows.len(), 1, "{}", rows.len());
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "boot-b");
        // Torn (as a power loss can leave it): garbage over the header.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, vec![0xa5u8; len as usize]).unwrap();
        let e = Store::open_in_boot(&path, Some("boot-b"), Arc::default(), DEFAULT_RETENTION)
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("written in this boot"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "the file was changed"
        );
        // The same file after a reboot: moved aside, fresh database.
        let store =
            Store::open_in_boot(&path, Some("boot-c"), Arc::default(), DEFAULT_RETENTION).unwrap();
        assert!(store.all().unwrap().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("s.redb.unreadable-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::metadata(dir.path().join(&aside[0])).unwrap().len(),
            len
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "boot-c");
    }

    /// A write nobody awaits (its future dropped unpolled) is committed; so is one whose
    /// future is awaited; and both are committed by the writer thread, never in the
    /// future's `poll` on the caller's (tokio worker's) thread.
    #[tokio::test]
    async fn writes_are_committed_by_the_writer_thread_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let counters = Arc::new(StoreCounters::default());
        let store = Store::open_in_boot(&path, None, counters.clone(), DEFAULT_RETENTION).unwrap();
        drop(store.put(&record("dropped", State::Running)));
        // A flush is queued after it, so it resolves once the dropped write is committed.
        store.flush().await.unwrap();
        assert_eq!(store.all().unwrap().len(), 1);
        let committer = || store.shared.last_committer.lock().unwrap().clone();
        assert_eq!(committer().as_deref(), Some("paddock-store"));
        *store.shared.last_committer.lock().unwrap() = None;
        store.put(&record("awaited", State::Running)).await.unwrap();
        assert_eq!(store.all().unwrap().len(), 2);
        assert_eq!(committer().as_deref(), Some("paddock-store"));
        assert_eq!(counters.write_failures.load(Relaxed), 0);
    }

    /// A scan of the records (the reconciliation's) holds no lock the writer needs: a
    /// write made and awaited in the middle of a scan commits, and the scan sees the
    /// snapshot it started with.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_commit_while_a_scan_is_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open_in_boot(
                &dir.path().join("s.redb"),
                None,
                Arc::default(),
                DEFAULT_RETENTION,
            )
            .unwrap(),
        );
        for id in ["a", "b", "c"] {
            store.put(&record(id, State::Running)).await.unwrap();
        }
        let (s, rt) = (store.clone(), tokio::runtime::Handle::current());
        let rows = tokio::task::spawn_blocking(move || {
            let wrote = std::sync::atomic::AtomicBool::new(false);
            s.records_where(|_| {
                if !wrote.swap(true, Relaxed) {
                    let put = s.put(&record("d", State::Running));
                    let r = rt.block_on(tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        put,
                    ));
                    assert!(
                        matches!(r, Ok(Ok(()))),
                        "a write during a scan did not commit within 10 s: {r:?}"
                    );
                }
                true
            })
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(rows.len(), 3, "the scan saw a write made after it began");
        assert_eq!(store.all().unwrap().len(), 4);
    }

    /// `records_where` decodes and returns only the rows whose key the predicate accepts
    /// (an undecodable row it skips is not reported).
    #[tokio::test]
    async fn records_where_filters_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_boot(
            &dir.path().join("s.redb"),
            None,
            Arc::default(),
            DEFAULT_RETENTION,
        )
        .unwrap();
        let (a, b) = (record("a", State::Running), record("b", State::Running));
        store.put(&a).await.unwrap();
        store.put(&b).await.unwrap();
        // A row that does not decode, under a key nobody wants.
        store
            .enqueue(
                "zz@0000000000000001".into(),
                Some(b"not json".to_vec()),
                false,
                "junk".into(),
            )
            .await
            .unwrap();
        let want = a.cgroup.clone();
        let rows = store.records_where(|k| k == want).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].as_ref().unwrap().spec.id.as_str(), "a");
        let all = store.all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().filter(|r| r.is_err()).count(), 1);
    }
}
