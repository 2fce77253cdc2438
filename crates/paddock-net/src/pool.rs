//! The address lease pool: one small subnet of a CIDR per sandbox, never two at once.
//!
//! Pure (no system calls): the caller records each [`Lease`] in its store (it is serde)
//! and rebuilds the pool with [`LeasePool::restore`] after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Why the pool refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every subnet of the pool is leased.
    #[error(
        "the address pool {pool} is exhausted: all {capacity} /{prefix} subnets are leased; stop a sandbox or configure a larger pool"
    )]
    Exhausted {
        /// The pool's CIDR.
        pool: Ipv4Net,
        /// The per-sandbox prefix length.
        prefix: u8,
        /// How many subnets the pool has.
        capacity: u32,
    },
    /// The key already holds a lease (one per sandbox).
    #[error("sandbox {key} already holds the lease {subnet}")]
    AlreadyLeased {
        /// The sandbox key.
        key: String,
        /// Its lease's subnet.
        subnet: Ipv4Net,
    },
    /// A restored lease overlaps one already held, or lies outside the pool.
    #[error("lease {subnet} of {key} cannot be restored: {reason}")]
    Conflict {
        /// The lease's sandbox key.
        key: String,
        /// The lease's subnet.
        subnet: Ipv4Net,
        /// Why.
        reason: &'static str,
    },
    /// The pool's configuration is unusable.
    #[error("invalid address pool {pool} with /{prefix} subnets: {reason}")]
    Invalid {
        /// The pool's CIDR.
        pool: Ipv4Net,
        /// The per-sandbox prefix length.
        prefix: u8,
        /// Why.
        reason: &'static str,
    },
}

/// One sandbox's addresses: a subnet, the host side's address and the sandbox side's
/// (the sandbox's default gateway is `host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The sandbox key holding the lease.
    pub key: String,
    /// The subnet (a /30 or /31 of the pool).
    pub subnet: Ipv4Net,
    /// The host-side address.
    pub host: Ipv4Addr,
    /// The sandbox-side address (`eth0` inside).
    pub sandbox: Ipv4Addr,
}

/// A pool of /30 (network, host, sandbox, broadcast) or /31 (RFC 3021 point-to-point:
/// host, sandbox) subnets of one CIDR. Allocation is next-fit from the last lease (a
/// released subnet is reused last, so a stale peer's packets rarely reach a new
/// sandbox); `allocate` and `release` are O(log n) but for the scan over taken subnets.
#[derive(Debug, Clone)]
pub struct LeasePool {
    pool: Ipv4Net,
    prefix: u8,
    capacity: u32,
    /// Subnet index → lease.
    taken: BTreeMap<u32, Lease>,
    /// Key → subnet index.
    by_key: BTreeMap<String, u32>,
    next: u32,
}

impl LeasePool {
    /// A pool over `pool` handing out `/prefix` subnets; `prefix` is 30 or 31 and not
    /// shorter than the pool's.
    pub fn new(pool: Ipv4Net, prefix: u8) -> Result<Self, PoolError> {
        let invalid = |reason| PoolError::Invalid {
            pool,
            prefix,
            reason,
        };
        if prefix != 30 && prefix != 31 {
            return Err(invalid("the subnet prefix must be 30 or 31"));
        }
        if pool.prefix_len() > prefix {
            return Err(invalid("the pool is smaller than one subnet"));
        }
        let pool = pool.trunc();
        let bits = u32::from(prefix - pool.prefix_len());
        let capacity = if bits >= 32 { u32::MAX } else { 1u32 << bits };
        Ok(Self {
            pool,
            prefix,
            capacity,
            taken: BTreeMap::new(),
            by_key: BTreeMap::new(),
            next: 0,
        })
    }

    /// The pool's CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.pool
    }

    /// How many subnets the pool has.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many are leased.
    pub fn leased(&self) -> usize {
        self.taken.len()
    }

    /// The leases held, in address order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.taken.values()
    }

    /// The lease `key` holds.
    pub fn get(&self, key: &str) -> Option<&Lease> {
        self.by_key.get(key).and_then(|i| self.taken.get(i))
    }

    fn lease_at(&self, index: u32, key: &str) -> Lease {
        let size = 1u32 << (32 - u32::from(self.prefix));
        let base = u32::from(self.pool.network()) + index * size;
        let subnet = Ipv4Net::new(Ipv4Addr::from(base), self.prefix).expect("prefix <= 32");
        let (host, sandbox) = if self.prefix == 31 {
            (base, base + 1)
        } else {
            (base + 1, base + 2)
        };
        Lease {
            key: key.to_owned(),
            subnet,
            host: Ipv4Addr::from(host),
            sandbox: Ipv4Addr::from(sandbox),
        }
    }

    /// Leases a free subnet to `key`. A subnet is never leased twice; a key holds at most
    /// one lease.
    pub fn allocate(&mut self, key: &str) -> Result<Lease, PoolError> {
        if let Some(l) = self.get(key) {
            return Err(PoolError::AlreadyLeased {
                key: key.to_owned(),
                subnet: l.subnet,
            });
        }
        if self.taken.len() as u64 >= u64::from(self.capacity) {
            return Err(PoolError::Exhausted {
                pool: self.pool,
                prefix: self.prefix,
                capacity: self.capacity,
            });
        }
        // Next-fit: the first free index at or after `next`, wrapping once.
        let mut i = self.next % self.capacity;
        while self.taken.contains_key(&i) {
            i = (i + 1) % self.capacity;
        }
        let lease = self.lease_at(i, key);
        self.taken.insert(i, lease.clone());
        self.by_key.insert(key.to_owned(), i);
        self.next = i.wrapping_add(1) % self.capacity;
        Ok(lease)
    }

    /// Releases `key`'s lease; returns it, or `None` if it held none (idempotent).
    pub fn release(&mut self, key: &str) -> Option<Lease> {
        let i = self.by_key.remove(key)?;
        self.taken.remove(&i)
    }

    fn index_of(&self, lease: &Lease) -> Option<u32> {
        if lease.subnet.prefix_len() != self.prefix || !self.pool.contains(&lease.subnet) {
            return None;
        }
        let size = 1u32 << (32 - u32::from(self.prefix));
        let i = (u32::from(lease.subnet.network()) - u32::from(self.pool.network())) / size;
        (self.lease_at(i, &lease.key) == *lease).then_some(i)
    }

    /// Marks a recorded lease as held again (after a restart). Refused if it is not one of
    /// this pool's subnets, overlaps a held lease, or its key holds another.
    pub fn restore(&mut self, lease: Lease) -> Result<(), PoolError> {
        let conflict = |reason| PoolError::Conflict {
            key: lease.key.clone(),
            subnet: lease.subnet,
            reason,
        };
        let Some(i) = self.index_of(&lease) else {
            return Err(conflict(
                "it is not a subnet of this pool with its addresses",
            ));
        };
        match self.taken.get(&i) {
            Some(l) if *l == lease => return Ok(()),
            Some(_) => return Err(conflict("the subnet is leased to another sandbox")),
            None => {}
        }
        if self.by_key.contains_key(&lease.key) {
            return Err(conflict("the sandbox holds another lease"));
        }
        self.by_key.insert(lease.key.clone(), i);
        self.taken.insert(i, lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn slash30_leases_host_and_sandbox_addresses() {
        let mut p = LeasePool::new(net("10.88.0.0/16"), 30).unwrap();
        assert_eq!(p.capacity(), 16384);
        let a = p.allocate("a").unwrap();
        assert_eq!(a.subnet, net("10.88.0.0/30"));
        assert_eq!(a.host, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(a.sandbox, Ipv4Addr::new(10, 88, 0, 2));
        let b = p.allocate("b").unwrap();
        assert_eq!(b.subnet, net("10.88.0.4/30"));
        assert!(matches!(
            p.allocate("a"),
            Err(PoolError::AlreadyLeased { .. })
        ));
    }

    #[test]
    fn slash31_uses_both_addresses() {
        let mut p = LeasePool::new(net("10.0.0.0/24"), 31).unwrap();
        assert_eq!(p.capacity(), 128);
        let a = p.allocate("a").unwrap();
        assert_eq!(
            (a.host, a.sandbox),
            (Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn never_twice_and_exhaustion_is_typed() {
        let mut p = LeasePool::new(net("192.168.7.0/28"), 30).unwrap();
        let mut seen = HashSet::new();
        for k in 0..4 {
            assert!(seen.insert(p.allocate(&k.to_string()).unwrap().subnet));
        }
        let e = p.allocate("x").unwrap_err();
        assert!(
            matches!(e, PoolError::Exhausted { capacity: 4, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("exhausted"), "{e}");
        // A release frees exactly that subnet, and it is reused.
        let freed = p.release("2").unwrap();
        assert_eq!(p.release("2"), None);
        assert_eq!(p.allocate("x").unwrap().subnet, freed.subnet);
    }

    #[test]
    fn next_fit_reuses_released_subnets_last() {
        let mut p = LeasePool::new(net("10.1.0.0/24"), 30).unwrap();
        let a = p.allocate("a").unwrap();
        p.allocate("b").unwrap();
        p.release("a");
        assert_ne!(p.allocate("c").unwrap().subnet, a.subnet);
    }

    #[test]
    fn serde_round_trip_and_restore() {
        let mut p = LeasePool::new(net("10.88.0.0/16"), 30).unwrap();
        let leases: Vec<Lease> = (0..5)
            .map(|k| p.allocate(&format!("s{k}")).unwrap())
            .collect();
        let json = serde_json::to_string(&leases).unwrap();
        let back: Vec<Lease> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, leases);
        let mut q = LeasePool::new(net("10.88.0.0/16"), 30).unwrap();
        for l in back {
            q.restore(l.clone()).unwrap();
            q.restore(l).unwrap(); // idempotent
        }
        assert_eq!(q.leased(), 5);
        let n = q.allocate("new").unwrap();
        assert!(leases.iter().all(|l| l.subnet != n.subnet));
        // Conflicts are refused.
        let mut other = leases[0].clone();
        other.key = "intruder".into();
        assert!(matches!(q.restore(other), Err(PoolError::Conflict { .. })));
        let outside = Lease {
            key: "o".into(),
            subnet: net("10.99.0.0/30"),
            host: Ipv4Addr::new(10, 99, 0, 1),
            sandbox: Ipv4Addr::new(10, 99, 0, 2),
        };
        assert!(matches!(
            q.restore(outside),
            Err(PoolError::Conflict { .. })
        ));
    }

    #[test]
    fn invalid_configurations() {
        assert!(LeasePool::new(net("10.0.0.0/24"), 29).is_err());
        assert!(LeasePool::new(net("10.0.0.0/31"), 30).is_err());
        let p = LeasePool::new(net("10.0.0.5/24"), 30).unwrap();
        assert_eq!(p.cidr(), net("10.0.0.0/24"));
        assert_eq!(
            LeasePool::new(net("0.0.0.0/0"), 31).unwrap().capacity(),
            1 << 31
        );
    }
}
