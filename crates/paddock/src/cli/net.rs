//! The `veth` network flags: the mode of one sandbox (`paddock run [-d] --net veth
//! [--nat] [--publish H:S[/tcp|udp]] [--isolate] [--tap NAME[:UID[:GID]][@ADDRESS/PREFIX]]`) and the
//! address pool and its coordination (`--net-pool`, shared by `serve` and `run`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use paddock_supervisor::{NetConfig, Network, Protocol, PublishSpec, TapSpec, VethSpec};

/// A sandbox's own network (see docs/network.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetArgs {
    /// `veth`: a network of the sandbox's own — a namespace, a veth pair to the host
    /// (`eth0` inside), a /30 of the pool with a default route via the host side; removed
    /// with the sandbox. Not with --netns.
    #[arg(long, value_name = "veth", value_parser = ["veth"])]
    pub net: Option<String>,
    /// With --net veth: egress NAT through the host.
    #[arg(long)]
    pub nat: bool,
    /// With --net veth: publish a host port, HOST:SANDBOX[/tcp|udp] (repeatable).
    #[arg(long, value_name = "HOST:SANDBOX[/PROTO]")]
    pub publish: Vec<String>,
    /// With --net veth: no traffic to or from other sandboxes.
    #[arg(long)]
    pub isolate: bool,
    /// With --net veth: a tap device inside, NAME[:UID[:GID]][@ADDRESS/PREFIX]
    /// (repeatable; the owner may attach to it, default a dynamic user's uid; the address,
    /// e.g. 172.31.0.1/30, is the tap's own, for the VM behind it to reach).
    #[arg(long, value_name = "NAME[:UID[:GID]][@ADDR/PREFIX]")]
    pub tap: Vec<String>,
}

impl NetArgs {
    /// The network these flags ask for (`None`: they ask for none, `--netns` decides).
    pub fn network(&self) -> Result<Option<Network>> {
        if self.net.is_none() {
            if self.nat || self.isolate || !self.publish.is_empty() || !self.tap.is_empty() {
                bail!("--nat, --publish, --isolate and --tap need --net veth");
            }
            return Ok(None);
        }
        let publish = self
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<Vec<_>>>()?;
        let taps = self
            .tap
            .iter()
            .map(|t| parse_tap(t))
            .collect::<Result<Vec<_>>>()?;
        let v = VethSpec {
            nat: self.nat,
            publish,
            isolate: self.isolate,
            taps,
        };
        if let Err(e) = v.validate() {
            bail!("--net veth: {e}");
        }
        Ok(Some(Network::Veth(v)))
    }
}

/// `HOST:SANDBOX[/tcp|udp]`.
pub fn parse_publish(s: &str) -> Result<PublishSpec> {
    let (ports, proto) = match s.split_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => bail!("--publish {s:?}: protocol {other:?} is not tcp or udp"),
        None => (s, Protocol::Tcp),
    };
    let Some((h, c)) = ports.split_once(':') else {
        bail!("--publish {s:?}: expected HOST:SANDBOX[/tcp|udp], e.g. 8080:80");
    };
    let port = |what: &str, v: &str| -> Result<u16> {
        match v.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => bail!("--publish {s:?}: {what} port {v:?} is not a port (1-65535)"),
        }
    };
    Ok(PublishSpec {
        host_port: port("host", h)?,
        sandbox_port: port("sandbox", c)?,
        protocol: proto,
    })
}

/// `NAME[:UID[:GID]][@ADDRESS/PREFIX]`.
pub fn parse_tap(s: &str) -> Result<TapSpec> {
    let (tap, address) = match s.split_once('@') {
        Some((t, a)) => (t, Some(a.to_owned())),
        None => (s, None),
    };
    let mut it = tap.split(':');
    let name = it.next().unwrap_or_default().to_owned();
    let id = |what: &str, v: Option<&str>| -> Result<Option<u32>> {
        match v {
            None => Ok(None),
            Some(v) => match v.parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => bail!("--tap {s:?}: {what} {v:?} is not a number"),
            },
        }
    };
    let uid = id("uid", it.next())?;
    let gid = id("gid", it.next())?;
    if it.next().is_some() {
        bail!("--tap {s:?}: expected NAME[:UID[:GID]][@ADDRESS/PREFIX]");
    }
    Ok(TapSpec {
        name,
        uid,
        gid: gid.or(uid),
        multi_queue: false,
        vnet_hdr: false,
        address,
    })
}

/// `paddock inspect --network`: the network of a sandbox for the terminal (every value
/// passed through [`crate::cli::term_safe`]).
pub fn render_network(i: &paddock_supervisor::SandboxInfo) -> String {
    use std::fmt::Write as _;
    let id = crate::cli::term_safe(i.id.as_str());
    let mode = match &i.spec.network {
        Network::Host => "host (the daemon's network namespace)".to_owned(),
        Network::Isolated => "isolated (a namespace with only loopback)".to_owned(),
        Network::Named(n) => format!("the named namespace {n}"),
        Network::Veth(_) => "veth".to_owned(),
    };
    let Some(n) = &i.network else {
        return format!(
            "{id}: network {}
",
            crate::cli::term_safe(&mode)
        );
    };
    let mut out = format!(
        "{id}: network veth
"
    );
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<10}{}", crate::cli::term_safe(&v));
    };
    line("namespace", n.netns.clone());
    line(
        "host link",
        format!("{} {}/30", n.host_ifname, n.host_address),
    );
    line(
        "sandbox",
        format!(
            "{} {} (subnet {}, gateway {})",
            n.sandbox_ifname, n.sandbox_address, n.subnet, n.host_address
        ),
    );
    line(
        "taps",
        if n.taps.is_empty() {
            "none".into()
        } else {
            n.taps.join(", ")
        },
    );
    let rules = if n.rules.is_empty() {
        "none".to_owned()
    } else {
        match &n.table {
            Some(t) => format!("{} (table {t})", n.rules.join(", ")),
            None => n.rules.join(", "),
        }
    };
    line("rules", rules);
    out
}

/// The address pool and where leases and namespaces are kept: the same for a daemon and
/// every `paddock run` of the machine, so their leases never collide.
#[derive(Debug, Clone, clap::Args)]
pub struct NetPoolArgs {
    /// The address pool of `veth` networks (each sandbox leases a /30 of it); leases are
    /// shared through /run/paddock/net/leases.json with every paddock of the machine.
    #[arg(long, value_name = "CIDR", default_value = paddock_supervisor::DEFAULT_NET_POOL)]
    pub net_pool: paddock_net_cidr::Cidr,
    /// The lease file (tests).
    #[arg(long, value_name = "PATH", hide = true, env = "PADDOCK_NET_LEASE_FILE")]
    pub net_lease_file: Option<PathBuf>,
    /// The directory the sandboxes' namespaces are pinned in (tests).
    #[arg(long, value_name = "DIR", hide = true, env = "PADDOCK_NET_PIN_DIR")]
    pub net_pin_dir: Option<PathBuf>,
    /// A pinned namespace that plays the host (tests).
    #[arg(long, value_name = "PATH", hide = true, env = "PADDOCK_NET_HOST_NETNS")]
    pub net_host_netns: Option<PathBuf>,
}

impl NetPoolArgs {
    /// Sets `cfg` from the flags.
    pub fn apply(&self, cfg: &mut NetConfig) {
        cfg.pool = self.net_pool.0;
        if let Some(p) = &self.net_lease_file {
            cfg.lease_file = p.clone();
        }
        if let Some(p) = &self.net_pin_dir {
            cfg.pin_dir = p.clone();
        }
        if self.net_host_netns.is_some() {
            cfg.host_netns = self.net_host_netns.clone();
        }
    }
}

/// `--net-pool`'s value.
pub mod paddock_net_cidr {
    use std::str::FromStr;

    /// An IPv4 CIDR that holds at least one /30.
    #[derive(Debug, Clone, Copy)]
    pub struct Cidr(pub paddock_supervisor::Ipv4Net);

    impl FromStr for Cidr {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let n: paddock_supervisor::Ipv4Net = s
                .parse()
                .map_err(|_| format!("{s:?} is not an IPv4 CIDR (example: 10.231.0.0/16)"))?;
            if n.prefix_len() > 30 {
                return Err(format!("{s:?}: the pool must hold at least one /30"));
            }
            Ok(Cidr(n.trunc()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_refuse() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.sandbox_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_publish("53:5353/udp").unwrap().protocol,
            Protocol::Udp
        );
        for bad in ["8080", "0:80", "80:x", "1:2/sctp", "70000:1"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        let t = parse_tap("tap0:1000").unwrap();
        assert_eq!(
            (t.name.as_str(), t.uid, t.gid),
            ("tap0", Some(1000), Some(1000))
        );
        let t = parse_tap("tap1:1:2").unwrap();
        assert_eq!((t.uid, t.gid), (Some(1), Some(2)));
        assert!(parse_tap("t:x").is_err() && parse_tap("t:1:2:3").is_err());
        let t = parse_tap("tap0:1@172.31.0.1/30").unwrap();
        assert_eq!(
            (t.uid, t.address.as_deref()),
            (Some(1), Some("172.31.0.1/30"))
        );
        assert_eq!(parse_tap("tap0").unwrap().address, None);
        let a = NetArgs {
            nat: true,
            ..Default::default()
        };
        assert!(a.network().is_err());
        let a = NetArgs {
            net: Some("veth".into()),
            tap: vec!["eth0".into()],
            ..Default::default()
        };
        assert!(
            a.network()
                .unwrap_err()
                .to_string()
                .contains("taps[0].name")
        );
        assert!("10.0.0.0/31".parse::<paddock_net_cidr::Cidr>().is_err());
    }
}
