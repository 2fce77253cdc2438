//! The durable store of the daemon: one `redb` database in the state directory, one row per
//! lifecycle (`<id>@<lifecycle>` → the supervisor's [`Record`] as JSON).
//!
//! `redb` is an embedded, pure-Rust, ACID key-value store. It needs no C toolchain (unlike
//! SQLite through `rusqlite`) and no server.
//!
//! **Group commit.** Writes are queued to one writer thread, which commits everything
//! queued since its last commit in one transaction. The records recovery needs (of
//! `running` and `stopping` lifecycles, see [`Store::put`]) make their transaction durable
//! (`Durability::Immediate`: fsync before the commit returns); the others are committed
//! with `Durability::None` (no fsync; durable with the next durable commit). So 1,000
//! concurrent starts share a few fsyncs instead of queueing behind 2,000 of them, and a
//! caller waits only for the commit that holds its own record. The writes of one caller
//! are committed in the order it queued them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use paddock_supervisor::{LifecycleId, Persisting, Record, SandboxId, State, cgroup_name};
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

/// At most this many non-durable commits in a row; the next is durable (redb frees pages
/// only in durable commits, so this bounds the file's growth).
const MAX_NONDURABLE_RUN: u32 = 256;

/// At most this many writes in one transaction.
const MAX_BATCH: usize = 1024;

/// The sandbox records of one state directory.
///
/// After an I/O error (a full or failing disk) redb refuses further use of the open
/// database (`PreviousIo`); the store then reopens it once the next write comes, so the
/// daemon recovers by itself when space returns.
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    db: Mutex<Option<Database>>,
    path: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    counters: Arc<StoreCounters>,
}

/// What the store counts (the daemon exports them as metrics).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Transactions committed (each holds one or more writes).
    pub commits: AtomicU64,
    /// Writes that failed (each is also logged).
    pub write_failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Op>,
    closed: bool,
}

/// One queued write.
struct Op {
    key: String,
    /// The row to write; `None` deletes it.
    value: Option<Vec<u8>>,
    durable: bool,
    /// What the write is, for errors ("write record <key> (state running)").
    what: String,
    done: oneshot::Sender<Result<(), String>>,
}

impl Store {
    /// Opens (creating if needed) the database file at `path` and starts its writer
    /// thread, which counts into `counters`.
    pub fn open(path: &Path, counters: Arc<StoreCounters>) -> anyhow::Result<Store> {
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("open the state database {}: {e}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(SANDBOXES)?;
        tx.commit()?;
        let shared = Arc::new(Shared {
            db: Mutex::new(Some(db)),
            path: path.to_owned(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters,
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("paddock-store".into())
            .spawn(move || s.run())
            .map_err(|e| anyhow::anyhow!("start the state database writer thread: {e}"))?;
        Ok(Store {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues a write (insert or replace) of a record; the returned future resolves when
    /// its transaction has committed. Records of `running` and `stopping` lifecycles are
    /// committed durably (fsync): the first is what a restarted daemon needs to adopt a
    /// sandbox, and a start succeeds only once it is (the supervisor kills a sandbox whose
    /// record failed); the second makes a restarted daemon finish an interrupted stop (a
    /// graceful stop waits for it, a kill does not). The others are committed without their own fsync.
    /// Losing the `creating` record in a
    /// crash is safe: the start never returned, and the next daemon reclaims the cgroup by
    /// its owner tag (which is set before anything runs in it). Losing a later state only
    /// makes the next daemon finish a stop that was already finished, which it does (the
    /// cgroup is gone). Dropping the future does not cancel the write.
    pub fn put(&self, rec: &Record) -> Persisting {
        let key = cgroup_name(rec.spec.id.as_str(), rec.lifecycle);
        let value = match serde_json::to_vec(rec) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("encode record {key}: {e}");
                return Box::pin(std::future::ready(Err(msg)));
            }
        };
        let durable = matches!(rec.state, State::Running | State::Stopping);
        let what = format!("write record {key} (state {})", rec.state);
        self.enqueue(key, Some(value), durable, what)
    }

    /// Queues the deletion of one lifecycle's record (absent is fine). Not fsynced on its
    /// own: a record that comes back after a crash is of a finished lifecycle, which the
    /// next daemon recognises as gone and drops.
    pub fn delete(&self, id: &SandboxId, lc: LifecycleId) -> Persisting {
        let key = cgroup_name(id.as_str(), lc);
        let what = format!("delete record {key}");
        self.enqueue(key, None, false, what)
    }

    /// Waits until every write queued before the call is durable.
    pub async fn flush(&self) -> Result<(), String> {
        self.enqueue(String::new(), None, true, "flush".into())
            .await
    }

    fn enqueue(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        durable: bool,
        what: String,
    ) -> Persisting {
        let (done, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed {
                return Box::pin(std::future::ready(Err(format!(
                    "{what}: the state database is closed"
                ))));
            }
            q.ops.push_back(Op {
                key,
                value,
                durable,
                what,
                done,
            });
        }
        self.shared.wake.notify_one();
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the state database writer stopped".into()))
        })
    }

    /// Every record. Rows that cannot be decoded are returned as errors with their key.
    /// Sees every write whose future has resolved.
    pub fn all(&self) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        let rows = self.shared.with_db(|db| {
            let read = || -> Result<_, Box<dyn std::error::Error>> {
                let tx = db.begin_read()?;
                let t = tx.open_table(SANDBOXES)?;
                let mut out = Vec::new();
                for row in t.iter()? {
                    let (k, v) = row?;
                    out.push(
                        serde_json::from_slice(v.value())
                            .map_err(|e| (k.value().to_owned(), e.to_string())),
                    );
                }
                Ok(out)
            };
            read().map_err(|e| e.to_string())
        });
        rows.map_err(|e| anyhow::anyhow!("read the state database: {e}"))
    }
}

impl Drop for Store {
    /// Commits what is queued, then stops the writer thread.
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    /// Runs `f` on the open database, reopening it first when a previous I/O error left
    /// it unusable (or a reopen failed before).
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, String>) -> Result<T, String> {
        let mut g = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let db = Database::create(&self.path)
                .map_err(|e| format!("reopen the state database {}: {e}", self.path.display()))?;
            tracing::warn!(path = %self.path.display(), "reopened the state database after an I/O error");
            *g = Some(db);
        }
        let r = f(g.as_ref().expect("just opened"));
        if let Err(e) = &r
            && e.contains("Previous I/O error")
        {
            // Drop it now (releasing its file lock); the next call reopens.
            *g = None;
        }
        r
    }

    /// The writer thread: commits batches until the store is dropped and the queue empty.
    fn run(&self) {
        let mut nondurable_run = 0u32;
        loop {
            let batch: Vec<Op> = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.ops.is_empty() && !q.closed {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.ops.is_empty() {
                    return;
                }
                let n = q.ops.len().min(MAX_BATCH);
                q.ops.drain(..n).collect()
            };
            let durable = batch.iter().any(|op| op.durable) || nondurable_run >= MAX_NONDURABLE_RUN;
            let r = self.commit(&batch, durable);
            if r.is_ok() {
                self.counters.commits.fetch_add(1, Relaxed);
            }
            match &r {
                Ok(()) if durable => nondurable_run = 0,
                Ok(()) => nondurable_run += 1,
                Err(_) => {}
            }
            for op in batch {
                let res = r
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", op.what));
                if let Err(e) = &res {
                    self.counters.write_failures.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, durable = op.durable, "DURABLE STATE WRITE FAILED: a crash now would lose this sandbox's latest state");
                }
                // The caller may have stopped waiting: fine.
                let _ = op.done.send(res);
            }
        }
    }

    /// One transaction with every write of `batch`, in order.
    fn commit(&self, batch: &[Op], durable: bool) -> Result<(), String> {
        self.with_db(|db| {
            let mut tx = db.begin_write().map_err(|e| e.to_string())?;
            // `Durability::None`: no fsync (redb's `Eventual` fsyncs on Linux too).
            if !durable {
                tx.set_durability(redb::Durability::None);
            }
            {
                let mut t = tx.open_table(SANDBOXES).map_err(|e| e.to_string())?;
                for op in batch.iter().filter(|op| !op.key.is_empty()) {
                    match &op.value {
                        Some(v) => t.insert(op.key.as_str(), v.as_slice()).map(drop),
                        None => t.remove(op.key.as_str()).map(drop),
                    }
                    .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_supervisor::SandboxSpec;

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
        }
    }

    /// Concurrent writers share commits, every awaited write is readable, the last write of
    /// a key wins, and what was awaited (durable or not) is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_group_commit_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let counters = Arc::new(StoreCounters::default());
        let store = Arc::new(Store::open(&path, counters.clone()).unwrap());
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
        let store = Store::open(&path, Arc::default()).unwrap();
        assert_eq!(store.all().unwrap().len(), 100);
        assert_eq!(counters.write_failures.load(Relaxed), 0);
    }

    /// A write queued after the store was closed fails with an error that says so.
    #[tokio::test]
    async fn writes_after_close_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, Arc::default()).unwrap();
        let rec = record("ok", State::Running);
        store.put(&rec).await.unwrap();
        // Dropping the store closes it: later writes fail with a clear error.
        let shared = store.shared.clone();
        drop(store);
        let closed = Store {
            shared,
            writer: Mutex::new(None),
        };
        let e = closed.put(&rec).await.unwrap_err();
        assert!(e.contains("closed"), "{e}");
    }
}
