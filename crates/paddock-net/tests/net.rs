//! Real-kernel tests of paddock-net, as root. Traffic only ever flows between network
//! namespaces these tests create (the host's and the sandboxes'), on addresses of
//! 198.18.0.0/15 (RFC 2544, reserved for benchmarking), never to anything outside.
//!
//! Every test owns a unique tag and pin directory; its `Cleanup` guard reclaims
//! everything with that tag and removes the directory when the test ends, passed or not,
//! and then checks that nothing of it is left.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::{Cleanup, SEQ, exchange, in_ns, key, unavailable};
use paddock_net::{NetnsDir, SandboxSpec, TapSpec, link, netns};

/// Host → sandbox and sandbox → host over TCP, through the veth pair and the default
/// route; then teardown (twice) leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_sandbox_talk_tcp_and_teardown_is_idempotent() {
    let test = "host_and_sandbox_talk_tcp_and_teardown_is_idempotent";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let net = c.network().await;
    let mut pool = c.pool(10);
    let k = key("tcp@1");
    let lease = pool.allocate(k.as_str()).unwrap();
    let sn = net
        .create(
            &k,
            &SandboxSpec {
                lease: lease.clone(),
                taps: vec![],
                rules: Default::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(sn.host_ifname, net.owner(&k).host_ifname());
    assert_eq!(c.tagged_links().await, vec![sn.host_ifname.clone()]);

    // Host → sandbox: a listener inside, bound to the sandbox's address.
    let (tx, rx) = std::sync::mpsc::channel();
    let sandbox_ip = lease.sandbox;
    let server = in_ns(&sn.netns, move || {
        let l = TcpListener::bind((sandbox_ip, 0)).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        s.write_all(b"pong").unwrap();
        peer
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from((sandbox_ip, port)),
        Duration::from_secs(10),
    )
    .unwrap();
    exchange(&mut s, b"ping", b"pong");
    let peer = server.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(lease.host),
        "the host reaches the sandbox from the host side's address"
    );

    // Sandbox → host, to the host side's address (through eth0).
    let l = TcpListener::bind((lease.host, 0)).unwrap();
    let hp = l.local_addr().unwrap().port();
    let host_ip = lease.host;
    let client = in_ns(&sn.netns, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((host_ip, hp)), Duration::from_secs(10))
                .unwrap();
        exchange(&mut s, b"helo", b"back");
        s.local_addr().unwrap().ip()
    });
    let (mut a, _) = l.accept().unwrap();
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"helo");
    a.write_all(b"back").unwrap();
    assert_eq!(client.join().unwrap(), std::net::IpAddr::V4(sandbox_ip));

    // Teardown twice; nothing of the sandbox is left.
    net.teardown(&k).await.unwrap();
    net.teardown(&k).await.unwrap();
    assert!(c.tagged_links().await.is_empty());
    assert!(!sn.netns.exists());
    let h = link::connect("host", None).await.unwrap();
    assert!(link::get(&h, &sn.host_ifname).await.unwrap().is_none());
    pool.release(k.as_str());
}

/// A tap inside the sandbox with the given owner, group, multi-queue and vnet header,
/// persistent and up; not visible in the host namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_exists_inside_with_its_owner() {
    let test = "tap_exists_inside_with_its_owner";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let net = c.network().await;
    let mut pool = c.pool(11);
    let k = key("tap@1");
    let tap = TapSpec {
        name: "tap0".into(),
        uid: Some(4242),
        gid: Some(4343),
        multi_queue: true,
        vnet_hdr: true,
        address: Some("172.31.0.1/30".parse().unwrap()),
    };
    let plain = TapSpec::new("tap1");
    let spec = SandboxSpec {
        lease: pool.allocate(k.as_str()).unwrap(),
        taps: vec![tap, plain],
        rules: Default::default(),
    };
    let sn = net.create(&k, &spec).await.unwrap();
    assert_eq!(sn.taps, vec!["tap0".to_owned(), "tap1".to_owned()]);

    let ns = NetnsDir::new(&c.pin_dir).open(&sn.owner).unwrap();
    let inside = link::connect("sandbox", Some(ns)).await.unwrap();
    let m = link::get(&inside, "tap0")
        .await
        .unwrap()
        .expect("tap0 inside the sandbox");
    let info = paddock_net::tap::info(&m).expect("tap0 is a tun/tap device");
    assert_eq!(
        info,
        paddock_net::tap::TapInfo {
            uid: Some(4242),
            gid: Some(4343),
            is_tap: true,
            multi_queue: true,
            vnet_hdr: true,
            persist: true,
        }
    );
    assert!(
        m.header
            .flags
            .contains(netlink_packet_route::link::LinkFlags::Up)
    );
    // Its address, for the guest behind it to reach the sandbox's namespace.
    assert_eq!(
        link::ipv4_addresses(&inside, m.header.index, "tap0")
            .await
            .unwrap(),
        vec![(std::net::Ipv4Addr::new(172, 31, 0, 1), 30)]
    );
    let m1 = link::get(&inside, "tap1")
        .await
        .unwrap()
        .expect("tap1 inside");
    let i1 = paddock_net::tap::info(&m1).unwrap();
    assert_eq!(
        (i1.uid, i1.gid, i1.multi_queue, i1.is_tap),
        (None, None, false, true)
    );
    assert!(
        link::ipv4_addresses(&inside, m1.header.index, "tap1")
            .await
            .unwrap()
            .is_empty()
    );

    let host = link::connect("host", None).await.unwrap();
    assert!(
        link::get(&host, "tap0").await.unwrap().is_none() || {
            // A tap0 of the host's own is not ours; ours must not be it.
            let hm = link::get(&host, "tap0").await.unwrap().unwrap();
            paddock_net::tap::info(&hm).is_none_or(|i| i.uid != Some(4242))
        }
    );
    drop(inside);
    net.teardown(&k).await.unwrap();
}

/// A bad tap name is refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_leaves_nothing() {
    let test = "a_failed_create_leaves_nothing";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let net = c.network().await;
    let mut pool = c.pool(12);
    let k = key("fail@1");
    let lease = pool.allocate(k.as_str()).unwrap();
    // Invalid name: refused up front.
    let e = net
        .create(
            &k,
            &SandboxSpec {
                lease: lease.clone(),
                taps: vec![TapSpec::new("eth0")],
                rules: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tap name"), "{e}");
    // A failure half-way rolls back everything made before it: the second tap has the
    // first one's name with other flags, which TUNSETIFF refuses (EINVAL) after the
    // namespace, the veth pair and the first tap exist.
    let dup = vec![
        TapSpec::new("tapx"),
        TapSpec {
            multi_queue: true,
            ..TapSpec::new("tapx")
        },
    ];
    let e = net
        .create(
            &k,
            &SandboxSpec {
                lease,
                taps: dup,
                rules: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert!(e.errno().is_some(), "{e}");
    assert!(e.to_string().contains("tapx"), "{e}");
    assert!(c.tagged_links().await.is_empty(), "rolled back");
    assert!(
        NetnsDir::new(&c.pin_dir).list().unwrap().is_empty(),
        "rolled back"
    );
}

/// Reclaim removes what carries the tag and is not live — links with a tagged alias,
/// pinned namespaces, an orphan pin file — and leaves the live sandbox, an untagged veth,
/// a link and a namespace of another tag, and a foreign pin file alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_removes_only_tagged_leftovers() {
    let test = "reclaim_removes_only_tagged_leftovers";
    if unavailable(test) {
        return;
    }
    let mut c = Cleanup::new(test);
    let net = c.network().await;
    let mut pool = c.pool(13);
    let (live, dead) = (key("live@1"), key("dead@1"));
    let live_net = net
        .create(
            &live,
            &SandboxSpec {
                lease: pool.allocate(live.as_str()).unwrap(),
                taps: vec![],
                rules: Default::default(),
            },
        )
        .await
        .unwrap();
    let dead_net = net
        .create(
            &dead,
            &SandboxSpec {
                lease: pool.allocate(dead.as_str()).unwrap(),
                taps: vec![],
                rules: Default::default(),
            },
        )
        .await
        .unwrap();

    let host = link::connect("host", None).await.unwrap();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("{:x}{n}", std::process::id() % 0xfffff);
    // An untagged veth the test made itself.
    let (ua, ub) = (format!("pu{id}a"), format!("pu{id}b"));
    c.own_links.extend([ua.clone(), ub.clone()]);
    link::add_veth(&host, &ua, &ub).await.unwrap();
    // A veth with another instance's tag, and one with this tag left by a "crash" after
    // its namespace was gone (a tagged host link only).
    let (oa, ob) = (format!("po{id}a"), format!("po{id}b"));
    c.own_links.extend([oa.clone(), ob.clone()]);
    link::add_veth(&host, &oa, &ob).await.unwrap();
    let oi = link::index(&host, &oa).await.unwrap();
    link::set_alias(&host, oi, &oa, &format!("other-instance+{}", dead.as_str()))
        .await
        .unwrap();
    let (ta, tb) = (format!("pt{id}a"), format!("pt{id}b"));
    c.own_links.extend([ta.clone(), tb.clone()]);
    link::add_veth(&host, &ta, &tb).await.unwrap();
    let ti = link::index(&host, &ta).await.unwrap();
    link::set_alias(&host, ti, &ta, &format!("{}+orphan@1", c.tag))
        .await
        .unwrap();
    // Pinned namespaces of another tag, a foreign name, and an orphan pin file of ours.
    let dir = NetnsDir::new(&c.pin_dir);
    let other = format!("other-instance+{}", dead.as_str());
    drop(dir.create(&other).await.unwrap());
    drop(dir.create("foreign").await.unwrap());
    let orphan = format!("{}+orphanfile@1", c.tag);
    std::fs::write(c.pin_dir.join(&orphan), b"").unwrap();

    let report = net.reclaim(&HashSet::from([live.clone()])).await.unwrap();
    let mut links = report.links.clone();
    links.sort();
    let mut want = vec![dead_net.host_ifname.clone(), ta.clone()];
    want.sort();
    assert_eq!(links, want, "{report:?}");
    let mut nss = report.namespaces.clone();
    nss.sort();
    let mut want_ns = vec![dead_net.owner.clone(), orphan.clone()];
    want_ns.sort();
    assert_eq!(nss, want_ns, "{report:?}");

    // What must stay, stayed.
    // (`tb` went with `ta`: deleting one end of a veth pair deletes both.)
    assert!(link::get(&host, &tb).await.unwrap().is_none());
    for name in [&ua, &ub, &oa, &ob, &live_net.host_ifname] {
        assert!(
            link::get(&host, name).await.unwrap().is_some(),
            "{name} was removed"
        );
    }
    let mut left = dir.list().unwrap();
    left.sort();
    let mut want_left = vec![live_net.owner.clone(), other.clone(), "foreign".to_owned()];
    want_left.sort();
    assert_eq!(left, want_left);
    dir.open(&live_net.owner).unwrap();

    // A second reclaim finds nothing; then clean up what is not ours to reclaim.
    let again = net.reclaim(&HashSet::from([live.clone()])).await.unwrap();
    assert_eq!(again, Default::default());
    assert!(dir.delete(&other).unwrap());
    assert!(dir.delete("foreign").unwrap());
    assert!(!dir.delete("foreign").unwrap());
    net.teardown(&live).await.unwrap();
}

/// Namespaces: create, open by name, refuse a duplicate, delete twice; the namespace is
/// a different one from the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_namespace_lifecycle() {
    let test = "pinned_namespace_lifecycle";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let dir = NetnsDir::new(&c.pin_dir);
    let name = format!("{}+ns@1", c.tag);
    let fd = dir.create(&name).await.unwrap();
    let e = dir.create(&name).await.unwrap_err();
    assert_eq!(e.errno(), Some(17), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    let st = rustix::fs::fstat(&fd).unwrap();
    let host = rustix::fs::fstat(netns::open_host().unwrap()).unwrap();
    assert_ne!(st.st_ino, host.st_ino, "a new namespace");
    let again = rustix::fs::fstat(dir.open(&name).unwrap()).unwrap();
    assert_eq!(again.st_ino, st.st_ino, "opened by name");
    // Inside: only lo, and it is down.
    let inside = link::connect("ns", Some(fd)).await.unwrap();
    let links: Vec<String> = link::dump(&inside)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| link::name_of(m).map(str::to_owned))
        .collect();
    assert_eq!(links, vec!["lo".to_owned()]);
    drop(inside);
    assert!(dir.delete(&name).unwrap());
    assert!(!dir.delete(&name).unwrap());
    let e = dir.open(&name).unwrap_err();
    assert_eq!(e.errno(), Some(2), "{e}");
    let _ = Ipv4Addr::LOCALHOST;
}

/// Timing of create + teardown of one sandbox network (no taps, no rules), 30 rounds;
/// prints p50 and max. Run on demand:
/// `cargo test -p paddock-net --test net -- --ignored --nocapture create_teardown_timing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn create_teardown_timing() {
    let test = "create_teardown_timing";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let net = c.network().await;
    let mut pool = c.pool(40);
    let mut times = Vec::new();
    for i in 0..30 {
        let k = key(&format!("timing{i}"));
        let lease = pool.allocate(k.as_str()).unwrap();
        let t = std::time::Instant::now();
        net.create(
            &k,
            &SandboxSpec {
                lease,
                taps: vec![],
                rules: Default::default(),
            },
        )
        .await
        .unwrap();
        let created = t.elapsed();
        net.teardown(&k).await.unwrap();
        times.push((created, t.elapsed()));
        pool.release(k.as_str());
    }
    times.sort();
    let (c50, t50) = times[times.len() / 2];
    let max = times.iter().map(|t| t.1).max().unwrap();
    println!("create p50 {c50:?}; create+teardown p50 {t50:?}, max {max:?}");
}

/// A crash between the veth pair's creation and its host end's tag leaves an untagged
/// host end whose peer is `eth0` in the pinned, tagged namespace: reclaim deletes that
/// `eth0` (and with it the pair) before it unpins the namespace, so the host end is gone
/// when reclaim returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_removes_an_untagged_host_end_through_its_peer() {
    let test = "reclaim_untagged_host_end";
    if unavailable(test) {
        return;
    }
    let c = Cleanup::new(test);
    let net = c.network().await;
    let owner = paddock_net::Owner::new(c.tag.clone(), key("crashed@1"));
    let name = owner.to_string();
    let dir = NetnsDir::new(&c.pin_dir);
    let ns = dir.create(&name).await.unwrap();
    let inside = link::connect("sandbox", Some(ns)).await.unwrap();
    let host_if = owner.host_ifname();
    // The kernel ignores an alias given at creation: the host end is untagged.
    link::add_veth_into(
        &inside,
        &host_if,
        paddock_net::SANDBOX_IFNAME,
        &netns::open_host().unwrap(),
        &name,
    )
    .await
    .unwrap();
    let host = link::connect("host", None).await.unwrap();
    let m = link::get(&host, &host_if)
        .await
        .unwrap()
        .expect("the host end");
    assert_eq!(link::alias_of(&m), None);

    let report = net.reclaim(&HashSet::new()).await.unwrap();
    assert_eq!(report.links, vec![host_if.clone()]);
    assert_eq!(report.namespaces, vec![name]);
    assert!(link::get(&host, &host_if).await.unwrap().is_none());
}

/// A creation stopped before the host end's tag (a cancelled start): teardown deletes the
/// untagged pair through its `eth0` and succeeds; an untagged link of that name that is
/// not the peer (someone else's) is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_an_untagged_host_end_through_its_peer() {
    let test = "teardown_untagged_host_end";
    if unavailable(test) {
        return;
    }
    let mut c = Cleanup::new(test);
    let net = c.network().await;
    let k = key("cancelled@1");
    let owner = net.owner(&k);
    let name = owner.to_string();
    let dir = NetnsDir::new(&c.pin_dir);
    let inside = link::connect("sandbox", Some(dir.create(&name).await.unwrap()))
        .await
        .unwrap();
    let host_if = owner.host_ifname();
    link::add_veth_into(
        &inside,
        &host_if,
        paddock_net::SANDBOX_IFNAME,
        &netns::open_host().unwrap(),
        &name,
    )
    .await
    .unwrap();
    net.teardown_with(&k, false).await.unwrap();
    let host = link::connect("host", None).await.unwrap();
    assert!(link::get(&host, &host_if).await.unwrap().is_none());
    assert!(dir.list().unwrap().is_empty());

    // A foreign untagged link with the name this owner's would have.
    let k2 = key("other@1");
    let o2 = net.owner(&k2);
    let h2 = o2.host_ifname();
    c.own_links.push(h2.clone());
    link::add_veth(&host, &h2, &format!("{}p", &h2[..10]))
        .await
        .unwrap();
    let e = net.teardown_with(&k2, false).await.unwrap_err();
    assert!(matches!(e, paddock_net::Error::NotOwned { .. }), "{e:?}");
    assert!(link::get(&host, &h2).await.unwrap().is_some());
}
