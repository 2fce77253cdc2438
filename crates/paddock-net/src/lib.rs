//! Sandbox-owned networking for paddock: the lowest layer of the supervisor's network
//! mode. It sits below `paddock-supervisor` and depends on no other paddock crate.
//!
//! For each sandbox, a [`Network`] creates
//! - a network namespace pinned at `<pin dir>/<tag>+<key>` ([`NetnsDir`], default
//!   [`DEFAULT_PIN_DIR`]), which a restarted supervisor finds by name;
//! - a veth pair: the host side `pdk<8 hex>` (alias `<tag>+<key>`), the peer `eth0`
//!   inside, addresses from a [`Lease`] of a [`LeasePool`], a default route via the host
//!   side, `lo` up;
//! - optional tap devices inside ([`TapSpec`]) with an owner uid/gid, multi-queue;
//! - optional nftables rules ([`Rules`]: egress NAT, published ports, isolation) in a
//!   table the instance owns ([`nft`]);
//!
//! and tears it down ([`Network::teardown`], idempotent) or reclaims what a crash left
//! ([`Network::reclaim`]: everything with this instance's tag whose key is not live;
//! nothing without the tag).
//!
//! # Threads and namespaces
//! A network namespace belongs to a thread. Nothing here ever calls `setns` or `unshare`
//! on the caller's thread (a tokio worker would carry the namespace into every task it
//! runs next): [`netns::on_thread`] does namespace work on a new std thread that ends
//! with it, and a netlink socket for a namespace is created on such a thread (a netlink
//! socket stays bound to the namespace it was created in), registered with the caller's
//! runtime, and used from async code.
//!
//! # Choice of crates
//! - **`rtnetlink`** (with `netlink-packet-route`; the rust-netlink project, also used
//!   by `youki`, `netavark` and `nispor`): async on tokio, typed messages for links,
//!   addresses and routes, and `from`/`new_connection` that let a socket be made on a
//!   thread inside a namespace. `neli` is lower level (hand-built attribute lists) with
//!   no typed veth or route builders; running `ip` costs a fork+exec per step and
//!   parses text.
//! - **tap devices** through the tun driver's ioctls (`rustix::ioctl`, 4 calls in
//!   `sys.rs`), because the kernel refuses tun/tap creation over rtnetlink; the `tun` /
//!   `tun-tap` crates wrap the same ioctls around an fd they keep open, with no
//!   `TUNSETOWNER`/`TUNSETGROUP`/persist control, and bring async stacks we do not need.
//! - **nftables through `nft -j -f -`** and `serde_json`: see [`nft`] for why not
//!   netlink or the `nftables` crate. Needs the `nft` binary (Debian: `nftables`) only
//!   when rules are asked for; without it, teardown and reclaim have no rules to remove.
//!   Each run is spawned by `paddock-proc` (the process's one reaper reaps it, so a
//!   subreaper's orphan sweep cannot steal its status) and bounded by a deadline
//!   ([`Nft::with_deadline`]); [`Network::teardown_with`] skips `nft` for a sandbox the
//!   caller knows had no rules.
//! - `unsafe`: only in `sys.rs` (`unshare(CLONE_NEWNET)`, the tun ioctls), each block
//!   with its `SAFETY` comment.
//!
//! # Ownership
//! See [`owner`]: the `<tag>+<key>` string is the namespace's file name and the host
//! link's alias. The veth pair is created by one request from inside the sandbox's
//! (already pinned and named) namespace, its host end made directly in the host (moving a
//! link between namespaces costs an RCU grace period, 20-40 ms), then both ends are
//! tagged. A crash at any step leaves either a tagged host link, or an untagged one whose
//! peer is `eth0` in a tagged namespace: reclaim deletes that `eth0` (and so the pair)
//! before unpinning the namespace.
//!
//! # Not done here
//! - IPv6: not configured (only IPv4 leases and an `ip` nftables table; `eth0` gets the
//!   kernel's link-local address).
//! - The pin directory's mount propagation is not made shared (as `ip netns add` does):
//!   a mount namespace copied while a namespace is pinned keeps a reference to it until
//!   that mount namespace ends.

pub mod error;
pub mod leases;
pub mod link;
pub mod netns;
mod network;
pub mod nft;
pub mod owner;
pub mod pool;
mod runner;
mod sys;
pub mod tap;

pub use error::{Error, Result};
pub use ipnet::Ipv4Net;
pub use leases::{DEFAULT_LEASE_FILE, Held, LeaseFile};
pub use netns::{DEFAULT_PIN_DIR, NetnsDir};
pub use network::{
    CREATE_STEPS, Network, ReclaimReport, SANDBOX_IFNAME, SandboxNet, SandboxSpec, StepHook,
};
pub use nft::{DEFAULT_NFT_DEADLINE, Nft, Protocol, Publish, Rules};
pub use owner::{Key, Owner, Tag};
pub use pool::{Lease, LeasePool, PoolError};
pub use tap::TapSpec;
