//! The `veth` network mode at run time: leases, creation, teardown and reclaim of a
//! sandbox's network, driving `paddock-net`.
//!
//! Order for one lifecycle (`start.rs`, `stop.rs`, `recovery.rs`):
//! 1. its key (the lifecycle ID) is marked live here, then a lease is taken from the
//!    machine-wide lease file ([`paddock_net::LeaseFile`], shared with `paddock run`);
//! 2. the record written before anything is created holds the whole [`NetStatus`]: every
//!    object's name (namespace pin, host link, rules' comment) follows from the owner
//!    `<supervisor owner>+<lifecycle>`, so the intent for each object is on record before
//!    the first one exists;
//! 3. the network is made (namespace, veth, addresses, taps, rules), then the cgroup, and
//!    the main process is spawned into the namespace (`setns` in the child);
//! 4. once the cgroup is gone, the network is torn down, then the lease released, then
//!    the key is no longer live. A teardown that fails keeps the lease; reclaim finishes
//!    it.
//!
//! Reclaim ([`Supervisor::reclaim`]): every namespace, link, rule and lease carrying this
//! supervisor's tag whose key is not live is removed, and the leases (with their objects)
//! of provably dead holders (a killed `paddock run`). Nothing is ever `setns`'d on a
//! tokio worker: `paddock-net` works on threads of its own.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use paddock_net::{Held, Key, LeaseFile, Network, PoolError, Tag};
use serde::{Deserialize, Serialize};

use crate::lifecycle::Sandbox;
use crate::netspec::{NetStatus, VethSpec};
use crate::recovery::ReclaimReport;
use crate::spec::Network as NetMode;
use crate::supervisor::Supervisor;
use crate::{Error, SandboxId};

/// The default address pool: 10.231.0.0/16, 16,384 sandboxes of a /30 each. A private
/// range chosen to miss the usual defaults of Docker (172.17.0.0/16 and up), Podman
/// (10.88.0.0/16), libvirt (192.168.122.0/24) and Kubernetes distributions (10.42/16,
/// 10.43/16, 10.96/12, 10.244/16); change it with `paddock serve --net-pool`.
pub const DEFAULT_NET_POOL: &str = "10.231.0.0/16";

/// Configuration of the `veth` network mode ([`crate::Config::net`]).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The address pool; each sandbox leases one /30 of it ([`DEFAULT_NET_POOL`]).
    pub pool: paddock_net::Ipv4Net,
    /// The machine-wide lease file, shared by every paddock process
    /// ([`paddock_net::DEFAULT_LEASE_FILE`]).
    pub lease_file: PathBuf,
    /// Where the sandboxes' namespaces are pinned ([`paddock_net::DEFAULT_PIN_DIR`]).
    pub pin_dir: PathBuf,
    /// A pinned network namespace that plays the host (the veth pairs' host sides and
    /// the nftables table live there); `None` (the default): the supervisor's own.
    pub host_netns: Option<PathBuf>,
    /// The deadline of each `nft` run ([`paddock_net::DEFAULT_NFT_DEADLINE`]).
    pub nft_deadline: Duration,
    /// Turn `net.ipv4.ip_forward` on in the host namespace when a sandbox asks for NAT
    /// or published ports (as Docker does; default true). Off: the host's setting is
    /// left alone, and egress and publishing from outside work only if it is on.
    pub ipv4_forwarding: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            pool: DEFAULT_NET_POOL.parse().expect("a valid CIDR"),
            lease_file: PathBuf::from(paddock_net::DEFAULT_LEASE_FILE),
            pin_dir: PathBuf::from(paddock_net::DEFAULT_PIN_DIR),
            host_netns: None,
            nft_deadline: paddock_net::DEFAULT_NFT_DEADLINE,
            ipv4_forwarding: true,
        }
    }
}

/// What this supervisor owns of the network now (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetGauges {
    /// Network namespaces of live sandboxes.
    pub namespaces: u64,
    /// Host-side links of live sandboxes.
    pub links: u64,
    /// Leases held (or being taken) for live sandboxes.
    pub leases: u64,
}

/// The supervisor's network state.
#[derive(Default)]
pub(crate) struct NetState {
    network: tokio::sync::OnceCell<Arc<Network>>,
    /// Keys (lifecycle IDs) whose network objects and lease must not be reclaimed: from
    /// before the lease is taken until the lease is released.
    live: parking_lot::Mutex<HashSet<String>>,
    namespaces: AtomicU64,
    forwarding_on: AtomicBool,
}

/// A sandbox's network progress (in [`Sandbox::net_made`]).
pub(crate) const NET_NONE: u8 = 0;
pub(crate) const NET_LEASED: u8 = 1;
pub(crate) const NET_MADE: u8 = 2;

fn veth(sb: &Sandbox) -> Option<&VethSpec> {
    match &sb.spec.network {
        NetMode::Veth(v) => Some(v),
        _ => None,
    }
}

/// Whether `holder` (an owner tag) is provably dead: a `pid:` owner whose process is gone.
fn holder_dead(holder: &str) -> bool {
    let o = paddock_cgroup::Owner::parse(holder);
    matches!(o, paddock_cgroup::Owner::Process { .. })
        && o.liveness() == paddock_cgroup::Liveness::Dead
}

impl Supervisor {
    fn net_tag(&self) -> Result<Tag, Error> {
        Tag::new(self.inner.cfg.owner.as_str()).map_err(|e| {
            Error::Unavailable(format!(
                "network: the supervisor's owner tag cannot mark network objects: {e}"
            ))
        })
    }

    fn net_err(&self, sb: &Sandbox, cause: paddock_net::Error) -> Error {
        net_error(&sb.id, cause)
    }

    fn lease_file(&self) -> Result<LeaseFile, Error> {
        let c = &self.inner.cfg.net;
        LeaseFile::new(&c.lease_file, c.pool)
            .map_err(|e| Error::InvalidSpec(format!("network: the configured pool: {e}")))
    }

    /// The `paddock-net` handle (made on first use, on the current runtime).
    pub(crate) async fn network(&self) -> Result<Arc<Network>, paddock_net::Error> {
        let c = &self.inner.cfg.net;
        let tag = Tag::new(self.inner.cfg.owner.as_str())?;
        self.inner
            .net
            .network
            .get_or_try_init(|| async {
                let host = match &c.host_netns {
                    Some(p) => {
                        let dir = paddock_net::NetnsDir::new(p.parent().unwrap_or(p));
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        dir.open(name)?
                    }
                    None => paddock_net::netns::open_host()?,
                };
                let net = Network::new_in(&c.pin_dir, tag, host)
                    .await?
                    .with_nft_deadline(c.nft_deadline);
                #[cfg(feature = "test-hooks")]
                let net = {
                    let hooks = self.inner.cfg.hooks.clone();
                    net.with_step_hook(Arc::new(move |s| hooks.net_step(s)))
                };
                Ok(Arc::new(net))
            })
            .await
            .cloned()
    }

    /// What this supervisor owns of the network now.
    pub fn net_gauges(&self) -> NetGauges {
        let n = &self.inner.net;
        let namespaces = n.namespaces.load(Relaxed);
        NetGauges {
            namespaces,
            links: namespaces,
            leases: n.live.lock().len() as u64,
        }
    }

    /// Step 1 for a `veth` sandbox: marks its key live and takes its lease; sets
    /// `sb.net`. Nothing for other modes.
    pub(crate) async fn net_lease(&self, sb: &Arc<Sandbox>) -> Result<(), Error> {
        let Some(v) = veth(sb) else { return Ok(()) };
        let pool = self.inner.cfg.net.pool;
        if let Some((i, subnet)) = v.tap_in_pool(&pool) {
            return Err(Error::Unsupported(format!(
                "network.veth.taps[{i}].address: {subnet} overlaps this node's address pool {pool}; pick a subnet outside it (the pool is `paddock serve --net-pool`)"
            )));
        }
        let tag = self.net_tag()?;
        let file = self.lease_file()?;
        let key = sb.lifecycle.to_string();
        self.inner.net.live.lock().insert(key.clone());
        // From here a lease may exist even if this future is dropped (the allocation runs
        // to its end on its thread): `net_release` releases it by key.
        sb.net_made.store(NET_LEASED, Relaxed);
        let k = key.clone();
        let t = tag.clone();
        let published = v.published();
        let res =
            tokio::task::spawn_blocking(move || file.allocate(&t, &k, &published, holder_dead))
                .await
                .unwrap_or_else(|e| {
                    Err(paddock_net::Error::Invalid {
                        what: "lease",
                        value: e.to_string(),
                        reason: "the lease thread panicked",
                    })
                });
        let (lease, dead) = match res {
            Ok(r) => r,
            Err(e) => {
                sb.net_made.store(NET_NONE, Relaxed);
                self.inner.net.live.lock().remove(&key);
                return Err(self.net_err(sb, e));
            }
        };
        let owner = paddock_net::Owner::new(tag, Key::new(key).map_err(|e| self.net_err(sb, e))?);
        let table = v
            .has_rules()
            .then(|| format!("ip {}", paddock_net::nft::table_name(&owner.tag)));
        let status = NetStatus {
            owner: owner.to_string(),
            netns: self
                .inner
                .cfg
                .net
                .pin_dir
                .join(owner.to_string())
                .display()
                .to_string(),
            host_ifname: owner.host_ifname(),
            sandbox_ifname: paddock_net::SANDBOX_IFNAME.to_owned(),
            subnet: lease.subnet.to_string(),
            host_address: lease.host.to_string(),
            sandbox_address: lease.sandbox.to_string(),
            taps: v.taps.iter().map(|t| t.name.clone()).collect(),
            rules: v.rule_lines(),
            table,
        };
        let _ = sb.net.set(status);
        if !dead.is_empty() {
            // Rare (a paddock run was killed); done before the start goes on, so a
            // short-lived process (another `paddock run`) does not exit half-way.
            let mut report = ReclaimReport::default();
            self.reclaim_holders(dead, &mut report).await;
            for (what, e) in report.failed {
                tracing::warn!(object = %what, error = %e, "could not reclaim the network of a dead paddock process");
            }
        }
        Ok(())
    }

    /// Step 3: makes `sb`'s network; returns its namespace, to spawn into.
    pub(crate) async fn net_create(&self, sb: &Sandbox) -> Result<Option<OwnedFd>, Error> {
        let (Some(v), Some(st)) = (veth(sb), sb.net.get()) else {
            return Ok(None);
        };
        let key = sb.lifecycle.to_string();
        let lease = st.lease(&key).ok_or_else(|| {
            Error::InvalidSpec(format!("network: the lease of {key} cannot be read back"))
        })?;
        let net = self.network().await.map_err(|e| self.net_err(sb, e))?;
        if (v.nat || !v.publish.is_empty())
            && self.inner.cfg.net.ipv4_forwarding
            && !self.inner.net.forwarding_on.load(Relaxed)
        {
            let host = net.host_ns().map_err(|e| self.net_err(sb, e))?;
            paddock_net::netns::set_ipv4_forwarding(host, true)
                .await
                .map_err(|e| self.net_err(sb, e))?;
            self.inner.net.forwarding_on.store(true, Relaxed);
            tracing::info!(
                "turned IPv4 forwarding on in the host network namespace (net.ipv4.ip_forward = 1) for sandbox NAT and published ports"
            );
        }
        let owner_ids = self.tap_owner(sb);
        let spec = paddock_net::SandboxSpec {
            lease,
            taps: v.taps(owner_ids),
            rules: v.rules(),
        };
        let k = Key::new(key).map_err(|e| self.net_err(sb, e))?;
        net.create(&k, &spec)
            .await
            .map_err(|e| self.net_err(sb, e))?;
        sb.net_made.store(NET_MADE, Relaxed);
        self.inner.net.namespaces.fetch_add(1, Relaxed);
        let fd = net
            .netns_dir()
            .open(&st.owner)
            .map_err(|e| self.net_err(sb, e))?;
        Ok(Some(fd))
    }

    /// The default owner of `sb`'s taps: its dynamic uid, or its jail's ids when the jail
    /// has no user namespace (whose ids would not be the host's).
    fn tap_owner(&self, sb: &Sandbox) -> Option<(u32, u32)> {
        let j = sb.jail.as_ref()?;
        if let Some(d) = j.dynamic_uid {
            return Some((d, d));
        }
        let userns = sb.spec.jail.as_ref().is_some_and(|js| {
            js.namespaces
                .iter()
                .any(|n| matches!(n, crate::jail::NamespaceKind::User))
        });
        (!userns).then_some((j.uid, j.gid))
    }

    /// Step 4 (and the undo of a failed start): tears `sb`'s network down, then releases
    /// its lease and its key. A teardown that fails is logged and counted, and keeps the
    /// lease and the key's objects for reclaim.
    pub(crate) async fn net_release(&self, sb: &Sandbox) {
        let Some(v) = veth(sb) else { return };
        let state = sb.net_made.load(Relaxed);
        if state == NET_NONE {
            return;
        }
        let key = sb.lifecycle.to_string();
        let torn = match (self.network().await, Key::new(key.clone())) {
            (Ok(net), Ok(k)) => net.teardown_with(&k, v.has_rules()).await,
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        if state == NET_MADE {
            self.inner.net.namespaces.fetch_sub(1, Relaxed);
        }
        if let Err(e) = torn {
            self.inner
                .counters
                .net_teardowns_failed
                .fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not tear the sandbox's network down; it and its lease are left for reclaim");
            sb.net_made.store(NET_NONE, Relaxed);
            self.inner.net.live.lock().remove(&key);
            return;
        }
        sb.net_made.store(NET_NONE, Relaxed);
        let released = match (self.lease_file(), self.net_tag()) {
            (Ok(file), Ok(tag)) => {
                let k = key.clone();
                tokio::task::spawn_blocking(move || file.release(&tag, &k))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = released {
            tracing::error!(error = %e, "could not release the sandbox's address lease; reclaim will");
        }
        self.inner.net.live.lock().remove(&key);
    }

    /// An adopted `veth` sandbox: its key is live, its lease held again (restored in the
    /// lease file if the file lost it).
    pub(crate) async fn net_adopted(&self, sb: &Sandbox) {
        let (Some(v), Some(st)) = (veth(sb), sb.net.get()) else {
            return;
        };
        let published = v.published();
        let key = sb.lifecycle.to_string();
        self.inner.net.live.lock().insert(key.clone());
        if let (Ok(file), Ok(tag), Some(lease)) =
            (self.lease_file(), self.net_tag(), st.lease(&key))
        {
            let r =
                tokio::task::spawn_blocking(move || file.restore(&tag, &lease, &published)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "could not hold the adopted sandbox's lease again");
            }
        }
        self.inner.net.namespaces.fetch_add(1, Relaxed);
        sb.net_made.store(NET_MADE, Relaxed);
    }

    async fn reclaim_holders(&self, dead: Vec<Held>, report: &mut ReclaimReport) {
        let c = &self.inner.cfg.net;
        let mut tags: Vec<String> = dead.iter().map(|h| h.holder.clone()).collect();
        tags.sort();
        tags.dedup();
        self.inner
            .counters
            .net_reclaimed_leases
            .fetch_add(dead.len() as u64, Relaxed);
        report
            .net_leases
            .extend(dead.iter().map(|h| format!("{}+{}", h.holder, h.lease.key)));
        let host = match self.network().await.and_then(|n| n.host_ns()) {
            Ok(h) => h,
            Err(e) => {
                report.failed.push(("network".into(), e.to_string()));
                return;
            }
        };
        for t in tags {
            let Ok(tag) = Tag::new(t.clone()) else {
                continue;
            };
            let res = async {
                let h = host.try_clone().map_err(|e| paddock_net::Error::Os {
                    op: "duplicate fd of",
                    object: "the host network namespace".into(),
                    source: e,
                })?;
                let net = Network::new_in(&c.pin_dir, tag, h)
                    .await?
                    .with_nft_deadline(c.nft_deadline);
                let r = net.reclaim(&HashSet::new()).await?;
                // The dead process's own table: it will never be used again.
                net.nft().delete_table().await?;
                Ok::<_, paddock_net::Error>(r)
            }
            .await;
            match res {
                Ok(r) => {
                    tracing::warn!(owner = %t, links = r.links.len(), namespaces = r.namespaces.len(), rules = r.rules.len(), "reclaimed the network objects of a dead paddock process");
                    self.count_reclaimed(&r, report);
                }
                Err(e) => report
                    .failed
                    .push((format!("network of {t}"), e.to_string())),
            }
        }
    }

    fn count_reclaimed(&self, r: &paddock_net::ReclaimReport, report: &mut ReclaimReport) {
        let c = &self.inner.counters;
        c.net_reclaimed_links
            .fetch_add(r.links.len() as u64, Relaxed);
        c.net_reclaimed_namespaces
            .fetch_add(r.namespaces.len() as u64, Relaxed);
        c.net_reclaimed_rules
            .fetch_add(r.rules.len() as u64, Relaxed);
        report.net_links.extend(r.links.iter().cloned());
        report.net_namespaces.extend(r.namespaces.iter().cloned());
        report.net_rules.extend(r.rules.iter().cloned());
    }

    /// The network part of [`Supervisor::reclaim`]: this supervisor's namespaces, links,
    /// rules and leases whose key is not live, and dead holders' leases and objects.
    /// Skipped (no netlink socket, no `nft`) while neither the pin directory nor the lease
    /// file holds anything of this supervisor's or of a dead holder, and no network was
    /// made in this process.
    pub(crate) async fn net_reclaim(&self, report: &mut ReclaimReport) {
        let Ok(tag) = self.net_tag() else { return };
        let c = &self.inner.cfg.net;
        let mine = format!("{tag}+");
        let pinned = paddock_net::NetnsDir::new(&c.pin_dir)
            .list()
            .unwrap_or_default()
            .iter()
            .any(|n| n.starts_with(&mine));
        let file = match self.lease_file() {
            Ok(f) => f,
            Err(e) => {
                report.failed.push(("network leases".into(), e.to_string()));
                return;
            }
        };
        let f = file.clone();
        let held = tokio::task::spawn_blocking(move || f.list())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let leased = held
            .iter()
            .any(|h| h.holder == tag.as_str() || holder_dead(&h.holder));
        if !pinned && !leased && !self.inner.net.network.initialized() {
            return;
        }
        let net = match self.network().await {
            Ok(n) => n,
            Err(e) => {
                report.failed.push(("network".into(), e.to_string()));
                return;
            }
        };
        let live = |k: &str| self.inner.net.live.lock().contains(k);
        match net.reclaim_where(|k| live(k.as_str())).await {
            Ok(r) => self.count_reclaimed(&r, report),
            Err(e) => report.failed.push(("network".into(), e.to_string())),
        }
        let sup = self.clone();
        let t = tag.clone();
        let gone = tokio::task::spawn_blocking(move || {
            file.reclaim(&t, |k| sup.inner.net.live.lock().contains(k), holder_dead)
        })
        .await;
        let gone = match gone {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                report.failed.push(("network leases".into(), e.to_string()));
                return;
            }
            Err(e) => {
                report.failed.push(("network leases".into(), e.to_string()));
                return;
            }
        };
        let (own, dead): (Vec<Held>, Vec<Held>) =
            gone.into_iter().partition(|h| h.holder == tag.as_str());
        for h in &own {
            tracing::warn!(owner = %format!("{}+{}", h.holder, h.lease.key), subnet = %h.lease.subnet, "reclaimed a stale address lease");
        }
        self.inner
            .counters
            .net_reclaimed_leases
            .fetch_add(own.len() as u64, Relaxed);
        report
            .net_leases
            .extend(own.iter().map(|h| format!("{}+{}", h.holder, h.lease.key)));
        if !dead.is_empty() {
            self.reclaim_holders(dead, report).await;
        }
    }
}

/// The supervisor's error for a network layer failure of sandbox `id`: the API's 429 for an
/// exhausted pool, 409 for a published port in use, 422 for a tap on a node without the
/// tun driver, and [`Error::Network`] (a 500) for the rest.
fn net_error(id: &SandboxId, cause: paddock_net::Error) -> Error {
    match cause {
        paddock_net::Error::Pool(e @ PoolError::Exhausted { .. }) => {
            Error::PoolExhausted(format!("network: {e}"))
        }
        e @ paddock_net::Error::PortTaken { .. } => {
            Error::PortInUse(format!("network.veth.publish: {e}"))
        }
        e @ paddock_net::Error::NftMissing { .. } => Error::Unsupported(format!(
            "network.veth: the sandbox's rules need nftables on the node: {e}"
        )),
        e if e.is_forwarding_refused() => Error::Unsupported(format!(
            "network.veth: nat and publish need IPv4 forwarding in the host network namespace, and it is off: {e} (turn net.ipv4.ip_forward on)"
        )),
        e if e.is_tun_missing() => Error::Unsupported(format!(
            "network.veth.taps: {e} (load the tun module, or create /dev/net/tun as character device 10:200)"
        )),
        cause => Error::Network {
            id: id.clone(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_tun(errno: rustix::io::Errno) -> paddock_net::Error {
        paddock_net::Error::Os {
            op: paddock_net::tap::OPEN_TUN,
            object: "tap0".into(),
            source: errno.into(),
        }
    }

    #[test]
    fn a_node_without_tun_is_a_422_class_error() {
        let id = SandboxId::new("n").unwrap();
        let e = net_error(&id, open_tun(rustix::io::Errno::NOENT));
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("network.veth.taps") && m.contains("tun")),
            "{e}"
        );
        let e = net_error(
            &id,
            paddock_net::Error::Os {
                op: "write sysctl",
                object: "/proc/sys/net/ipv4/ip_forward".into(),
                source: rustix::io::Errno::ROFS.into(),
            },
        );
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("ip_forward")),
            "{e}"
        );
        // Any other failure to open it is the daemon's (a 500).
        let e = net_error(&id, open_tun(rustix::io::Errno::ACCESS));
        assert!(matches!(e, Error::Network { .. }), "{e}");
    }
}
