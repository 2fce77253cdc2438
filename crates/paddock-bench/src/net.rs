//! `net-lifecycle`: a sandbox with its own network (veth pair, address, default route,
//! egress NAT rule), `/bin/true` in it, then everything removed — paddock's `veth` mode
//! against `ip-script`, the same steps done as orchestrators do them, one program run per
//! step (`ip netns add`, `ip link add … netns …`, `ip netns exec … ip addr/link/route`,
//! `nft add rule`, `ip netns exec … /bin/true`, `nft -a list` + `nft delete rule`, `ip
//! link del`, `ip netns del`). Also measured in the same rotation: paddock's plain
//! `lifecycle` (what networking adds) and `netns-pin`, creating and destroying a pinned
//! network namespace alone (paddock-net's `NetnsDir`: `unshare(CLONE_NEWNET)` on a
//! thread, a bind mount, then unmount and unlink; the kernel's own cost of a namespace).
//!
//! Addresses are of 198.18.0.0/15 (RFC 2544's benchmarking range). IPv4 forwarding is
//! not turned on (`/bin/true` sends nothing). The NAT rules go to tables of the bench's
//! own in the host's ruleset, deleted at the end, with every link and namespace.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_proc::Command;

use crate::cleanup::BenchRoot;
use crate::implementation::{Fut, Implementation};
use crate::report::{Machine, Row};
use crate::runtime::which;

/// The pool of paddock's sandboxes in this scenario.
pub const PADDOCK_POOL: &str = "198.18.128.0/20";
/// The /30 `ip-script` uses (one sandbox at a time).
const SCRIPT_HOST: &str = "198.18.144.1";
const SCRIPT_SANDBOX: &str = "198.18.144.2";
const SCRIPT_NET: &str = "198.18.144.0/30";

/// Where the bench pins paddock's namespaces and keeps its lease file.
pub fn net_dir(bench: &BenchRoot) -> PathBuf {
    PathBuf::from(format!("/run/paddock-bench-netns/{}", bench.name()))
}

/// `ip-script`: the orchestrators' way, one program per step.
pub struct IpScript {
    seq: u64,
    table: String,
    ready: Result<(), String>,
}

impl IpScript {
    /// Checks for `ip` and `nft` and makes its nftables table and chain (untimed).
    pub fn new() -> IpScript {
        let table = format!("pdkbench_{}", std::process::id());
        let ready = match (which("ip"), which("nft")) {
            (Some(_), Some(_)) => sh(&format!(
                "nft add table ip {table} && nft add chain ip {table} postrouting \
                 '{{ type nat hook postrouting priority 100 ; }}'"
            ))
            .map_err(|e| e.to_string()),
            _ => Err("needs ip (iproute2) and nft (nftables)".into()),
        };
        IpScript {
            seq: 0,
            table,
            ready,
        }
    }
}

impl Drop for IpScript {
    fn drop(&mut self) {
        let _ = sh(&format!("nft delete table ip {}", self.table));
    }
}

/// Runs `script` with `/bin/sh -e -c` through paddock-proc (reaper-safe); its stderr is
/// the error.
fn sh(script: &str) -> io::Result<()> {
    let out = Command::new("/bin/sh")
        .args(["-e", "-c", script])
        .output()
        .map_err(|e| io::Error::other(format!("run /bin/sh: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{script:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Implementation for IpScript {
    fn name(&self) -> &'static str {
        "ip-script"
    }
    fn unavailable(&self) -> Option<String> {
        self.ready.clone().err()
    }
    fn supports(&self, scenario: &str) -> bool {
        scenario == "net-lifecycle"
    }
    fn leak_dir(&self) -> &'static str {
        "ip-script"
    }
    fn net_lifecycle(&mut self) -> Fut<'_, Duration> {
        self.seq += 1;
        let ns = format!("pdkbench-{}-{}", std::process::id(), self.seq);
        let host = format!("pbs{:x}", self.seq % 0xfff_ffff);
        let t = self.table.clone();
        let script = format!(
            "ip netns add {ns}
ip link add {host} type veth peer name eth0 netns {ns}
ip addr add {SCRIPT_HOST}/30 dev {host}
ip link set {host} up
ip netns exec {ns} ip link set lo up
ip netns exec {ns} ip addr add {SCRIPT_SANDBOX}/30 dev eth0
ip netns exec {ns} ip link set eth0 up
ip netns exec {ns} ip route add default via {SCRIPT_HOST}
nft add rule ip {t} postrouting ip saddr {SCRIPT_NET} oifname != \"pbs*\" masquerade comment \"{ns}\"
ip netns exec {ns} /bin/true
h=$(nft -a list chain ip {t} postrouting | sed -n 's/.*comment \"{ns}\" # handle \\([0-9]*\\).*/\\1/p')
nft delete rule ip {t} postrouting handle $h
ip link del {host}
ip netns del {ns}"
        );
        Box::pin(async move {
            tokio::task::block_in_place(|| {
                let t0 = Instant::now();
                let r = sh(&script);
                let dt = t0.elapsed();
                if r.is_err() {
                    let _ = sh(&format!(
                        "ip link del {host} 2>/dev/null; ip netns del {ns} 2>/dev/null; true"
                    ));
                }
                r.map(|()| dt)
            })
        })
    }
}

/// One pinned namespace made and removed (paddock-net's `NetnsDir`), timed whole.
async fn netns_pin(dir: &Path, n: u64) -> io::Result<Duration> {
    let d = paddock_net::NetnsDir::new(dir);
    let name = format!("pin-{n}");
    let t0 = Instant::now();
    let fd = d
        .create(&name)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    drop(fd);
    d.delete(&name)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(t0.elapsed())
}

#[derive(Default)]
struct Acc {
    ok: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Acc {
    fn add(&mut self, r: io::Result<Duration>, measured: bool) {
        match r {
            Ok(d) if measured => self.ok.push(d),
            Ok(_) => {}
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
    fn row(self, m: &Machine, imp: &str, variant: Option<&str>) -> Row {
        let mut r = Row::from_samples(
            m,
            "net-lifecycle",
            imp,
            variant.map(str::to_owned),
            &self.ok,
            self.errors,
        );
        if let Some(e) = self.first_error {
            r.note = Some(format!("first error: {e}"));
        }
        r
    }
}

/// Counts what the scenario left: sandbox links (`pdk*`, `pbs*`), the bench's pinned
/// namespaces and `ip netns` entries.
fn net_leaks(dir: &Path) -> usize {
    let links = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("pdk") || n.starts_with("pbs")
                })
                .count()
        })
        .unwrap_or(0);
    let pins = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with("leases.json"))
                .count()
        })
        .unwrap_or(0);
    let netns = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pdkbench-"))
                .count()
        })
        .unwrap_or(0);
    links + pins + netns
}

/// The scenario: every active implementation's `net_lifecycle`, paddock's plain
/// `lifecycle` and `netns-pin`, interleaved (rotating which goes first), after warm-up.
pub async fn scenario(
    iterations: usize,
    warmup: usize,
    m: &Machine,
    bench: &BenchRoot,
    active: &mut [&mut Box<dyn Implementation>],
) -> Vec<Row> {
    let dir = net_dir(bench);
    let pins = dir.join("bench-pins");
    let k = active.len();
    let mut net: Vec<Acc> = (0..k).map(|_| Acc::default()).collect();
    let mut plain = Acc::default();
    let mut pin = Acc::default();
    let paddock = active.iter().position(|i| i.name() == "paddock");
    let slots = k + usize::from(paddock.is_some()) + 1;
    for i in 0..warmup + iterations {
        let measured = i >= warmup;
        for s in 0..slots {
            let slot = (i + s) % slots;
            if slot < k {
                let imp = &mut active[slot];
                let r = tokio::time::timeout(super_timeout(), imp.net_lifecycle()).await;
                net[slot].add(flatten(r), measured);
            } else if slot == k && paddock.is_some() {
                let imp = &mut active[paddock.unwrap_or_default()];
                let r = tokio::time::timeout(super_timeout(), imp.lifecycle()).await;
                plain.add(flatten(r), measured);
            } else {
                pin.add(netns_pin(&pins, i as u64).await, measured);
            }
        }
    }
    let _ = std::fs::remove_dir(&pins);
    let leaks = net_leaks(&dir);
    let mut rows: Vec<Row> = active
        .iter()
        .zip(net)
        .map(|(imp, acc)| {
            let mut r = acc.row(m, imp.name(), None);
            r.leaks = Some(leaks + bench.leaks(imp.leak_dir()));
            r
        })
        .collect();
    let p50 = |name: &str, rows: &[Row]| rows.iter().find(|r| r.imp == name).and_then(|r| r.p50_us);
    let (pd, ip) = (p50("paddock", &rows), p50("ip-script", &rows));
    let plain_row = paddock.map(|_| {
        let mut r = plain.row(m, "paddock", Some("no-network"));
        r.leaks = Some(bench.leaks("paddock"));
        r
    });
    if let (Some(pd), Some(plain_p50)) = (pd, plain_row.as_ref().and_then(|r| r.p50_us))
        && let Some(r) = rows.iter_mut().find(|r| r.imp == "paddock")
    {
        r.extra.insert(
            "network_adds_ms_p50".into(),
            (((pd - plain_p50) / 1e3 * 100.0).round() / 100.0).into(),
        );
    }
    if let (Some(pd), Some(ip)) = (pd, ip)
        && let Some(r) = rows.iter_mut().find(|r| r.imp == "ip-script")
    {
        r.extra.insert(
            "p50_over_paddock".into(),
            ((ip / pd * 100.0).round() / 100.0).into(),
        );
    }
    rows.extend(plain_row);
    let mut pr = pin.row(m, "netns-pin", None);
    pr.leaks = Some(leaks);
    rows.push(pr);
    rows
}

fn super_timeout() -> Duration {
    Duration::from_secs(60)
}

fn flatten(r: Result<io::Result<Duration>, tokio::time::error::Elapsed>) -> io::Result<Duration> {
    r.unwrap_or_else(|_| Err(io::Error::other("did not finish within 60 s")))
}

/// Removes what the scenario may have left: paddock's nftables table (of its owner tag)
/// and pin directory.
pub async fn cleanup(bench: &BenchRoot, owner: &str) {
    if let Ok(tag) = paddock_net::Tag::new(owner)
        && let Ok(host) = paddock_net::netns::open_host()
    {
        let nft = paddock_net::Nft::new(&tag, host);
        if let Err(e) = nft.delete_table().await {
            eprintln!("paddock-bench: could not delete paddock's nftables table: {e}");
        }
    }
    let dir = net_dir(bench);
    let d = paddock_net::NetnsDir::new(&dir);
    for n in d.list().unwrap_or_default() {
        let _ = d.delete(&n);
    }
    for f in ["leases.json", "leases.json.lock"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir("/run/paddock-bench-netns");
}
