//! Tap devices inside a sandbox's namespace, for a VMM (Firecracker, QEMU).
//!
//! Made with the tun driver's ioctls on `/dev/net/tun` (the kernel refuses to create
//! tun/tap devices over rtnetlink), on a thread inside the namespace: `TUNSETIFF`
//! (`IFF_TAP | IFF_NO_PI`, `IFF_VNET_HDR` and `IFF_MULTI_QUEUE` as asked),
//! `TUNSETOWNER`/`TUNSETGROUP` so the jailed user may attach, `TUNSETPERSIST` so the
//! device outlives the fd. The device ends with its namespace.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::netns::on_thread;
use crate::sys;

/// One tap device to create inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapSpec {
    /// The device name (1–15 bytes, no `/`, not `eth0` or `lo`).
    pub name: String,
    /// The uid allowed to attach (`TUNSETOWNER`); `None`: only `CAP_NET_ADMIN`.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The gid allowed to attach (`TUNSETGROUP`).
    #[serde(default)]
    pub gid: Option<u32>,
    /// `IFF_MULTI_QUEUE`: the VMM opens one fd per queue.
    #[serde(default)]
    pub multi_queue: bool,
    /// `IFF_VNET_HDR` (Firecracker and QEMU's vhost use it); the VMM's own `TUNSETIFF`
    /// must use the same flags.
    #[serde(default)]
    pub vnet_hdr: bool,
    /// The tap's own address inside the sandbox (`172.31.0.1/30`): the guest's side of the
    /// link is another address of that subnet, and the guest reaches the sandbox's
    /// namespace at this one. `None`: the tap has no address.
    #[serde(default)]
    pub address: Option<crate::Ipv4Net>,
}

impl TapSpec {
    /// A tap named `name`, no owner, single queue, no vnet header.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uid: None,
            gid: None,
            multi_queue: false,
            vnet_hdr: false,
            address: None,
        }
    }

    /// Checks the name ([`valid_tap_name`]).
    pub fn validate(&self) -> Result<()> {
        if !valid_tap_name(&self.name) {
            return Err(Error::Invalid {
                what: "tap name",
                value: self.name.clone(),
                reason: TAP_NAME_RULE,
            });
        }
        Ok(())
    }

    fn flags(&self) -> i16 {
        let mut f = sys::IFF_TAP | sys::IFF_NO_PI;
        if self.multi_queue {
            f |= sys::IFF_MULTI_QUEUE;
        }
        if self.vnet_hdr {
            f |= sys::IFF_VNET_HDR;
        }
        f
    }
}

/// What [`valid_tap_name`] accepts, in words (for error messages).
pub const TAP_NAME_RULE: &str = "1 to 15 of [A-Za-z0-9._-], not eth0, lo, . or ..";

/// Whether `name` is a tap name paddock creates: 1 to 15 bytes of `[A-Za-z0-9._-]`,
/// not `eth0` (the sandbox's veth end), `lo`, `.` or `..`. Stricter than the kernel
/// (which takes any byte but `/`, `:` and whitespace), so a name is safe in logs, paths
/// and nftables rules. The API checks names with this same function.
pub fn valid_tap_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !matches!(name, "eth0" | "lo" | "." | "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The operation named in the error when `/dev/net/tun` cannot be opened.
pub const OPEN_TUN: &str = "open /dev/net/tun for tap";

/// Creates the persistent tap `spec` inside the namespace `ns` (down; the caller sets it
/// up over netlink).
pub async fn create(ns: OwnedFd, spec: &TapSpec) -> Result<()> {
    spec.validate()?;
    let spec = spec.clone();
    on_thread(&spec.name.clone(), Some(ns), move || {
        let name = spec.name.as_str();
        let fd = rustix::fs::open(
            "/dev/net/tun",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::os(OPEN_TUN, name, e.into()))?;
        sys::tun_set_iff(&fd, name, spec.flags())
            .map_err(|e| Error::os("create tap (TUNSETIFF)", name, e))?;
        if let Some(uid) = spec.uid {
            sys::tun_set_owner(&fd, uid)
                .map_err(|e| Error::os("set tap owner (TUNSETOWNER)", name, e))?;
        }
        if let Some(gid) = spec.gid {
            sys::tun_set_group(&fd, gid)
                .map_err(|e| Error::os("set tap group (TUNSETGROUP)", name, e))?;
        }
        sys::tun_set_persist(&fd, true)
            .map_err(|e| Error::os("make tap persistent (TUNSETPERSIST)", name, e))?;
        Ok(())
    })
    .await
}

/// A tap device's settings as the kernel reports them (`IFLA_INFO_DATA` of kind `tun`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapInfo {
    /// `IFLA_TUN_OWNER` (`None`: no owner).
    pub uid: Option<u32>,
    /// `IFLA_TUN_GROUP`.
    pub gid: Option<u32>,
    /// `IFLA_TUN_TYPE` is `IFF_TAP`.
    pub is_tap: bool,
    /// `IFLA_TUN_MULTI_QUEUE`.
    pub multi_queue: bool,
    /// `IFLA_TUN_VNET_HDR`.
    pub vnet_hdr: bool,
    /// `IFLA_TUN_PERSIST`.
    pub persist: bool,
}

/// The tun/tap settings of link `m`, or `None` if it is not a tun/tap device.
pub fn info(m: &netlink_packet_route::link::LinkMessage) -> Option<TapInfo> {
    use netlink_packet_core::Nla;
    use netlink_packet_route::link::{InfoData, InfoTun, LinkAttribute, LinkInfo};
    let data = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Tun(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    })?;
    let mut info = TapInfo::default();
    for nla in data {
        let InfoTun::Other(nla) = nla else { continue };
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        let u32v = || {
            v.get(..4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let flag = || v.first().is_some_and(|b| *b != 0);
        // The kernel's `ifla_tun` attribute numbers (linux/if_link.h); owner and group
        // are u32 with -1 meaning none.
        match nla.kind() {
            1 => info.uid = u32v().filter(|u| *u != u32::MAX),
            2 => info.gid = u32v().filter(|g| *g != u32::MAX),
            3 => info.is_tap = v.first().is_some_and(|t| i16::from(*t) == sys::IFF_TAP),
            5 => info.vnet_hdr = flag(),
            6 => info.persist = flag(),
            7 => info.multi_queue = flag(),
            _ => {}
        }
    }
    Some(info)
}
