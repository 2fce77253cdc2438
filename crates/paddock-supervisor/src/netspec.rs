//! The `veth` network mode: what a spec asks for ([`VethSpec`]), its validation, and what
//! the supervisor reports it made ([`NetStatus`]). The work is in `net.rs`; the objects
//! are made by `paddock-net`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Most published ports per sandbox.
pub const MAX_PUBLISH: usize = 64;
/// Most tap devices per sandbox.
pub const MAX_TAPS: usize = 16;

/// `network: {"veth": {…}}`: a network namespace of the sandbox's own, pinned, with a
/// veth pair to the host (the host side `pdk<8 hex>`, the peer `eth0` inside, `lo` up),
/// addresses from the supervisor's pool ([`crate::NetConfig::pool`]: one /30 each) and a
/// default route via the host side; optional egress NAT, published ports, isolation from
/// other sandboxes, and tap devices inside. Everything is removed when the sandbox's
/// cgroup is gone, and reclaimed after a crash (see `docs/network.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VethSpec {
    /// Egress NAT: masquerade the sandbox's traffic out of the host's other interfaces (an
    /// nftables table the supervisor owns; IPv4 forwarding is turned on in the host
    /// namespace, see [`crate::NetConfig::ipv4_forwarding`]).
    #[serde(default)]
    pub nat: bool,
    /// Ports of the host forwarded to the sandbox (DNAT of traffic to any of the host's
    /// own addresses but loopback; at most [`MAX_PUBLISH`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub publish: Vec<PublishSpec>,
    /// No traffic between this sandbox and any other sandbox (rejected on the host).
    #[serde(default)]
    pub isolate: bool,
    /// Tap devices to create inside, for a VMM (at most [`MAX_TAPS`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub taps: Vec<TapSpec>,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishSpec {
    /// The host's port (1-65535).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub host_port: u16,
    /// The sandbox's port (1-65535).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub sandbox_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// One tap device inside the sandbox's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TapSpec {
    /// The device name: 1-15 of `[A-Za-z0-9._-]`, not `eth0`, `lo`, `.` or `..`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 15,
            pattern = r"^(?!(?:eth0|lo|\.|\.\.)$)[A-Za-z0-9._-]{1,15}$"
        )
    )]
    pub name: String,
    /// The host uid allowed to attach. Default: the jail's dynamic uid, or the jail's
    /// uid when it has no user namespace; without a jail, only `CAP_NET_ADMIN`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967294_u64))]
    pub uid: Option<u32>,
    /// The host gid allowed to attach (default as for `uid`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967294_u64))]
    pub gid: Option<u32>,
    /// One queue per fd (`IFF_MULTI_QUEUE`).
    #[serde(default)]
    pub multi_queue: bool,
    /// `IFF_VNET_HDR` (Firecracker and QEMU's vhost use it).
    #[serde(default)]
    pub vnet_hdr: bool,
    /// The tap's address inside the sandbox's namespace, with its prefix length
    /// (`172.31.0.1/30`): the VM behind the tap takes another address of that subnet and
    /// reaches the sandbox's namespace at this one. Dotted decimal without leading zeros
    /// and a prefix of 8 to 30 (else a 400); a unicast address that is not the subnet's
    /// first or last, and subnets that overlap neither each other nor the node's address
    /// pool (else a 422). Default: no address.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "172.31.0.1/30",
            pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([89]|[12][0-9]|30)$"
        )
    )]
    pub address: Option<String>,
}

/// Whether `a` is written as the schema's pattern of [`TapSpec::address`] says: four
/// decimal octets of 0-255 without leading zeros, `/`, a prefix of 8 to 30 without a
/// leading zero.
fn tap_address_syntax(a: &str) -> bool {
    let decimal = |s: &str, max: u32| {
        !s.is_empty()
            && s.len() <= 3
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'))
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    let Some((ip, prefix)) = a.split_once('/') else {
        return false;
    };
    let octets: Vec<&str> = ip.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| decimal(o, 255))
        && decimal(prefix, 30)
        && prefix.parse::<u32>().is_ok_and(|p| p >= 8)
}

/// The tap address `a` checked (see [`TapSpec::address`]): `Err((false, why))` when it is
/// not written as the schema says (a 400), `Err((true, why))` when it is but is not a
/// usable address (a 422).
fn parse_tap_address(a: &str) -> Result<paddock_net::Ipv4Net, (bool, String)> {
    if !tap_address_syntax(a) {
        return Err((
            false,
            format!("{a:?} is not an IPv4 address with a prefix length of 8 to 30 (172.31.0.1/30)"),
        ));
    }
    let net: paddock_net::Ipv4Net = a.parse().map_err(|e| (false, format!("{a:?}: {e}")))?;
    let ip = net.addr();
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || ip.octets()[0] >= 240 {
        return Err((true, format!("{a}: not a unicast address for a link")));
    }
    if ip == net.network() || ip == net.broadcast() {
        return Err((
            true,
            format!(
                "{a}: the first and last addresses of {} are its network and broadcast addresses",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

impl VethSpec {
    /// Checks every field, then that they fit together ([`VethSpec::check_consistency`]);
    /// the message names the field (`network.veth.publish[1].host_port: …`).
    pub fn validate(&self) -> Result<(), String> {
        self.validate_fields()?;
        self.check_consistency()
    }

    /// Checks each field on its own (what the API's schema states: a 400).
    pub fn validate_fields(&self) -> Result<(), String> {
        if self.publish.len() > MAX_PUBLISH {
            return Err(format!(
                "network.veth.publish: {} ports; at most {MAX_PUBLISH}",
                self.publish.len()
            ));
        }
        for (i, p) in self.publish.iter().enumerate() {
            if p.host_port == 0 {
                return Err(format!(
                    "network.veth.publish[{i}].host_port: 0 is not a port (1-65535)"
                ));
            }
            if p.sandbox_port == 0 {
                return Err(format!(
                    "network.veth.publish[{i}].sandbox_port: 0 is not a port (1-65535)"
                ));
            }
        }
        if self.taps.len() > MAX_TAPS {
            return Err(format!(
                "network.veth.taps: {} taps; at most {MAX_TAPS}",
                self.taps.len()
            ));
        }
        for (i, t) in self.taps.iter().enumerate() {
            if !paddock_net::tap::valid_tap_name(&t.name) {
                return Err(format!(
                    "network.veth.taps[{i}].name: {:?} is not a usable device name ({})",
                    t.name,
                    paddock_net::tap::TAP_NAME_RULE
                ));
            }
            if let Some(a) = &t.address
                && let Err((false, e)) = parse_tap_address(a)
            {
                return Err(format!("network.veth.taps[{i}].address: {e}"));
            }
            for (what, id) in [("uid", t.uid), ("gid", t.gid)] {
                if id == Some(u32::MAX) {
                    return Err(format!(
                        "network.veth.taps[{i}].{what}: 4294967295 is not an id (it means none to the kernel); at most 4294967294"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the fields fit together (the API's 422): no host port published
    /// twice, no tap name given twice.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, p) in self.publish.iter().enumerate() {
            if !seen.insert((p.host_port, p.protocol)) {
                return Err(format!(
                    "network.veth.publish[{i}].host_port: {}/{} is published twice",
                    p.host_port,
                    p.protocol.as_str()
                ));
            }
        }
        let mut names = HashSet::new();
        let mut subnets: Vec<(usize, paddock_net::Ipv4Net)> = Vec::new();
        for (i, t) in self.taps.iter().enumerate() {
            if !names.insert(&t.name) {
                return Err(format!(
                    "network.veth.taps[{i}].name: {:?} is given twice",
                    t.name
                ));
            }
            let Some(a) = t.address.as_deref() else {
                continue;
            };
            let net = parse_tap_address(a)
                .map_err(|(_, e)| format!("network.veth.taps[{i}].address: {e}"))?;
            if let Some((j, other)) = subnets.iter().find(|(_, o)| overlap(o, &net)) {
                return Err(format!(
                    "network.veth.taps[{i}].address: {} overlaps network.veth.taps[{j}].address ({})",
                    net.trunc(),
                    other.trunc()
                ));
            }
            subnets.push((i, net));
        }
        Ok(())
    }

    /// The first tap whose subnet overlaps `pool` (the node's address pool): its index and
    /// subnet. Such a tap would shadow the routes of the sandbox's `eth0`.
    pub(crate) fn tap_in_pool(&self, pool: &paddock_net::Ipv4Net) -> Option<(usize, String)> {
        self.taps.iter().enumerate().find_map(|(i, t)| {
            let net = parse_tap_address(t.address.as_deref()?).ok()?;
            overlap(&net, pool).then(|| (i, net.trunc().to_string()))
        })
    }

    /// The published host ports as the lease file keeps them (`8080/tcp`).
    pub(crate) fn published(&self) -> Vec<String> {
        self.publish
            .iter()
            .map(|p| format!("{}/{}", p.host_port, p.protocol.as_str()))
            .collect()
    }

    /// Whether any nftables rule is asked for.
    pub fn has_rules(&self) -> bool {
        !self.rules().is_empty()
    }

    /// The nftables part, for `paddock-net`.
    pub(crate) fn rules(&self) -> paddock_net::Rules {
        paddock_net::Rules {
            nat: self.nat,
            publish: self
                .publish
                .iter()
                .map(|p| paddock_net::Publish {
                    host_port: p.host_port,
                    sandbox_port: p.sandbox_port,
                    protocol: match p.protocol {
                        Protocol::Tcp => paddock_net::Protocol::Tcp,
                        Protocol::Udp => paddock_net::Protocol::Udp,
                    },
                })
                .collect(),
            isolate: self.isolate,
        }
    }

    /// The taps for `paddock-net`, with `owner` (uid, gid) where a tap names none.
    pub(crate) fn taps(&self, owner: Option<(u32, u32)>) -> Vec<paddock_net::TapSpec> {
        self.taps
            .iter()
            .map(|t| paddock_net::TapSpec {
                name: t.name.clone(),
                uid: t.uid.or(owner.map(|o| o.0)),
                gid: t.gid.or(owner.map(|o| o.1)),
                multi_queue: t.multi_queue,
                vnet_hdr: t.vnet_hdr,
                // Checked by `validate_fields` before any network is made.
                address: t.address.as_deref().and_then(|a| parse_tap_address(a).ok()),
            })
            .collect()
    }

    /// Human-readable lines for the rules (`nat`, `publish 8080->80/tcp`, `isolate`).
    pub(crate) fn rule_lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.nat {
            v.push("nat".to_owned());
        }
        for p in &self.publish {
            v.push(format!(
                "publish {}->{}/{}",
                p.host_port,
                p.sandbox_port,
                p.protocol.as_str()
            ));
        }
        if self.isolate {
            v.push("isolate".to_owned());
        }
        v
    }
}

/// Whether two subnets share an address.
fn overlap(a: &paddock_net::Ipv4Net, b: &paddock_net::Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A sandbox's network as the supervisor made it (or, in the record written before it
/// is made, as it is going to make it: every object's name is known from the owner and
/// the lease before the first one exists, so a crash at any step is reclaimed by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetStatus {
    /// The owner string `<supervisor owner>+<lifecycle>`: the namespace's pin name, the
    /// links' alias, the rules' comment.
    pub owner: String,
    /// The namespace's pin file.
    pub netns: String,
    /// The host side of the veth pair.
    pub host_ifname: String,
    /// The sandbox side (`eth0`).
    pub sandbox_ifname: String,
    /// The sandbox's subnet (a /30 of the pool).
    pub subnet: String,
    /// The host side's address (the sandbox's default gateway).
    pub host_address: String,
    /// The sandbox side's address.
    pub sandbox_address: String,
    /// The taps inside.
    pub taps: Vec<String>,
    /// The nftables rules (`nat`, `publish H->S/proto`, `isolate`).
    pub rules: Vec<String>,
    /// The nftables table holding them (`ip paddock_<8 hex>`), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl NetStatus {
    /// The lease it records (`None` if the record is damaged).
    pub(crate) fn lease(&self, key: &str) -> Option<paddock_net::Lease> {
        Some(paddock_net::Lease {
            key: key.to_owned(),
            subnet: self.subnet.parse().ok()?,
            host: self.host_address.parse().ok()?,
            sandbox: self.sandbox_address.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Result<VethSpec, String> {
        let s: VethSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn valid_and_invalid_specs() {
        let s = spec(
            json!({"nat": true, "publish": [{"host_port": 8080, "sandbox_port": 80}],
            "isolate": true, "taps": [{"name": "tap0", "uid": 1000}]}),
        )
        .unwrap();
        assert_eq!(s.publish[0].protocol, Protocol::Tcp);
        assert!(s.has_rules());
        assert_eq!(s.rule_lines(), ["nat", "publish 8080->80/tcp", "isolate"]);
        assert_eq!(s.taps(Some((7, 8)))[0].uid, Some(1000));
        assert_eq!(s.taps(Some((7, 8)))[0].gid, Some(8));
        let s = spec(json!({"taps": [{"name": "a", "address": "172.31.0.1/30"},
            {"name": "b", "address": "172.31.0.5/30"}]}))
        .unwrap();
        assert_eq!(
            s.taps(None)[1].address,
            Some("172.31.0.5/30".parse().unwrap())
        );
        assert_eq!(s.tap_in_pool(&"10.231.0.0/16".parse().unwrap()), None);
        assert_eq!(
            s.tap_in_pool(&"172.31.0.4/30".parse().unwrap()),
            Some((1, "172.31.0.4/30".to_owned()))
        );
        // Whatever passes here, paddock-net accepts when it makes the tap.
        for name in ["tap0", "t.1", "fc_tap-9", "a23456789012345"] {
            let s = spec(json!({"taps": [{"name": name}]})).unwrap();
            s.taps(None)[0].validate().unwrap();
        }
        assert!(!spec(json!({})).unwrap().has_rules());
        for (bad, field) in [
            (
                json!({"publish": [{"host_port": 0, "sandbox_port": 80}]}),
                "publish[0].host_port",
            ),
            (
                json!({"publish": [{"host_port": 1, "sandbox_port": 0}]}),
                "publish[0].sandbox_port",
            ),
            (
                json!({"publish": [{"host_port": 1, "sandbox_port": 2}, {"host_port": 1, "sandbox_port": 3}]}),
                "publish[1].host_port",
            ),
            (json!({"taps": [{"name": "eth0"}]}), "taps[0].name"),
            (json!({"taps": [{"name": "a/b"}]}), "taps[0].name"),
            // Names the kernel takes but paddock-net refuses: refused here, as a 400,
            // not when the network is made (a 500 the API fuzzer found).
            (
                json!({"taps": [{"name": "ok"}, {"name": "$\\"}]}),
                "taps[1].name",
            ),
            (json!({"taps": [{"name": "a<b"}]}), "taps[0].name"),
            (
                json!({"taps": [{"name": "t", "address": "172.31.0.1"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "t", "address": "172.31.0.0/30"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "t", "address": "172.31.0.3/30"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "t", "address": "172.31.0.1/31"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "t", "address": "127.0.0.2/8"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "t", "address": "::1/64"}]}),
                "taps[0].address",
            ),
            (
                json!({"taps": [{"name": "a", "address": "172.31.0.1/30"},
                    {"name": "b", "address": "172.31.0.2/24"}]}),
                "taps[1].address",
            ),
            (
                json!({"taps": [{"name": "tap-with-a-long-name"}]}),
                "taps[0].name",
            ),
            (
                json!({"taps": [{"name": "t"}, {"name": "t"}]}),
                "taps[1].name",
            ),
        ] {
            let e = spec(bad.clone()).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
        // Unknown fields and bad shapes are refused by the decoder.
        assert!(spec(json!({"nat": true, "natt": true})).is_err());
        assert!(spec(json!({"publish": [{"host_port": 70000, "sandbox_port": 1}]})).is_err());
        assert!(
            spec(json!({"publish": [{"host_port": 1, "sandbox_port": 1, "protocol": "sctp"}]}))
                .is_err()
        );
    }
}
