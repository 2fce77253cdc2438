//! nftables rules against the real kernel, as root, entirely inside namespaces the test
//! creates: a "router" namespace plays the host (the veth pairs' host sides, the
//! instance's nftables table, `ip_forward` on), an "uplink" namespace plays the internet
//! (a server on 198.19.0.2, with no route back to the sandboxes' 198.18.30.0/24, so only
//! masqueraded traffic can be answered). The machine's own ruleset and sysctls are never
//! touched.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Cleanup, exchange, in_ns, key, unavailable};
use paddock_net::{NetnsDir, Network, Protocol, Publish, Rules, SandboxSpec, link, netns};

const ROUTER_UP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

fn nft_missing(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()));
    if !found {
        paddock_testutil::skip(test, "nft is not installed (Debian package nftables)");
    }
    !found
}

/// Router ↔ uplink: a veth pair made inside the router, its peer moved to the uplink.
async fn wire_uplink(dir: &NetnsDir, router: &str, uplink: &str) {
    let r = link::connect("router", Some(dir.open(router).unwrap()))
        .await
        .unwrap();
    let u = link::connect("uplink", Some(dir.open(uplink).unwrap()))
        .await
        .unwrap();
    link::add_veth(&r, "up0", "wan0").await.unwrap();
    let wan = link::index(&r, "wan0").await.unwrap();
    link::move_to(&r, wan, "wan0", &dir.open(uplink).unwrap())
        .await
        .unwrap();
    let up0 = link::index(&r, "up0").await.unwrap();
    link::add_address(&r, up0, "up0", ROUTER_UP, 30)
        .await
        .unwrap();
    link::up(&r, up0, "up0").await.unwrap();
    let wan = link::index(&u, "wan0").await.unwrap();
    link::add_address(&u, wan, "wan0", UPLINK, 30)
        .await
        .unwrap();
    link::up(&u, wan, "wan0").await.unwrap();
    let lo = link::index(&u, "lo").await.unwrap();
    link::up(&u, lo, "lo").await.unwrap();
    // The router's default route is the uplink; the uplink knows no sandbox subnet.
    link::add_default_route(&r, up0, "up0", UPLINK)
        .await
        .unwrap();
}

/// A listener inside `ns` on `addr:port` that answers one connection with `reply` and
/// returns the peer's address.
fn serve_once(
    ns: &std::path::Path,
    ip: Ipv4Addr,
    port: u16,
    reply: &'static [u8],
) -> (std::thread::JoinHandle<SocketAddr>, u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_ns(ns, move || {
        let l = TcpListener::bind((ip, port)).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(reply).unwrap();
        peer
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (h, port)
}

fn connect_from(
    ns: &std::path::Path,
    to: SocketAddr,
) -> std::thread::JoinHandle<std::io::Result<TcpStream>> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(10))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_publish_and_isolate_in_a_router_namespace() {
    let test = "nat_publish_and_isolate_in_a_router_namespace";
    if unavailable(test) || nft_missing(test) {
        return;
    }
    let c = Cleanup::new(test);
    let dir = NetnsDir::new(&c.pin_dir);
    let router = dir.create("router").await.unwrap();
    drop(dir.create("uplink").await.unwrap());
    let (router_path, uplink_path) = (dir.path_of("router"), dir.path_of("uplink"));
    wire_uplink(&dir, "router", "uplink").await;
    netns::set_ipv4_forwarding(router.try_clone().unwrap(), true)
        .await
        .unwrap();

    let net = Network::new_in(&c.pin_dir, c.tag.clone(), router)
        .await
        .unwrap();
    let mut pool = c.pool(30);
    let (a, b, d, e) = (key("a@1"), key("b@1"), key("d@1"), key("e@1"));
    let spec =
        |k: &paddock_net::Key, pool: &mut paddock_net::LeasePool, rules: Rules| SandboxSpec {
            lease: pool.allocate(k.as_str()).unwrap(),
            taps: vec![],
            rules,
        };
    // a: NAT, a published TCP and UDP port, isolated. b: NAT, isolated. d: NAT only.
    // e (made later): no rules.
    let a_net = net
        .create(
            &a,
            &spec(
                &a,
                &mut pool,
                Rules {
                    nat: true,
                    publish: vec![
                        Publish {
                            host_port: 8080,
                            sandbox_port: 80,
                            protocol: Protocol::Tcp,
                        },
                        Publish {
                            host_port: 5353,
                            sandbox_port: 53,
                            protocol: Protocol::Udp,
                        },
                    ],
                    isolate: true,
                },
            ),
        )
        .await
        .unwrap();
    let b_net = net
        .create(
            &b,
            &spec(
                &b,
                &mut pool,
                Rules {
                    nat: true,
                    publish: vec![],
                    isolate: true,
                },
            ),
        )
        .await
        .unwrap();
    let d_net = net
        .create(
            &d,
            &spec(
                &d,
                &mut pool,
                Rules {
                    nat: true,
                    ..Rules::default()
                },
            ),
        )
        .await
        .unwrap();
    let rules = net.nft().list().await.unwrap();
    let count = |o: &str| {
        rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(o))
            .count()
    };
    // a: masquerade + 2 × (prerouting, output) DNAT + 2 isolation rules.
    assert_eq!(count(&a_net.owner), 7, "{rules:?}");
    assert_eq!(count(&b_net.owner), 3, "{rules:?}");
    assert_eq!(count(&d_net.owner), 1, "{rules:?}");

    // Egress through NAT: the uplink's server sees the router's address.
    let (server, port) = serve_once(&uplink_path, UPLINK, 0, b"pong");
    let mut s = connect_from(&a_net.netns, SocketAddr::from((UPLINK, port)))
        .join()
        .unwrap()
        .expect("the sandbox reaches the uplink through NAT");
    exchange(&mut s, b"ping", b"pong");
    assert_eq!(
        server.join().unwrap().ip(),
        IpAddr::V4(ROUTER_UP),
        "masqueraded"
    );

    // The published port, from the uplink (prerouting DNAT) and from the router itself
    // (output DNAT).
    for from in [&uplink_path, &router_path] {
        let (inside, _) = serve_once(&a_net.netns, Ipv4Addr::UNSPECIFIED, 80, b"a:80");
        let mut s = connect_from(from, SocketAddr::from((ROUTER_UP, 8080)))
            .join()
            .unwrap()
            .expect("the published port is reachable");
        exchange(&mut s, b"knck", b"a:80");
        inside.join().unwrap();
    }

    // Isolation: a and b cannot reach each other, and d cannot reach a (a rejects
    // traffic from every sandbox link); rejected with ICMP at once, not dropped.
    for (from, to) in [(&a_net, &b_net), (&b_net, &a_net), (&d_net, &a_net)] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let ip = to.lease.sandbox;
        let listener = in_ns(&to.netns, move || {
            let l = TcpListener::bind((ip, 0)).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let _ = done_rx.recv(); // keep it listening until the attempt is over
        });
        let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let e = connect_from(&from.netns, SocketAddr::from((ip, port)))
            .join()
            .unwrap()
            .expect_err("isolated sandboxes cannot connect");
        assert_ne!(e.kind(), ErrorKind::TimedOut, "rejected, not dropped: {e}");
        drop(done_tx);
        listener.join().unwrap();
    }
    // Control: between two sandboxes without `isolate` (d and e), forwarding works.
    let e_net = net
        .create(&e, &spec(&e, &mut pool, Rules::default()))
        .await
        .unwrap();
    let (inside, port) = serve_once(&e_net.netns, e_net.lease.sandbox, 0, b"e-ok");
    let mut s = connect_from(&d_net.netns, SocketAddr::from((e_net.lease.sandbox, port)))
        .join()
        .unwrap()
        .expect("sandboxes without isolate reach each other");
    exchange(&mut s, b"ping", b"e-ok");
    inside.join().unwrap();
    net.teardown(&e).await.unwrap();

    // Teardown removes exactly a's rules; reclaim removes b's and d's; nothing else.
    net.teardown(&a).await.unwrap();
    net.teardown(&a).await.unwrap();
    let rules = net.nft().list().await.unwrap();
    assert_eq!(count_in(&rules, &a_net.owner), 0);
    assert_eq!(count_in(&rules, &b_net.owner), 3);
    let report = net.reclaim(&HashSet::from([d.clone()])).await.unwrap();
    assert_eq!(report.rules, vec![b_net.owner.clone()], "{report:?}");
    let rules = net.nft().list().await.unwrap();
    assert_eq!(rules.len(), 1, "only d's masquerade is left: {rules:?}");
    net.teardown(&d).await.unwrap();
    assert!(net.nft().list().await.unwrap().is_empty());
    net.nft().delete_table().await.unwrap();
    net.nft().delete_table().await.unwrap();
}

fn count_in(rules: &[paddock_net::nft::ListedRule], owner: &str) -> usize {
    rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some(owner))
        .count()
}

/// A hung `nft` is killed at its deadline, and the error names the command and the
/// deadline; the table is untouched (the fake binary never reads its input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nft_is_killed_at_its_deadline() {
    let test = "a_hung_nft_is_killed_at_its_deadline";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    std::fs::create_dir_all(&c.pin_dir).unwrap();
    let fake = c.pin_dir.join("nft-hangs");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let nft = paddock_net::Nft::new(&c.tag, netns::open_host().unwrap())
        .with_binary(&fake)
        .with_deadline(Duration::from_millis(250));
    let t = std::time::Instant::now();
    let e = nft.list().await.unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        e.contains("nft-hangs -j list table") && e.contains("250 ms") && e.contains("killed"),
        "{e}"
    );
    let _ = std::fs::remove_file(&fake);
}

/// `nft` runs through paddock-proc's reaper: a subreaper's orphan sweeps running all the
/// while never steal its exit status (with `std::process` they would, as `ECHILD`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_survives_orphan_sweeps_of_a_subreaper() {
    let test = "nft_survives_orphan_sweeps_of_a_subreaper";
    if unavailable(test) || nft_missing(test) {
        return;
    }
    let c = Cleanup::new(test);
    paddock_proc::set_child_subreaper().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                paddock_proc::reap_orphans().await;
                tokio::task::yield_now().await;
            }
        })
    };
    let nft = paddock_net::Nft::new(&c.tag, netns::open_host().unwrap());
    for _ in 0..20 {
        // The table does not exist: `nft` exits non-zero, which `list` reads as empty.
        assert_eq!(nft.list().await.unwrap(), vec![]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.await.unwrap();
}
