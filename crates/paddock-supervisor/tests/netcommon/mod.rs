//! Support of the `veth` network tests: a per-test owner tag, pin directory, lease file
//! and pool (198.18.0.0/15 only), an optional "router" namespace playing the host and an
//! "uplink" one playing the internet, and a guard that removes every network object the
//! test's tag owns, even when the test fails.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use paddock_net::{NetnsDir, Network, Tag, link};
use paddock_supervisor::{Config, Hooks, LifecycleId, Persisting, Record, SandboxId, persisted};

pub const ROUTER_UP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn net_unavailable(test: &str, rules: bool) -> bool {
    if let Some(reason) = paddock_testutil::root_tests_unavailable() {
        paddock_testutil::skip(test, &reason);
        return true;
    }
    if !Path::new("/dev/net/tun").exists() {
        paddock_testutil::skip(test, "/dev/net/tun is missing (tun module not loaded)");
        return true;
    }
    let nft = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()));
    if rules && !nft {
        paddock_testutil::skip(test, "nft is not installed (Debian package nftables)");
        return true;
    }
    false
}

/// One test's network configuration and its cleanup.
pub struct NetGuard {
    pub owner: String,
    pub pin_dir: PathBuf,
    pub lease_file: PathBuf,
    pub pool: String,
    /// Whether a router namespace plays the host.
    pub router: bool,
}

impl NetGuard {
    /// `pool`: a CIDR inside 198.18.0.0/15.
    pub fn new(test: &str, pool: &str, router: bool) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let pin_dir = PathBuf::from(format!("/run/paddock-test-netns/{test}-{pid}-{n}"));
        let owner = format!("daemon:{:08x}{:08x}{:016x}", pid, n, 0xabcdu64);
        Self {
            owner,
            lease_file: pin_dir.with_extension("leases.json"),
            pin_dir,
            pool: pool.to_owned(),
            router,
        }
    }

    pub fn tag(&self) -> Tag {
        Tag::new(self.owner.clone()).unwrap()
    }

    pub fn router_path(&self) -> PathBuf {
        self.pin_dir.join("router")
    }

    pub fn uplink_path(&self) -> PathBuf {
        self.pin_dir.join("uplink")
    }

    /// Applies the test's network configuration to `cfg`.
    pub fn configure(&self, cfg: &mut Config) {
        cfg.owner = self.owner.clone();
        cfg.net.pool = self.pool.parse().unwrap();
        cfg.net.pin_dir = self.pin_dir.clone();
        cfg.net.lease_file = self.lease_file.clone();
        cfg.net.host_netns = self.router.then(|| self.router_path());
    }

    /// Makes the router and uplink namespaces: router `up0` 198.19.0.1/30 ↔ uplink `wan0`
    /// 198.19.0.2/30, the router's default route via the uplink (which has no route back
    /// to the sandboxes: only masqueraded traffic can be answered).
    pub async fn make_router(&self) {
        let dir = NetnsDir::new(&self.pin_dir);
        drop(dir.create("router").await.unwrap());
        drop(dir.create("uplink").await.unwrap());
        let r = link::connect("router", Some(dir.open("router").unwrap()))
            .await
            .unwrap();
        let u = link::connect("uplink", Some(dir.open("uplink").unwrap()))
            .await
            .unwrap();
        link::add_veth(&r, "up0", "wan0").await.unwrap();
        let wan = link::index(&r, "wan0").await.unwrap();
        link::move_to(&r, wan, "wan0", &dir.open("uplink").unwrap())
            .await
            .unwrap();
        let up0 = link::index(&r, "up0").await.unwrap();
        link::add_address(&r, up0, "up0", ROUTER_UP, 30)
            .await
            .unwrap();
        link::up(&r, up0, "up0").await.unwrap();
        let lo = link::index(&r, "lo").await.unwrap();
        link::up(&r, lo, "lo").await.unwrap();
        let wan = link::index(&u, "wan0").await.unwrap();
        link::add_address(&u, wan, "wan0", UPLINK, 30)
            .await
            .unwrap();
        link::up(&u, wan, "wan0").await.unwrap();
        let lo = link::index(&u, "lo").await.unwrap();
        link::up(&u, lo, "lo").await.unwrap();
        link::add_default_route(&r, up0, "up0", UPLINK)
            .await
            .unwrap();
    }

    /// Host links (in the real host namespace) whose alias carries this test's tag.
    pub async fn tagged_links(&self) -> Vec<String> {
        let h = link::connect("host", None).await.unwrap();
        let prefix = format!("{}+", self.owner);
        link::dump(&h)
            .await
            .unwrap()
            .iter()
            .filter(|m| link::alias_of(m).is_some_and(|a| a.starts_with(&prefix)))
            .filter_map(|m| link::name_of(m).map(str::to_owned))
            .collect()
    }

    /// Namespaces pinned with this test's tag.
    pub fn pinned(&self) -> Vec<String> {
        let prefix = format!("{}+", self.owner);
        NetnsDir::new(&self.pin_dir)
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Leases in the test's lease file.
    pub fn leases(&self) -> Vec<paddock_net::Held> {
        paddock_net::LeaseFile::new(&self.lease_file, self.pool.parse().unwrap())
            .unwrap()
            .list()
            .unwrap()
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        let tag = self.tag();
        let pin_dir = self.pin_dir.clone();
        let lease_file = self.lease_file.clone();
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let net = Network::new(&pin_dir, tag).await.unwrap();
                let left = net.reclaim(&HashSet::new()).await;
                let dir = NetnsDir::new(&pin_dir);
                for name in dir.list().unwrap_or_default() {
                    let _ = dir.delete(&name);
                }
                let _ = std::fs::remove_dir(&pin_dir);
                let _ = std::fs::remove_file(&lease_file);
                let mut lock = lease_file.into_os_string();
                lock.push(".lock");
                let _ = std::fs::remove_file(lock);
                // Last, once this test's files are gone (ENOTEMPTY while another runs).
                if let Some(parent) = pin_dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
                left
            })
        })
        .join();
        if !std::thread::panicking() {
            let report = r.expect("cleanup thread").expect("cleanup reclaim");
            assert!(
                report.links.is_empty() && report.namespaces.is_empty(),
                "the test left network objects behind: {report:?}"
            );
        }
    }
}

/// Runs `f` on a thread inside the namespace pinned at `path`.
pub fn in_ns<R: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    let fd = std::fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
}

/// A listener bound inside `ns` (before this returns) on `ip:port` (0: any port) that
/// answers one connection with `reply` after reading 4 bytes; the thread returns the
/// peer's address.
pub fn serve_once(
    ns: &Path,
    ip: Ipv4Addr,
    port: u16,
    reply: &'static [u8],
) -> (std::thread::JoinHandle<SocketAddr>, u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_ns(ns, move || {
        let l = TcpListener::bind((ip, port)).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(reply).unwrap();
        peer
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (h, port)
}

/// Connects from inside `ns` (the host's when `None`) to `to`, sends `ping` and returns
/// the reply (or the connect error).
pub fn ping(ns: Option<&Path>, to: SocketAddr) -> std::io::Result<Vec<u8>> {
    let f = move || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"ping")?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    };
    match ns {
        Some(ns) => in_ns(ns, f).join().unwrap(),
        None => f(),
    }
}

/// A store in memory: the last record of each lifecycle, as a daemon's store keeps them.
#[derive(Default)]
pub struct MemStore {
    pub records: Mutex<BTreeMap<(String, LifecycleId), Record>>,
}

impl Hooks for MemStore {
    fn before_create(&self, rec: &Record) -> Persisting {
        self.put(rec);
        persisted()
    }
    fn on_change(&self, rec: &Record) -> Persisting {
        self.put(rec);
        persisted()
    }
    fn on_forget(&self, id: &SandboxId, lc: LifecycleId) {
        self.records.lock().unwrap().remove(&(id.to_string(), lc));
    }
}

impl MemStore {
    fn put(&self, rec: &Record) {
        self.records
            .lock()
            .unwrap()
            .insert((rec.spec.id.to_string(), rec.lifecycle), rec.clone());
    }

    pub fn all(&self) -> Vec<Record> {
        self.records.lock().unwrap().values().cloned().collect()
    }
}
