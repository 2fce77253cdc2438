//! [`Network`]: one instance's sandbox networks — create, tear down, reclaim.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rtnetlink::Handle;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::link;
use crate::netns::{self, NetnsDir};
use crate::nft::{Nft, Rules};
use crate::owner::{Key, Owner, Tag};
use crate::pool::Lease;
use crate::tap::{self, TapSpec};

/// The name of the sandbox side of the veth pair, inside the sandbox's namespace.
pub const SANDBOX_IFNAME: &str = "eth0";

/// What one sandbox's network is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Its addresses (from a [`crate::LeasePool`]).
    pub lease: Lease,
    /// Tap devices to create inside.
    #[serde(default)]
    pub taps: Vec<TapSpec>,
    /// NAT, published ports and isolation (nftables; none by default).
    #[serde(default)]
    pub rules: Rules,
}

/// A sandbox's network as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNet {
    /// The owner string `<tag>+<key>` (the namespace's name, the links' alias).
    pub owner: String,
    /// The namespace's pin file: give it to the spawner (`setns`, or `--netns`).
    pub netns: PathBuf,
    /// The host side of the veth pair.
    pub host_ifname: String,
    /// The addresses.
    pub lease: Lease,
    /// The taps made inside.
    pub taps: Vec<String>,
}

/// What [`Network::reclaim`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Host links removed (names).
    pub links: Vec<String>,
    /// Pinned namespaces removed (names).
    pub namespaces: Vec<String>,
    /// Owners whose nftables rules were removed.
    pub rules: Vec<String>,
}

/// Called after each step of [`Network::create`] with the step's name (see
/// [`CREATE_STEPS`]); the creation waits for the returned future. For crash tests, which
/// stop a creation between two steps and kill the process there.
pub type StepHook = std::sync::Arc<
    dyn Fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// The steps of [`Network::create`], in order, as named to a [`StepHook`]: the namespace
/// pinned; the veth pair made (host end in the host) and both ends tagged; the host end
/// addressed and up; `eth0` and `lo` set up with the default route; the taps made;
/// the nftables rules made (the last two only when asked for).
pub const CREATE_STEPS: [&str; 6] = ["netns", "veth", "host", "inside", "taps", "rules"];

/// One instance's sandbox networks. Everything it creates carries its tag (see
/// [`crate::owner`]); it never changes or removes an object without it.
///
/// The handle holds a netlink connection in the host namespace, driven by a task on the
/// tokio runtime it was made on, and runs `nft` there.
pub struct Network {
    dir: NetnsDir,
    tag: Tag,
    host_ns: OwnedFd,
    host: Handle,
    nft: Nft,
    step: Option<StepHook>,
}

impl std::fmt::Debug for StepHookDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(StepHook)"
        } else {
            "None"
        })
    }
}

struct StepHookDebug<'a>(&'a Option<StepHook>);

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("dir", &self.dir)
            .field("tag", &self.tag)
            .field("nft", &self.nft)
            .field("step", &StepHookDebug(&self.step))
            .finish_non_exhaustive()
    }
}

impl Network {
    /// An instance tagged `tag` pinning its namespaces in `pin_dir`
    /// ([`crate::DEFAULT_PIN_DIR`] by default). Must be called inside a tokio runtime.
    ///
    /// The host namespace is the process's (`/proc/self/ns/net`).
    pub async fn new(pin_dir: impl Into<PathBuf>, tag: Tag) -> Result<Self> {
        Self::new_in(pin_dir, tag, netns::open_host()?).await
    }

    /// As [`Network::new`], with `host_ns` playing the host: the veth pairs' host sides
    /// and the nftables table live there (tests use a "router" namespace of their own).
    pub async fn new_in(pin_dir: impl Into<PathBuf>, tag: Tag, host_ns: OwnedFd) -> Result<Self> {
        let dup = || {
            host_ns
                .try_clone()
                .map_err(|e| Error::os("duplicate fd of", "the host network namespace", e))
        };
        let host = link::connect("the host network namespace", Some(dup()?)).await?;
        let nft = Nft::new(&tag, dup()?);
        Ok(Self {
            dir: NetnsDir::new(pin_dir),
            tag,
            host_ns,
            host,
            nft,
            step: None,
        })
    }

    /// Calls `hook` after each step of [`Network::create`] (crash tests).
    pub fn with_step_hook(mut self, hook: StepHook) -> Self {
        self.step = Some(hook);
        self
    }

    async fn step(&self, name: &'static str) {
        if let Some(h) = &self.step {
            h(name).await;
        }
    }

    /// Bounds each `nft` run by `deadline` (see [`Nft::with_deadline`]).
    pub fn with_nft_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.nft = self.nft.with_deadline(deadline);
        self
    }

    /// Runs the `nft` binary at `path` (see [`Nft::with_binary`]).
    pub fn with_nft_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft = self.nft.with_binary(path);
        self
    }

    /// The instance's nftables table.
    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    /// A new fd of the namespace playing the host.
    pub fn host_ns(&self) -> Result<OwnedFd> {
        self.host_ns
            .try_clone()
            .map_err(|e| Error::os("duplicate fd of", "the host network namespace", e))
    }

    /// The instance's tag.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// The pin directory.
    pub fn netns_dir(&self) -> &NetnsDir {
        &self.dir
    }

    /// The owner of `key`'s objects.
    pub fn owner(&self, key: &Key) -> Owner {
        Owner::new(self.tag.clone(), key.clone())
    }

    /// Creates `key`'s network: a namespace pinned as `<tag>+<key>`, a veth pair whose
    /// host side (`pdk<hash>`, alias `<tag>+<key>`) has `lease.host` and is up, and whose
    /// peer is `eth0` inside with `lease.sandbox` and a default route via `lease.host`;
    /// `lo` up inside; the taps of `spec` inside, with their addresses, up; then its
    /// nftables rules, if any.
    ///
    /// The veth pair is made by one request from inside the new namespace with its host
    /// end made in the host, then both ends are tagged: an untagged host end only ever
    /// has its peer in this tagged namespace (see [`Network::reclaim`]). On any failure,
    /// everything made so far is torn down before the error is returned.
    pub async fn create(&self, key: &Key, spec: &SandboxSpec) -> Result<SandboxNet> {
        for t in &spec.taps {
            t.validate()?;
        }
        let owner = self.owner(key);
        match self.create_inner(&owner, spec).await {
            Ok(net) => Ok(net),
            Err(e) => {
                if let Err(t) = self.teardown_with(key, !spec.rules.is_empty()).await {
                    tracing::warn!(owner = %owner, error = %t, "teardown after a failed network creation failed");
                }
                Err(e)
            }
        }
    }

    async fn create_inner(&self, owner: &Owner, spec: &SandboxSpec) -> Result<SandboxNet> {
        let name = owner.to_string();
        let host_if = owner.host_ifname();
        let lease = &spec.lease;
        let prefix = lease.subnet.prefix_len();
        let ns = self.dir.create(&name).await?;
        self.step("netns").await;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::os("duplicate fd of namespace", name.clone(), e))
        };
        let inside = link::connect(&name, Some(dup(&ns)?)).await?;

        // One request from inside: the host end made in the host namespace (no move of a
        // link between namespaces, whose `synchronize_net` cost 20-40 ms), `eth0` inside;
        // then both ends tagged. Until the host end's alias is set, its peer is in the
        // pinned, tagged namespace: reclaim removes that namespace after deleting `eth0`
        // in it, which deletes the pair.
        link::add_veth_into(&inside, &host_if, SANDBOX_IFNAME, &self.host_ns, &name).await?;
        let host_idx = link::index(&self.host, &host_if).await?;
        link::set_alias(&self.host, host_idx, &host_if, &name).await?;
        let eth0 = link::index(&inside, SANDBOX_IFNAME).await?;
        link::set_alias(&inside, eth0, SANDBOX_IFNAME, &name).await?;
        self.step("veth").await;

        // Host side.
        link::add_address(&self.host, host_idx, &host_if, lease.host, prefix).await?;
        link::up(&self.host, host_idx, &host_if).await?;
        self.step("host").await;

        // Inside.
        let lo = link::index(&inside, "lo").await?;
        link::up(&inside, lo, "lo").await?;
        link::add_address(&inside, eth0, SANDBOX_IFNAME, lease.sandbox, prefix).await?;
        link::up(&inside, eth0, SANDBOX_IFNAME).await?;
        link::add_default_route(&inside, eth0, SANDBOX_IFNAME, lease.host).await?;
        self.step("inside").await;

        let mut taps = Vec::new();
        for t in &spec.taps {
            tap::create(dup(&ns)?, t).await?;
            let idx = link::index(&inside, &t.name).await?;
            if let Some(a) = t.address {
                link::add_address(&inside, idx, &t.name, a.addr(), a.prefix_len()).await?;
            }
            link::up(&inside, idx, &t.name).await?;
            taps.push(t.name.clone());
        }
        if !spec.taps.is_empty() {
            self.step("taps").await;
        }
        if !spec.rules.is_empty() {
            // A new owner (its namespace was just made, exclusively): nothing to replace.
            self.nft.add(owner, &host_if, lease, &spec.rules).await?;
            self.step("rules").await;
        }
        Ok(SandboxNet {
            owner: name.clone(),
            netns: self.dir.path_of(&name),
            host_ifname: host_if,
            lease: lease.clone(),
            taps,
        })
    }

    /// Removes `key`'s network: its nftables rules (those with its owner as comment), the
    /// host-side link (only if its alias is this owner), then the pinned namespace (with
    /// `eth0` and the taps in it). Idempotent: missing objects
    /// are fine. A link of that name with another owner is left alone and reported as
    /// [`Error::NotOwned`] after the namespace is removed.
    pub async fn teardown(&self, key: &Key) -> Result<()> {
        self.teardown_with(key, true).await
    }

    /// As [`Network::teardown`]; with `rules` false the caller knows no nftables rule was
    /// ever made for `key` (its spec asked for none), and `nft` is not run at all.
    pub async fn teardown_with(&self, key: &Key, rules: bool) -> Result<()> {
        let owner = self.owner(key);
        let name = owner.to_string();
        let host_if = owner.host_ifname();
        // The rules (two `nft` runs) and the link (its deletion waits for an RCU grace
        // period) at the same time: a rule names the link by name, not by index.
        let rules_done = async {
            if rules {
                self.nft.remove(&owner).await.map(|_| ())
            } else {
                Ok(())
            }
        };
        let link_done = async {
            let mut not_owned = None;
            if let Some(m) = link::get(&self.host, &host_if).await? {
                match link::alias_of(&m) {
                    Some(a) if a == name => {
                        link::delete(&self.host, m.header.index, &host_if).await?;
                    }
                    // Untagged: a creation stopped before the host end's tag (a cancelled
                    // or crashed start). If it is the peer of `eth0` in this owner's
                    // namespace, deleting that `eth0` deletes it; else it is not ours.
                    None if self.delete_inside_eth0(&name).await?
                        && link::get(&self.host, &host_if).await?.is_none() => {}
                    found => {
                        not_owned = Some(Error::NotOwned {
                            object: format!("link {host_if}"),
                            owner: name.clone(),
                            found: found.map(str::to_owned),
                        });
                    }
                }
            }
            Ok::<_, Error>(not_owned)
        };
        let (r, l) = tokio::join!(rules_done, link_done);
        r?;
        let not_owned = l?;
        self.dir.delete(&name)?;
        match not_owned {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Deletes `eth0` in the namespace pinned as `name` (which deletes its veth pair, both
    /// ends); whether there was one.
    async fn delete_inside_eth0(&self, name: &str) -> Result<bool> {
        let Ok(fd) = self.dir.open(name) else {
            return Ok(false);
        };
        let inside = link::connect(name, Some(fd)).await?;
        match link::get(&inside, SANDBOX_IFNAME).await? {
            Some(m) => link::delete(&inside, m.header.index, SANDBOX_IFNAME).await,
            None => Ok(false),
        }
    }

    /// Removes every nftables rule, host link and pinned namespace that carries this
    /// instance's tag and whose key is not in `live` (in a stale namespace, `eth0` is
    /// deleted first, which deletes a veth pair whose host end a crash left untagged). Objects without the tag (another tag, no alias, a name
    /// that is not `<tag>+<key>`) are never touched.
    pub async fn reclaim(&self, live: &HashSet<Key>) -> Result<ReclaimReport> {
        self.reclaim_where(|k| live.contains(k)).await
    }

    /// As [`Network::reclaim`], asking `is_live` about each key when its object is
    /// judged (so a caller can answer from its live state at that moment: a sandbox
    /// whose key became live after the reclaim began is never reclaimed).
    pub async fn reclaim_where(&self, is_live: impl Fn(&Key) -> bool) -> Result<ReclaimReport> {
        let mut report = ReclaimReport {
            rules: self.nft.reclaim(&self.tag, |o| is_live(&o.key)).await?,
            ..ReclaimReport::default()
        };
        for owner in &report.rules {
            tracing::warn!(owner = %owner, "reclaimed stale sandbox nftables rules");
        }
        let stale = |s: &str| Owner::parse(s).filter(|o| o.tag == self.tag && !is_live(&o.key));
        for m in link::dump(&self.host).await? {
            let (Some(alias), Some(ifname)) = (link::alias_of(&m), link::name_of(&m)) else {
                continue;
            };
            if stale(alias).is_some() && link::delete(&self.host, m.header.index, ifname).await? {
                tracing::warn!(
                    link = ifname,
                    owner = alias,
                    "reclaimed a stale sandbox link"
                );
                report.links.push(ifname.to_owned());
            }
        }
        for name in self.dir.list()? {
            let Some(owner) = stale(&name) else { continue };
            // A crash between the pair's creation and its host end's tag left an untagged
            // host end whose peer is `eth0` here: deleting `eth0` deletes the pair now
            // (unpinning alone would, only once the kernel frees the namespace).
            if self.delete_inside_eth0(&name).await.unwrap_or(false) {
                let host_if = owner.host_ifname();
                tracing::warn!(link = %host_if, owner = %name, "reclaimed a stale sandbox link (untagged host end)");
                report.links.push(host_if);
            }
            if self.dir.delete(&name)? {
                tracing::warn!(netns = %name, "reclaimed a stale sandbox network namespace");
                report.namespaces.push(name);
            }
        }
        Ok(report)
    }
}
