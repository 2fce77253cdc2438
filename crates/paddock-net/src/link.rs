//! Netlink (rtnetlink) requests this crate makes, each mapped to an [`Error`] naming the
//! operation and the link.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result, libc_errno};
use crate::netns::on_thread;

/// A netlink connection in the network namespace `ns` (`None`: the process's): the
/// socket is made on a thread inside the namespace (a netlink socket stays bound to the
/// namespace it was created in), registered with the caller's tokio runtime, and driven
/// by a task on it. The task ends when the handle and its clones are dropped.
pub async fn connect(what: &str, ns: Option<OwnedFd>) -> Result<Handle> {
    let rt = tokio::runtime::Handle::current();
    let object = what.to_owned();
    let (conn, handle, _) = on_thread(what, ns, move || {
        let _guard = rt.enter();
        rtnetlink::new_connection().map_err(|e| Error::os("open netlink socket in", object, e))
    })
    .await?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A link's name.
pub fn name_of(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// A link's alias (`IFLA_IFALIAS`).
pub fn alias_of(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The link named `name`, or `None` if there is none.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc_errno::ENODEV => Ok(None),
        Err(e) => Err(Error::netlink("get link", name, e)),
    }
}

/// The index of the link named `name`; an error naming it if it is missing.
pub async fn index(h: &Handle, name: &str) -> Result<u32> {
    match get(h, name).await? {
        Some(m) => Ok(m.header.index),
        None => Err(Error::os(
            "find link",
            name,
            std::io::Error::from_raw_os_error(libc_errno::ENODEV),
        )),
    }
}

/// Every link of the namespace.
pub async fn dump(h: &Handle) -> Result<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list links", "(all)", e))
}

/// Creates the veth pair `name` — `peer` in the handle's namespace.
pub async fn add_veth(h: &Handle, name: &str, peer: &str) -> Result<()> {
    h.link()
        .add(LinkVeth::new(name, peer).build())
        .execute()
        .await
        .map_err(|e| Error::netlink("create veth pair", format!("{name}/{peer}"), e))
}

/// Creates the veth pair `name` — `peer` from the handle's namespace, with `name` made
/// directly in the namespace `ns` (`IFLA_NET_NS_FD`: no move, so no `synchronize_net`
/// of a namespace change) with the alias `alias` in the same request (the kernel applies
/// it at creation where it can; check with [`alias_of`]), and `peer` made in the handle's
/// namespace.
pub async fn add_veth_into(
    h: &Handle,
    name: &str,
    peer: &str,
    ns: &OwnedFd,
    alias: &str,
) -> Result<()> {
    let mut m = LinkVeth::new(name, peer).build();
    m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    m.attributes.push(LinkAttribute::IfAlias(alias.to_owned()));
    h.link()
        .add(m)
        .execute()
        .await
        .map_err(|e| Error::netlink("create veth pair", format!("{name}/{peer}"), e))
}

/// Sets the alias of link `index` (`name` for errors).
pub async fn set_alias(h: &Handle, index: u32, name: &str, alias: &str) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned()))
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink("set alias of link", name, e))
}

/// Moves link `index` into the namespace `ns`.
pub async fn move_to(h: &Handle, index: u32, name: &str, ns: &OwnedFd) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink("move link to namespace", name, e))
}

/// Sets link `index` up.
pub async fn up(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink("set link up", name, e))
}

/// Adds `addr/prefix` to link `index`.
pub async fn add_address(
    h: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<()> {
    h.address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
        .map_err(|e| {
            Error::netlink(
                "add address to link",
                format!("{name} ({addr}/{prefix})"),
                e,
            )
        })
}

/// The IPv4 addresses of link `index`, with their prefix lengths.
pub async fn ipv4_addresses(h: &Handle, index: u32, name: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
    use netlink_packet_route::address::AddressAttribute;
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list addresses of link", name, e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(IpAddr::V4(v4)) => Some((*v4, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// Adds the default route via `gateway` on link `index`.
pub async fn add_default_route(
    h: &Handle,
    index: u32,
    name: &str,
    gateway: Ipv4Addr,
) -> Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(|e| Error::netlink("add default route via", format!("{gateway} dev {name}"), e))
}

/// Deletes link `index`; `Ok(false)` if it is already gone.
pub async fn delete(h: &Handle, index: u32, name: &str) -> Result<bool> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc_errno::ENODEV => Ok(false),
        Err(e) => Err(Error::netlink("delete link", name, e)),
    }
}
