//! The durable store of the daemon: one `redb` database in the state directory, one row per
//! lifecycle (`<id>@<lifecycle>` → the supervisor's [`Record`] as JSON).
//!
//! `redb` is an embedded, pure-Rust, ACID key-value store: every write below is its own
//! transaction; the ones that matter for recovery are committed with
//! `Durability::Immediate` (fsync before `commit` returns; see [`Store::put`]), so a
//! record written by [`Store::put`] survives a SIGKILL or power loss the moment the call
//! returns. It needs no C toolchain (unlike SQLite through `rusqlite`) and no server.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use paddock_supervisor::{LifecycleId, Record, SandboxId, State, cgroup_name};
use redb::{Database, ReadableTable, TableDefinition};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

/// The sandbox records of one state directory.
///
/// After an I/O error (a full or failing disk) redb refuses further use of the open
/// database (`PreviousIo`); the store then reopens it once the next write comes, so the
/// daemon recovers by itself when space returns.
#[derive(Debug)]
pub struct Store {
    db: Mutex<Option<Database>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("open the state database {}: {e}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(SANDBOXES)?;
        tx.commit()?;
        Ok(Store {
            db: Mutex::new(Some(db)),
            path: path.to_owned(),
        })
    }

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

    /// Writes (inserts or replaces) a record. Records of `creating` and `running`
    /// lifecycles are committed durably (fsync) before this returns: they are what a
    /// restarted daemon needs to find and adopt a sandbox (the first one is written before
    /// the cgroup exists). Later states are committed without their own fsync (they become
    /// durable with the next durable commit): losing one in a crash only makes the next
    /// daemon finish a stop that was already finished, which it does (the cgroup is gone).
    pub fn put(&self, rec: &Record) -> Result<(), String> {
        let key = cgroup_name(rec.spec.id.as_str(), rec.lifecycle);
        let val = serde_json::to_vec(rec).map_err(|e| format!("encode record {key}: {e}"))?;
        let durable = matches!(rec.state, State::Creating | State::Running);
        self.write(&format!("write record {key}"), durable, |t| {
            t.insert(key.as_str(), val.as_slice()).map(drop)
        })
    }

    /// Deletes the record of one lifecycle (absent is fine).
    pub fn delete(&self, id: &SandboxId, lc: LifecycleId) -> Result<(), String> {
        let key = cgroup_name(id.as_str(), lc);
        // Not fsynced on its own: a record that comes back after a crash is of a finished
        // lifecycle, which the next daemon recognises as gone and drops.
        self.write(&format!("delete record {key}"), false, |t| {
            t.remove(key.as_str()).map(drop)
        })
    }

    /// One write transaction, committed durably before returning.
    fn write(
        &self,
        what: &str,
        durable: bool,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("{what}: {e}");
        self.with_db(|db| {
            let mut tx = db.begin_write().map_err(|e| err(&e))?;
            if !durable {
                tx.set_durability(redb::Durability::Eventual);
            }
            {
                let mut t = tx.open_table(SANDBOXES).map_err(|e| err(&e))?;
                f(&mut t).map_err(|e| err(&e))?;
            }
            tx.commit().map_err(|e| err(&e))
        })
    }

    /// Every record. Rows that cannot be decoded are returned as errors with their key.
    pub fn all(&self) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        let rows = self.with_db(|db| {
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
