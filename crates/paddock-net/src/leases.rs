//! The lease file: one machine-wide record of which sandbox holds which subnet, shared by
//! every paddock process (a daemon and any number of foreground `paddock run`s), so that
//! they hand out addresses from the same pool without ever leasing one subnet twice.
//!
//! The file (default [`DEFAULT_LEASE_FILE`], on the `/run` tmpfs: leases end with the
//! boot, as the namespaces they address do) is JSON: a list of `{holder, lease}`. Every
//! change takes an exclusive `flock` on a lock file beside it (`<file>.lock`, never
//! renamed), reads the file, changes it, writes a temporary file and renames it over the
//! old one, so a reader never sees a half-written file and a crash at any point leaves
//! either the old or the new list.
//!
//! The holder is the instance's [`Tag`] (a daemon's `daemon:<id>`, a `paddock run`'s
//! `pid:<pid>:<start time>:<pid ns>`). Before allocating, the caller's `is_dead` is asked
//! about every other holder: the leases of one that is provably dead (a `pid:` tag whose
//! process is gone) are dropped and returned, so their objects can be reclaimed; a live
//! holder's (or a daemon's, which may come back) are never touched by anyone but it.
//!
//! All calls block on the lock (held for one read and one write of a small file): call
//! them from a blocking thread.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::owner::Tag;
use crate::pool::{Lease, LeasePool, PoolError};

/// Where paddock keeps its lease file unless told otherwise.
pub const DEFAULT_LEASE_FILE: &str = "/run/paddock/net/leases.json";

/// The subnet prefix of file-backed pools: one /30 per sandbox (network, host side,
/// sandbox side, broadcast), so every process sharing the file splits the address space
/// the same way.
pub const LEASE_PREFIX: u8 = 30;

/// One lease and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The instance holding it (its tag).
    pub holder: String,
    /// The lease (its `key` is the sandbox's key within the holder).
    pub lease: Lease,
    /// The host ports it publishes (`8080/tcp`): no two sandboxes publish the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    leases: Vec<Held>,
}

/// The machine-wide lease file and the pool this process allocates from.
#[derive(Debug, Clone)]
pub struct LeaseFile {
    path: PathBuf,
    pool: Ipv4Net,
}

impl LeaseFile {
    /// The lease file at `path`, allocating /30s of `pool` (checked: it must hold at least
    /// one). Leases of other pools in the same file are kept and never overlapped.
    pub fn new(path: impl Into<PathBuf>, pool: Ipv4Net) -> Result<Self> {
        LeasePool::new(pool, LEASE_PREFIX)?;
        Ok(Self {
            path: path.into(),
            pool: pool.trunc(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool.
    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    /// Runs `f` on the contents under the lock; writes them back if `f` says they changed.
    fn locked<R>(&self, f: impl FnOnce(&mut Contents) -> Result<(R, bool)>) -> Result<R> {
        let object = || self.path.display().to_string();
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::os("create lease directory", dir.display().to_string(), e))?;
        }
        let lock_path = lock_path(&self.path);
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&lock_path)
            .map_err(|e| Error::os("open lease lock", lock_path.display().to_string(), e))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| Error::os("lock lease file", object(), e.into()))?;
        let mut contents = match fs::read(&self.path) {
            Ok(b) if b.is_empty() => Contents::default(),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::os(
                    "read lease file",
                    object(),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{e}; move the file away if it is damaged (its sandboxes' networks are then reclaimed as unleased)"),
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(Error::os("read lease file", object(), e)),
        };
        let (r, changed) = f(&mut contents)?;
        if changed {
            let tmp = self
                .path
                .with_extension(format!("tmp{}", std::process::id()));
            let write = || -> io::Result<()> {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(&serde_json::to_vec(&contents).map_err(io::Error::other)?)?;
                fs::rename(&tmp, &self.path)
            };
            if let Err(e) = write() {
                let _ = fs::remove_file(&tmp);
                return Err(Error::os("write lease file", object(), e));
            }
        }
        // The lock ends with the fd.
        drop(lock);
        Ok(r)
    }

    /// Leases a free /30 of the pool to `key` of `holder`, which will publish the host
    /// ports `published` (`8080/tcp`). First drops the leases of every other holder that
    /// `is_dead` says is provably dead, returning them with the new lease (their
    /// namespaces, links and rules are the caller's to reclaim). The pool being full is
    /// [`Error::Pool`] with [`PoolError::Exhausted`]; a port another lease publishes is
    /// [`Error::PortTaken`]; a key that holds one already gets it back.
    pub fn allocate(
        &self,
        holder: &Tag,
        key: &str,
        published: &[String],
        is_dead: impl Fn(&str) -> bool,
    ) -> Result<(Lease, Vec<Held>)> {
        self.locked(|c| {
            let dead = drop_dead(c, holder, &is_dead);
            let changed = !dead.is_empty();
            if let Some(h) = c
                .leases
                .iter()
                .find(|h| h.holder == holder.as_str() && h.lease.key == key)
            {
                return Ok(((h.lease.clone(), dead), changed));
            }
            for h in &c.leases {
                if let Some(p) = h.published.iter().find(|p| published.contains(p)) {
                    return Err(Error::PortTaken {
                        port: p.clone(),
                        owner: format!("{}+{}", h.holder, h.lease.key),
                    });
                }
            }
            let mut pool = LeasePool::new(self.pool, LEASE_PREFIX)?;
            for h in &c.leases {
                // Leases of other pools (other processes configured differently) that
                // fall in this one are held here too; the rest cannot overlap a /30 of it.
                if self.pool.contains(&h.lease.subnet) {
                    let mut l = h.lease.clone();
                    l.key = format!("{}+{}", h.holder, l.key);
                    pool.restore(l)?;
                }
            }
            let mut lease = pool.allocate(&format!("{holder}+{key}"))?;
            lease.key = key.to_owned();
            c.leases.push(Held {
                holder: holder.to_string(),
                lease: lease.clone(),
                published: published.to_vec(),
            });
            Ok(((lease, dead), true))
        })
    }

    /// Records `lease` (publishing `published`) as held by `holder` again (an adopted
    /// sandbox whose lease the file lost). Refused with [`PoolError::Conflict`] if its
    /// subnet is someone else's.
    pub fn restore(&self, holder: &Tag, lease: &Lease, published: &[String]) -> Result<()> {
        self.locked(|c| {
            for h in &c.leases {
                if h.lease.subnet == lease.subnet {
                    if h.holder == holder.as_str() && h.lease.key == lease.key {
                        return Ok(((), false));
                    }
                    return Err(PoolError::Conflict {
                        key: lease.key.clone(),
                        subnet: lease.subnet,
                        reason: "the subnet is leased to another sandbox",
                    }
                    .into());
                }
            }
            c.leases.push(Held {
                holder: holder.to_string(),
                lease: lease.clone(),
                published: published.to_vec(),
            });
            Ok(((), true))
        })
    }

    /// Releases `key`'s lease of `holder`; returns it (`None`: it held none).
    pub fn release(&self, holder: &Tag, key: &str) -> Result<Option<Lease>> {
        self.locked(|c| {
            let i = c
                .leases
                .iter()
                .position(|h| h.holder == holder.as_str() && h.lease.key == key);
            Ok(match i {
                Some(i) => (Some(c.leases.remove(i).lease), true),
                None => (None, false),
            })
        })
    }

    /// Releases every lease of `holder` whose key `is_live` rejects (asked under the
    /// lock, so a lease allocated after its key became live is never released), and
    /// every lease of another holder that `is_dead` says is provably dead; returns them.
    pub fn reclaim(
        &self,
        holder: &Tag,
        is_live: impl Fn(&str) -> bool,
        is_dead: impl Fn(&str) -> bool,
    ) -> Result<Vec<Held>> {
        self.locked(|c| {
            let mut gone = drop_dead(c, holder, &is_dead);
            let before = c.leases.len();
            c.leases.retain(|h| {
                let stale = h.holder == holder.as_str() && !is_live(&h.lease.key);
                if stale {
                    gone.push(h.clone());
                }
                !stale
            });
            let changed = !gone.is_empty() || c.leases.len() != before;
            Ok((gone, changed))
        })
    }

    /// Every lease in the file (none, and nothing created, when there is no file).
    pub fn list(&self) -> Result<Vec<Held>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        self.locked(|c| Ok((c.leases.clone(), false)))
    }
}

/// Drops the leases of holders other than `me` that `is_dead` says are dead.
fn drop_dead(c: &mut Contents, me: &Tag, is_dead: &impl Fn(&str) -> bool) -> Vec<Held> {
    let mut dead = Vec::new();
    let mut verdicts: Vec<(String, bool)> = Vec::new();
    c.leases.retain(|h| {
        if h.holder == me.as_str() {
            return true;
        }
        let d = match verdicts.iter().find(|(t, _)| *t == h.holder) {
            Some((_, d)) => *d,
            None => {
                let d = is_dead(&h.holder);
                verdicts.push((h.holder.clone(), d));
                d
            }
        };
        if d {
            dead.push(h.clone());
        }
        !d
    });
    dead
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn file(name: &str, pool: &str) -> (LeaseFile, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("paddock-leases-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let f = LeaseFile::new(dir.join("leases.json"), pool.parse().unwrap()).unwrap();
        (f, dir)
    }

    #[test]
    fn two_holders_share_the_pool_and_dead_ones_are_dropped() {
        let (f, dir) = file("share", "198.18.0.0/28");
        let (a, b) = (
            Tag::new("daemon:a").unwrap(),
            Tag::new("pid:1:2:3").unwrap(),
        );
        let alive = |_: &str| false;
        let (la, _) = f.allocate(&a, "k1", &[], alive).unwrap();
        let (lb, _) = f.allocate(&b, "k1", &[], alive).unwrap();
        assert_ne!(la.subnet, lb.subnet);
        // Same key again: the same lease.
        assert_eq!(f.allocate(&a, "k1", &[], alive).unwrap().0, la);
        f.allocate(&a, "k2", &[], alive).unwrap();
        f.allocate(&a, "k3", &[], alive).unwrap();
        let e = f.allocate(&a, "k4", &[], alive).unwrap_err();
        assert!(
            matches!(e, Error::Pool(PoolError::Exhausted { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("exhausted"), "{e}");
        // b is dead: its lease goes, and is handed out again.
        let (l4, dead) = f.allocate(&a, "k4", &[], |h| h == b.as_str()).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].lease, lb);
        assert_eq!(l4.subnet, lb.subnet);
        // Release and reclaim.
        assert_eq!(f.release(&a, "k4").unwrap(), Some(l4));
        assert_eq!(f.release(&a, "k4").unwrap(), None);
        let live: HashSet<String> = ["k1".to_string()].into();
        let gone = f.reclaim(&a, |k| live.contains(k), alive).unwrap();
        assert_eq!(gone.len(), 2);
        assert_eq!(f.list().unwrap().len(), 1);
        // Restore is idempotent and refuses someone else's subnet.
        f.restore(&a, &la, &[]).unwrap();
        // A published port is one sandbox's.
        let p = vec!["8080/tcp".to_string()];
        f.allocate(&a, "web", &p, alive).unwrap();
        let e = f.allocate(&b, "web2", &p, alive).unwrap_err();
        assert!(matches!(e, Error::PortTaken { .. }), "{e:?}");
        f.release(&a, "web").unwrap();
        let mut other = la.clone();
        other.key = "x".into();
        assert!(f.restore(&b, &other, &[]).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_processes_never_share_a_subnet() {
        let (f, dir) = file("threads", "198.18.4.0/24");
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let tag = Tag::new(format!("pid:{t}:1:1")).unwrap();
                    (0..8)
                        .map(|k| {
                            f.allocate(&tag, &k.to_string(), &[], |_| false)
                                .unwrap()
                                .0
                                .subnet
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<_> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 64);
        assert_eq!(f.list().unwrap().len(), 64);
        fs::remove_dir_all(dir).unwrap();
    }
}
