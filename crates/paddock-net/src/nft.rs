//! nftables rules for sandboxes — egress NAT, published ports, isolation — in a table
//! this crate owns, through `nft`'s JSON API (`nft -j -f -`, one atomic transaction per
//! batch).
//!
//! The table is `ip paddock_<8 hex of FNV-1a(tag)>` (the tag itself may hold characters
//! `nft`'s command line does not accept in a name), with four base chains:
//! `postrouting` (nat, srcnat), `prerouting` and `output` (nat, dstnat) and `forward`
//! (filter). Every rule carries its owner `<tag>+<key>` as its comment; removal lists
//! the table and deletes exactly the rules with that comment, by handle. No other table
//! or chain is ever read or written, so the host's own ruleset is left as it is.
//!
//! `nft` runs as a child made on a thread inside the host namespace given to
//! [`Nft::new`] (a child inherits its creating thread's namespaces), spawned through
//! `paddock-proc` (so a subreaper's orphan sweep never steals its status) and bounded by
//! a deadline ([`Nft::with_deadline`]; killed and reaped past it).
//!
//! **Why `nft -j` with `serde_json`** rather than netlink (`rustables`, `nftnl`): the
//! nftables netlink protocol is a bytecode VM that libnftables compiles rules into;
//! emitting it by hand means re-implementing that compiler, and the Rust bindings of it
//! are thin or unmaintained. The JSON API is `nft`'s stable, documented interface
//! (libnftables-json(5)), transactional per batch, and the rules it makes read back as
//! `nft list ruleset` shows them. The `nftables` crate types the same schema but tracks
//! `nft` releases closely; the dozen statements used here are plain `serde_json`
//! values, checked against the `nft` the tests run. Cost: one `fork`+`exec` of `nft` per
//! batch (a few ms).
//!
//! IPv4 only (family `ip`).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::netns::on_thread;
use crate::owner::{LINK_PREFIX, Owner, Tag};
use crate::pool::Lease;
use crate::runner::{self, RunError};

/// How long one `nft` run may take (spawn, input, output and exit) before it is killed:
/// a batch takes a few ms, so this only ends a hung `nft` (a lock, a stuck kernel).
pub const DEFAULT_NFT_DEADLINE: Duration = Duration::from_secs(10);

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A port of the host forwarded to the sandbox (DNAT of traffic to any of the host's own
/// addresses, from outside and from the host itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Publish {
    /// The host's port.
    pub host_port: u16,
    /// The sandbox's port.
    pub sandbox_port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// The nftables part of a sandbox's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Egress NAT: masquerade the sandbox's subnet on every interface that is not a
    /// sandbox's (the host must forward IPv4: see [`crate::netns::set_ipv4_forwarding`]).
    #[serde(default)]
    pub nat: bool,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<Publish>,
    /// No forwarding between this sandbox and any other sandbox's link (rejected with
    /// ICMP admin-prohibited, so connections fail at once).
    #[serde(default)]
    pub isolate: bool,
}

impl Rules {
    /// Whether there is any rule to make.
    pub fn is_empty(&self) -> bool {
        !self.nat && self.publish.is_empty() && !self.isolate
    }
}

const FAMILY: &str = "ip";

/// One instance's nftables table in one network namespace.
#[derive(Debug)]
pub struct Nft {
    table: String,
    host_ns: OwnedFd,
    binary: PathBuf,
    deadline: Duration,
}

/// A rule of the table as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// Its chain.
    pub chain: String,
    /// Its handle.
    pub handle: u64,
    /// Its comment (the owner string, for rules this crate made).
    pub comment: Option<String>,
}

impl Nft {
    /// The table of instance `tag` in the namespace `host_ns`, run with `nft` from `PATH`.
    pub fn new(tag: &Tag, host_ns: OwnedFd) -> Self {
        Self {
            table: table_name(tag),
            host_ns,
            binary: PathBuf::from("nft"),
            deadline: DEFAULT_NFT_DEADLINE,
        }
    }

    /// Bounds each `nft` run by `deadline` (default [`DEFAULT_NFT_DEADLINE`]): past it,
    /// `nft` is killed and reaped, and the operation fails with an error naming the
    /// command and the deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Uses the `nft` binary at `path`.
    pub fn with_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs `nft` with `args` (and `input` on stdin) in the host namespace. `Ok(None)`:
    /// `nft` is not installed.
    async fn run(
        &self,
        op: &'static str,
        args: Vec<String>,
        input: Option<String>,
    ) -> Result<Option<String>> {
        let ns = self
            .host_ns
            .try_clone()
            .map_err(|e| Error::os("duplicate fd of", "the host network namespace", e))?;
        let binary = self.binary.clone();
        let table = self.table.clone();
        let deadline = self.deadline;
        on_thread(&table.clone(), Some(ns), move || {
            let nft_err = |detail: String| Error::Nft {
                op,
                object: format!("table {FAMILY} {table}"),
                detail,
            };
            let what = format!("{} {}", binary.display(), args.join(" "));
            let out = match runner::run(
                &binary,
                &args,
                input.as_deref().map(str::as_bytes),
                deadline,
                &what,
            ) {
                Ok(out) => out,
                Err(RunError::NotFound) => return Ok(None),
                Err(RunError::Failed(m) | RunError::TimedOut(m)) => return Err(nft_err(m)),
            };
            if !out.status.success() {
                return Err(nft_err(format!(
                    "{} ({})",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                )));
            }
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        })
        .await
    }

    async fn batch(&self, op: &'static str, cmds: Vec<Value>) -> Result<()> {
        let doc = json!({ "nftables": cmds }).to_string();
        match self
            .run(op, vec!["-j".into(), "-f".into(), "-".into()], Some(doc))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::NftMissing {
                op,
                object: format!("table {FAMILY} {}", self.table),
                program: self.binary.display().to_string(),
            }),
        }
    }

    /// The rules of the table; empty if it (or `nft`) does not exist.
    pub async fn list(&self) -> Result<Vec<ListedRule>> {
        let args = ["-j", "list", "table", FAMILY, &self.table]
            .map(String::from)
            .to_vec();
        let out = match self.run("list", args, None).await {
            Ok(Some(out)) => out,
            Ok(None) => return Ok(Vec::new()),
            Err(Error::Nft { detail, .. }) if detail.contains("No such file or directory") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let doc: Value = serde_json::from_str(&out).map_err(|e| Error::Nft {
            op: "list",
            object: format!("table {FAMILY} {}", self.table),
            detail: format!("nft's JSON cannot be read: {e}"),
        })?;
        Ok(doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let r = item.get("rule")?;
                (r["table"] == self.table.as_str()).then_some(())?;
                Some(ListedRule {
                    chain: r["chain"].as_str()?.to_owned(),
                    handle: r["handle"].as_u64()?,
                    comment: r["comment"].as_str().map(str::to_owned),
                })
            })
            .collect())
    }

    fn delete_cmd(&self, r: &ListedRule) -> Value {
        json!({"delete": {"rule": {
            "family": FAMILY, "table": self.table, "chain": r.chain, "handle": r.handle
        }}})
    }

    fn table_cmds(&self) -> Vec<Value> {
        let chain = |name: &str, kind: &str, prio: i32| {
            json!({"add": {"chain": {
                "family": FAMILY, "table": self.table, "name": name,
                "type": kind, "hook": name, "prio": prio, "policy": "accept"
            }}})
        };
        vec![
            json!({"add": {"table": {"family": FAMILY, "name": self.table}}}),
            chain("postrouting", "nat", 100),
            chain("prerouting", "nat", -100),
            chain("output", "nat", -100),
            chain("forward", "filter", 0),
        ]
    }

    /// Makes `owner`'s rules (replacing any it had) in one transaction: the table and
    /// chains if missing, then the rules of `rules` for the sandbox behind `host_if` with
    /// `lease`.
    pub async fn apply(
        &self,
        owner: &Owner,
        host_if: &str,
        lease: &Lease,
        rules: &Rules,
    ) -> Result<()> {
        let comment = owner.to_string();
        let mut cmds = self.table_cmds();
        for r in self.list().await? {
            if r.comment.as_deref() == Some(comment.as_str()) {
                cmds.push(self.delete_cmd(&r));
            }
        }
        cmds.extend(self.rule_cmds(&comment, host_if, lease, rules));
        self.batch("add rules for", cmds).await
    }

    /// Makes the rules of a new `owner` (one that has none: no listing first) in one
    /// transaction, with the table and chains if missing.
    pub async fn add(
        &self,
        owner: &Owner,
        host_if: &str,
        lease: &Lease,
        rules: &Rules,
    ) -> Result<()> {
        let mut cmds = self.table_cmds();
        cmds.extend(self.rule_cmds(&owner.to_string(), host_if, lease, rules));
        self.batch("add rules for", cmds).await
    }

    /// The `add rule` commands of `rules` for the sandbox behind `host_if` with `lease`,
    /// each with `comment` (pure).
    fn rule_cmds(&self, comment: &str, host_if: &str, lease: &Lease, rules: &Rules) -> Vec<Value> {
        let mut cmds = Vec::new();
        let rule = |chain: &str, expr: Vec<Value>| {
            json!({"add": {"rule": {
                "family": FAMILY, "table": self.table, "chain": chain,
                "comment": comment, "expr": expr
            }}})
        };
        let meta = |key: &str, op: &str, right: &str| json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}});
        let sandbox_links = format!("{LINK_PREFIX}*");
        if rules.nat {
            cmds.push(rule(
                "postrouting",
                vec![
                    json!({"match": {"op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": {"prefix": {"addr": lease.subnet.network().to_string(),
                                             "len": lease.subnet.prefix_len()}}}}),
                    meta("oifname", "!=", &sandbox_links),
                    json!({"masquerade": null}),
                ],
            ));
        }
        for p in &rules.publish {
            let dnat = vec![
                json!({"match": {"op": "==",
                    "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                    "right": "local"}}),
                json!({"match": {"op": "==",
                    "left": {"payload": {"protocol": p.protocol.as_str(), "field": "dport"}},
                    "right": p.host_port}}),
                json!({"dnat": {"addr": lease.sandbox.to_string(), "port": p.sandbox_port}}),
            ];
            cmds.push(rule("prerouting", dnat.clone()));
            cmds.push(rule("output", dnat));
        }
        if rules.isolate {
            let reject = json!({"reject": {"type": "icmp", "expr": "admin-prohibited"}});
            cmds.push(rule(
                "forward",
                vec![
                    meta("iifname", "==", host_if),
                    meta("oifname", "==", &sandbox_links),
                    reject.clone(),
                ],
            ));
            cmds.push(rule(
                "forward",
                vec![
                    meta("iifname", "==", &sandbox_links),
                    meta("oifname", "==", host_if),
                    reject,
                ],
            ));
        }
        cmds
    }

    /// Deletes the rules whose comment `pick` accepts, in one transaction; returns their
    /// comments.
    async fn remove_where(&self, pick: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut cmds = Vec::new();
        let mut removed = Vec::new();
        for r in self.list().await? {
            if let Some(c) = r.comment.as_deref().filter(|c| pick(c)) {
                removed.push(c.to_owned());
                cmds.push(self.delete_cmd(&r));
            }
        }
        if !cmds.is_empty() {
            self.batch("delete rules of", cmds).await?;
        }
        Ok(removed)
    }

    /// Deletes `owner`'s rules; returns how many there were (0 if none, or no table, or
    /// no `nft`: idempotent).
    pub async fn remove(&self, owner: &Owner) -> Result<usize> {
        let comment = owner.to_string();
        Ok(self.remove_where(|c| c == comment).await?.len())
    }

    /// Deletes the rules whose owner has `tag` and a key `is_live` rejects; returns their
    /// owners. Rules with another comment are never touched.
    pub async fn reclaim(
        &self,
        tag: &Tag,
        is_live: impl Fn(&Owner) -> bool,
    ) -> Result<Vec<String>> {
        let mut owners = self
            .remove_where(|c| Owner::parse(c).is_some_and(|o| o.tag == *tag && !is_live(&o)))
            .await?;
        owners.dedup();
        Ok(owners)
    }

    /// Deletes the whole table (for an instance that stops for good); fine if it is gone.
    pub async fn delete_table(&self) -> Result<()> {
        let args = ["delete", "table", FAMILY, &self.table]
            .map(String::from)
            .to_vec();
        match self.run("delete", args, None).await {
            Ok(_) => Ok(()),
            Err(Error::Nft { detail, .. }) if detail.contains("No such file or directory") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The table name of instance `tag`.
pub fn table_name(tag: &Tag) -> String {
    format!(
        "paddock_{:08x}",
        crate::owner::fnv1a(tag.as_str().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::Key;

    #[test]
    fn rules_carry_their_owner_and_target_the_lease() {
        let tag = Tag::new("daemon:x").unwrap();
        let ns = crate::netns::open_host().unwrap();
        let nft = Nft::new(&tag, ns);
        assert_eq!(nft.table(), table_name(&tag));
        assert!(nft.table().starts_with("paddock_") && nft.table().len() == 16);
        let owner = Owner::new(tag, Key::new("k").unwrap());
        let mut pool = crate::LeasePool::new("10.9.0.0/24".parse().unwrap(), 30).unwrap();
        let lease = pool.allocate("k").unwrap();
        let rules = Rules {
            nat: true,
            publish: vec![Publish {
                host_port: 8080,
                sandbox_port: 80,
                protocol: Protocol::Tcp,
            }],
            isolate: true,
        };
        let cmds = nft.rule_cmds(&owner.to_string(), "pdk00000000", &lease, &rules);
        assert_eq!(cmds.len(), 5);
        for c in &cmds {
            assert_eq!(c["add"]["rule"]["comment"], "daemon:x+k");
            assert_eq!(c["add"]["rule"]["table"], nft.table());
        }
        let text = serde_json::to_string(&cmds).unwrap();
        assert!(text.contains(r#"{"masquerade":null}"#), "{text}");
        assert!(
            text.contains(r#"{"dnat":{"addr":"10.9.0.2","port":80}}"#),
            "{text}"
        );
        assert!(text.contains(r#""addr":"10.9.0.0","len":30"#), "{text}");
        assert!(Rules::default().is_empty());
        assert!(
            nft.rule_cmds("c", "pdk0", &lease, &Rules::default())
                .is_empty()
        );
    }
}
