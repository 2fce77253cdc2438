//! The durable store of the daemon: one `redb` database in the state directory, one row per
//! lifecycle (`<id>@<lifecycle>` → the supervisor's [`Record`] as JSON).
//!
//! `redb` is an embedded, pure-Rust, ACID key-value store: every write below is its own
//! transaction committed with `Durability::Immediate` (fsync before `commit` returns), so a
//! record written by [`Store::put`] survives a SIGKILL or power loss the moment the call
//! returns. It needs no C toolchain (unlike SQLite through `rusqlite`) and no server.

use std::path::Path;

use paddock_supervisor::{LifecycleId, Record, SandboxId, cgroup_name};
use redb::{Database, ReadableTable, TableDefinition};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

/// The sandbox records of one state directory.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("open the state database {}: {e}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(SANDBOXES)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Writes (inserts or replaces) a record, durably.
    pub fn put(&self, rec: &Record) -> Result<(), String> {
        let key = cgroup_name(rec.spec.id.as_str(), rec.lifecycle);
        let val = serde_json::to_vec(rec).map_err(|e| format!("encode record {key}: {e}"))?;
        self.write(&format!("write record {key}"), |t| {
            t.insert(key.as_str(), val.as_slice()).map(drop)
        })
    }

    /// Deletes the record of one lifecycle (absent is fine).
    pub fn delete(&self, id: &SandboxId, lc: LifecycleId) -> Result<(), String> {
        let key = cgroup_name(id.as_str(), lc);
        self.write(&format!("delete record {key}"), |t| {
            t.remove(key.as_str()).map(drop)
        })
    }

    /// One write transaction, committed durably before returning.
    fn write(
        &self,
        what: &str,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("{what}: {e}");
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(SANDBOXES).map_err(|e| err(&e))?;
            f(&mut t).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Every record. Rows that cannot be decoded are returned as errors with their key.
    pub fn all(&self) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        let tx = self.db.begin_read()?;
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
    }
}
