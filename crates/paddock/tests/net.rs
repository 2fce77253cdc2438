//! `veth` networks end to end, as root on the real kernel: through the daemon's API (an
//! exhausted pool is a 429 saying so; `inspect --network`; the metrics), across a
//! SIGKILL of the daemon and its restart (the live sandbox stays connected, the dead
//! one's network and lease are reclaimed), and in the foreground (`paddock run --net
//! veth`), whose leases come from the same lease file as the daemon's. Pools and
//! addresses are in 198.18.0.0/15 only; no rule is made in the host's ruleset.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, World, metric, world};
use serde_json::{Value, json};

/// A test's pin directory and lease file, and a guard that removes whatever a failed test
/// left there (host links by their names, derived from the pins, then the pins).
struct NetDirs {
    pin_dir: PathBuf,
    lease_file: PathBuf,
}

impl NetDirs {
    fn new(test: &str) -> Self {
        let pin_dir = PathBuf::from(format!(
            "/run/paddock-test-netns/{test}-{}",
            std::process::id()
        ));
        Self {
            lease_file: pin_dir.with_extension("leases.json"),
            pin_dir,
        }
    }

    fn args<'a>(&'a self, pool: &'a str) -> Vec<String> {
        vec![
            "--net-pool".into(),
            pool.into(),
            "--net-lease-file".into(),
            self.lease_file.display().to_string(),
            "--net-pin-dir".into(),
            self.pin_dir.display().to_string(),
        ]
    }

    fn pins(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.pin_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn leases(&self) -> Vec<Value> {
        match std::fs::read(&self.lease_file) {
            Ok(b) if !b.is_empty() => serde_json::from_slice::<Value>(&b).unwrap()["leases"]
                .as_array()
                .unwrap()
                .clone(),
            _ => vec![],
        }
    }
}

/// The host link of the pinned owner `name` (paddock-net's rule: `pdk` and 8 hex digits
/// of FNV-1a).
fn host_link(name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("pdk{h:08x}")
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Drop for NetDirs {
    fn drop(&mut self) {
        for p in self.pins() {
            let _ = Command::new("ip")
                .args(["link", "delete", &host_link(&p)])
                .stderr(Stdio::null())
                .status();
            let path = self.pin_dir.join(&p);
            let _ = Command::new("umount").arg("-l").arg(&path).status();
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
        let _ = std::fs::remove_file(&self.lease_file);
        let mut lock = self.lease_file.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
        // Last, once this test's files are gone (ENOTEMPTY while another test runs).
        let _ = std::fs::remove_dir("/run/paddock-test-netns");
    }
}

fn unavailable(test: &str) -> bool {
    if !Path::new("/dev/net/tun").exists() {
        paddock_testutil::skip(test, "/dev/net/tun is missing (tun module not loaded)");
        return true;
    }
    false
}

fn veth_spec(id: &str, veth: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "command": "/bin/sh", "args": ["-c", "exec sleep 600"],
        "network": {"veth": veth},
        "stop": { "grace_period_ms": 1000, "kill_timeout_ms": 5000 }
    }))
    .unwrap()
}

/// Listens inside the namespace pinned at `ns` on `ip` (any port) and answers one
/// connection; returns the port once bound.
fn serve_in(ns: &str, ip: &str) -> (std::thread::JoinHandle<()>, u16) {
    let f = std::fs::File::open(ns).unwrap();
    let ip: std::net::IpAddr = ip.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let l = TcpListener::bind((ip, 0)).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"inside").unwrap();
    });
    (h, rx.recv_timeout(Duration::from_secs(10)).unwrap())
}

/// [`ping`] from a thread inside the namespace pinned at `ns`.
fn ping_in(ns: &str, ip: &str, port: u16) -> Vec<u8> {
    let f = std::fs::File::open(ns).unwrap();
    let ip = ip.to_owned();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        ping(&ip, port)
    })
    .join()
    .unwrap()
}

fn ping(ip: &str, port: u16) -> Vec<u8> {
    let to = SocketAddr::new(ip.parse().unwrap(), port);
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// The pool has room for one sandbox: the second start is a 429 saying the pool is
/// exhausted, and changes nothing; `inspect --network` and the metrics show the first.
#[test]
fn an_exhausted_pool_is_a_429_and_inspect_shows_the_network() {
    let test = "net_api_pool";
    let Some(w) = world(test) else { return };
    if unavailable(test) {
        return;
    }
    let n = NetDirs::new(test);
    let args = n.args("198.18.70.0/30");
    let d = w.daemon(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = w.http("POST", "/v1/sandboxes", Some(&veth_spec("one", json!({}))));
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    assert_eq!(info["network"]["subnet"], "198.18.70.0/30", "{info}");
    let r = w.http("POST", "/v1/sandboxes", Some(&veth_spec("two", json!({}))));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.error().contains("pool") && r.error().contains("exhausted"),
        "{}",
        r.error()
    );
    assert_eq!(n.pins().len(), 1);
    assert_eq!(n.leases().len(), 1);

    let shown = w.cli_ok(&["inspect", "one", "--network"]);
    let host_if = info["network"]["host_ifname"].as_str().unwrap();
    for want in [
        host_if,
        "198.18.70.1",
        "198.18.70.2",
        "eth0",
        "taps      none",
        "rules     none",
    ] {
        assert!(shown.contains(want), "{want:?} not in:\n{shown}");
    }
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(metric(&m, "paddock_net_namespaces"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "paddock_net_leases"), Some(1.0), "{m}");

    // A bad value is a 400 naming the field; nothing is made.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&veth_spec("bad", json!({"taps": [{"name": "eth0"}]}))),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("taps[0].name"), "{}", r.error());

    w.cli_ok(&["stop", "one"]);
    assert!(n.pins().is_empty());
    assert!(n.leases().is_empty());
    assert!(!link_exists(host_if));
    drop(d);
    w.assert_no_leaks();
}

/// SIGKILL of the daemon, a sandbox that dies while it is down, then a restart: the live
/// one is adopted with its network (still connected, lease kept), the dead one's network
/// and lease are reclaimed and counted.
#[test]
fn a_killed_daemon_restarts_with_live_networks_and_reclaims_dead_ones() {
    let test = "net_daemon_crash";
    let Some(w) = world(test) else { return };
    if unavailable(test) {
        return;
    }
    let n = NetDirs::new(test);
    let args = n.args("198.18.71.0/28");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = w.daemon(&args);
    let live = w
        .http("POST", "/v1/sandboxes", Some(&veth_spec("live", json!({}))))
        .json();
    let dead = w
        .http("POST", "/v1/sandboxes", Some(&veth_spec("dead", json!({}))))
        .json();
    assert_eq!(n.pins().len(), 2);
    d.sigkill();

    // "dead" dies while no daemon runs, and its cgroup goes.
    let cg = PathBuf::from(dead["cgroup_path"].as_str().unwrap());
    std::fs::write(cg.join("cgroup.kill"), "1").unwrap();
    common::wait_for(
        Duration::from_secs(10),
        "the dead sandbox's cgroup to go",
        || std::fs::remove_dir(&cg).ok(),
    );

    let d2 = w.daemon(&args);
    let live_net = &live["network"];
    let dead_net = &dead["network"];
    let dead_owner = dead_net["owner"].as_str().unwrap();
    common::wait_for(
        Duration::from_secs(10),
        "the dead sandbox's network reclaimed",
        || (!n.pins().iter().any(|p| p == dead_owner)).then_some(()),
    );
    assert_eq!(
        n.pins(),
        vec![live_net["owner"].as_str().unwrap().to_owned()]
    );
    assert!(!link_exists(dead_net["host_ifname"].as_str().unwrap()));
    assert!(link_exists(live_net["host_ifname"].as_str().unwrap()));
    let leases = n.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["lease"]["subnet"], live_net["subnet"]);
    // Still connected.
    let (srv, port) = serve_in(
        live_net["netns"].as_str().unwrap(),
        live_net["sandbox_address"].as_str().unwrap(),
    );
    assert_eq!(
        ping(live_net["sandbox_address"].as_str().unwrap(), port),
        b"inside"
    );
    srv.join().unwrap();
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_net_reclaimed_total{kind=\"namespace\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "paddock_net_reclaimed_total{kind=\"lease\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "paddock_net_leases"), Some(1.0), "{m}");

    w.cli_ok(&["stop", "live"]);
    assert!(n.pins().is_empty());
    assert!(n.leases().is_empty());
    drop(d2);
    w.assert_no_leaks();
}

fn run_fg(
    w: &World,
    n: &NetDirs,
    pool: &str,
    extra: &[&str],
    script: &str,
) -> std::process::Output {
    let mut args = vec![
        "run".to_owned(),
        "--cgroup-root".into(),
        w.cgroot.display().to_string(),
    ];
    args.extend(n.args(pool));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--".into(), "/bin/sh".into(), "-c".into(), script.into()]);
    Command::new(BIN)
        .args(&args)
        .env_remove("PADDOCK_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `paddock run --net veth` in the foreground: the payload has `eth0` with the lease's
/// address and a tap; afterwards nothing is left. Its lease comes from the same file as a
/// daemon's: with the daemon holding the pool's only /30, the run is refused (125) and
/// says the pool is exhausted.
#[test]
fn a_foreground_run_shares_the_daemons_pool() {
    let test = "net_run";
    let Some(w) = world(test) else { return };
    if unavailable(test) {
        return;
    }
    let n = NetDirs::new(test);
    let pool = "198.18.72.0/30";
    let out = run_fg(
        &w,
        &n,
        pool,
        &["--net", "veth", "--tap", "tap0:4242"],
        "cat /proc/net/fib_trie | grep -c 198.18.72.2; ls /proc/sys/net/ipv4/conf",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.lines().next().is_some_and(|l| l.trim() != "0"),
        "{stdout}"
    );
    for dev in ["eth0", "tap0", "lo"] {
        assert!(stdout.lines().any(|l| l == dev), "{dev} not in:\n{stdout}");
    }
    assert!(n.pins().is_empty(), "{:?}", n.pins());
    assert!(n.leases().is_empty());

    let args = n.args(pool);
    let d = w.daemon(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&veth_spec("holder", json!({}))),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let out = run_fg(&w, &n, pool, &["--net", "veth"], "exit 0");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exhausted"), "{err}");
    assert_eq!(n.leases().len(), 1);
    w.cli_ok(&["stop", "holder"]);
    drop(d);
    assert!(n.pins().is_empty());
    w.assert_no_leaks();
}

/// A named namespace (`ip netns add`) that plays the host for the daemon, so the rules
/// land in its ruleset, not the machine's; deleted on drop.
struct Router(String);

impl Router {
    fn new(test: &str) -> Self {
        let name = format!("paddock-t-{test}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success());
        Router(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    /// `ip -n ROUTER -o link` lines of sandbox links, and the comments of nftables rules.
    fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let links = Command::new("ip")
            .args(["-n", &self.0, "-o", "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter(|l| l.contains(": pdk"))
            .map(str::to_owned)
            .collect();
        let rules = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| l.contains("comment"))
            .map(str::to_owned)
            .collect();
        (links, rules)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// `kill -9` of the daemon between every step of a network's creation (namespace, veth
/// pair, the host side, the inside, the taps, the rules), then a restart: nothing of the
/// killed create is left — no pinned namespace, no link, no rule, no lease — and a live
/// sandbox made before stays adopted and connected through every crash.
#[test]
fn a_daemon_killed_at_each_step_of_a_network_leaves_nothing() {
    let test = "net_kill_steps";
    let Some(w) = world(test) else { return };
    if unavailable(test) {
        return;
    }
    let nft = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()));
    if !nft {
        paddock_testutil::skip(test, "nft is not installed (Debian package nftables)");
        return;
    }
    let n = NetDirs::new(test);
    let router = Router::new("kill");
    let mut args = n.args("198.18.73.0/28");
    args.extend(["--net-host-netns".into(), router.path()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let body = veth_spec(
        "s",
        json!({"nat": true, "isolate": true, "publish": [{"host_port": 8080, "sandbox_port": 80}],
               "taps": [{"name": "tap0", "uid": 4242}]}),
    );
    // A live sandbox made before the crashes: every restart adopts it, connected.
    let mut d0 = w.daemon(&args);
    let r = w.http("POST", "/v1/sandboxes", Some(&veth_spec("live", json!({}))));
    assert_eq!(r.status, 201, "{}", r.text());
    let live = r.json()["network"].clone();
    let live_owner = live["owner"].as_str().unwrap().to_owned();
    let live_ip = live["sandbox_address"].as_str().unwrap().to_owned();
    d0.sigkill();
    for step in ["netns", "veth", "host", "inside", "taps", "rules"] {
        let point = format!("net:{step}");
        let mut d = w.spawn_daemon_env(&args, &[("PADDOCK_TEST_PAUSE_AT", point.as_str())]);
        d.wait_ready();
        let (socket, b) = (w.socket.clone(), body.clone());
        let req = std::thread::spawn(move || {
            common::try_http_unix(&socket, "POST", "/v1/sandboxes", Some(&b), &[])
        });
        d.wait_log("test hook: create paused", Duration::from_secs(20));
        assert_eq!(n.pins().len(), 2, "{step}: the namespace is made");
        d.sigkill();
        assert!(
            req.join().unwrap().is_err(),
            "{step}: the create never answered"
        );

        let mut d2 = w.daemon(&args);
        common::wait_for(
            Duration::from_secs(10),
            "the reclaim after the restart",
            || (n.pins() == [live_owner.clone()] && n.leases().len() == 1).then_some(()),
        );
        let (links, rules) = router.leftovers();
        assert_eq!(
            links.len(),
            1,
            "{step}: only the live sandbox's link: {links:?}"
        );
        assert!(rules.is_empty(), "{step}: rules left: {rules:?}");
        let list = w.http("GET", "/v1/sandboxes", None).json();
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["id"].as_str())
            .collect();
        assert_eq!(ids, ["live"], "{step}");
        // The live sandbox is still connected, from the namespace playing the host.
        let (srv, port) = serve_in(live["netns"].as_str().unwrap(), &live_ip);
        assert_eq!(ping_in(&router.path(), &live_ip, port), b"inside", "{step}");
        srv.join().unwrap();
        d2.sigkill();
    }
    let d3 = w.daemon(&args);
    w.cli_ok(&["stop", "live"]);
    assert!(n.pins().is_empty() && n.leases().is_empty());
    drop(d3);
    w.assert_no_leaks();
}

/// A `paddock run --net veth` killed with SIGKILL: its guardian removes the sandbox's
/// cgroup, and its network and lease wait for the next paddock that uses the lease file;
/// the next `paddock run --net veth` drops the dead run's lease and removes its link and
/// namespace before it starts its own.
#[test]
fn a_killed_runs_network_is_reclaimed_by_the_next_run() {
    let test = "net_run_killed";
    let Some(w) = world(test) else { return };
    if unavailable(test) {
        return;
    }
    let n = NetDirs::new(test);
    let pool = "198.18.74.0/30";
    let mut args = vec![
        "run".to_owned(),
        "--cgroup-root".into(),
        w.cgroot.display().to_string(),
        "--net".into(),
        "veth".into(),
    ];
    args.extend(n.args(pool));
    args.extend(["--".into(), "sleep".into(), "600".into()]);
    let mut first = Command::new(BIN)
        .args(&args)
        .env_remove("PADDOCK_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for(Duration::from_secs(20), "the first run's network", || {
        (n.pins().len() == 1 && n.leases().len() == 1 && !w.cgroups().is_empty()).then_some(())
    });
    let pin = n.pins().remove(0);
    let _ = first.kill();
    let _ = first.wait();
    // The guardian removes the cgroup; the network is left.
    common::wait_for(Duration::from_secs(10), "the guardian's cleanup", || {
        w.cgroups().is_empty().then_some(())
    });
    assert_eq!(n.pins(), vec![pin.clone()]);
    assert!(link_exists(&host_link(&pin)));

    let out = run_fg(&w, &n, pool, &["--net", "veth"], "exit 0");
    assert!(out.status.success(), "{out:?}");
    assert!(n.pins().is_empty(), "{:?}", n.pins());
    assert!(n.leases().is_empty(), "{:?}", n.leases());
    assert!(!link_exists(&host_link(&pin)));
    w.assert_no_leaks();
}
