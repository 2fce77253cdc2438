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
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(SANDBOXES)?;
                t.insert(key.as_str(), val.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| format!("write record {key}: {e}"))
    }

    /// Deletes the record of one lifecycle (absent is fine).
    pub fn delete(&self, id: &SandboxId, lc: LifecycleId) -> Result<(), String> {
        let key = cgroup_name(id.as_str(), lc);
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(SANDBOXES)?;
                t.remove(key.as_str())?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| format!("delete record {key}: {e}"))
    }

    /// Every record. Rows that cannot be decoded are returned as errors with their key.
    pub fn all(&self) -> anyhow::Result<Vec<Result<Record, (String, String)>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SANDBOXES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| (k.value().to_owned(), e.to_string())));
        }
        Ok(out)
    }

    /// Deletes a row by its raw key (for rows that cannot be decoded).
    pub fn delete_key(&self, key: &str) -> Result<(), String> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(SANDBOXES)?;
                t.remove(key)?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| format!("delete record {key}: {e}"))
    }
}
