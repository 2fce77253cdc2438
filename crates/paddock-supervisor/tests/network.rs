//! The `veth` network mode through the supervisor, as root against the real kernel.
//! Traffic only goes between namespaces the tests create (addresses of 198.18.0.0/15):
//! the host's own namespace for host ↔ sandbox, else a "router" namespace playing the
//! host (the supervisor's `net.host_netns`) and an "uplink" one playing the internet, so
//! the machine's ruleset and sysctls are never touched by the NAT, publish and isolate
//! tests.

mod common;
mod netcommon;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{env_with, sh};
use netcommon::{NetGuard, ROUTER_UP, UPLINK, net_unavailable, ping, serve_once};
use paddock_supervisor::{
    Error, Network, Protocol, PublishSpec, SandboxInfo, StdioTarget, TapSpec, VethSpec,
};

fn veth(v: VethSpec) -> Network {
    Network::Veth(v)
}

fn addr(info: &SandboxInfo) -> (IpAddr, IpAddr, String) {
    let n = info
        .network
        .as_ref()
        .expect("a veth sandbox reports its network");
    (
        n.host_address.parse().unwrap(),
        n.sandbox_address.parse().unwrap(),
        n.netns.clone(),
    )
}

/// Host ↔ sandbox over TCP in the host's own namespace; the payload runs in the
/// sandbox's namespace; the stop removes the link, the namespace and the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_sandbox_talk_tcp_and_stop_removes_everything() {
    let test = "host_and_sandbox_talk_tcp";
    if net_unavailable(test, false) {
        return;
    }
    let g = NetGuard::new(test, "198.18.50.0/24", false);
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    let out = e.scratch.path("ns");
    let mut spec = sh("web", "readlink /proc/self/ns/net; exec sleep 600");
    spec.stdio.stdout = StdioTarget::File(out.clone());
    spec.network = veth(VethSpec::default());
    let started = e.sup.start(spec).await.unwrap();
    let info = started.info;
    let (host, sandbox, netns) = addr(&info);
    let n = info.network.clone().unwrap();
    assert_eq!(n.subnet, "198.18.50.0/30");
    assert!(n.host_ifname.starts_with("pdk"), "{n:?}");
    assert_eq!(g.tagged_links().await, vec![n.host_ifname.clone()]);
    assert_eq!(g.pinned().len(), 1);
    assert_eq!(g.leases().len(), 1);
    assert_eq!(e.sup.net_gauges().namespaces, 1);

    // The payload is in the sandbox's namespace.
    let seen = common::wait_file(&out, Duration::from_secs(10)).await;
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&netns).unwrap());
    assert_eq!(seen.trim(), format!("net:[{ino}]"));

    // Host → sandbox.
    let (srv, port) = serve_once(
        Path::new(&netns),
        "0.0.0.0".parse().unwrap(),
        0,
        b"from-sandbox",
    );
    let reply = ping(None, SocketAddr::new(sandbox, port)).unwrap();
    assert_eq!(reply, b"from-sandbox");
    assert_eq!(srv.join().unwrap().ip(), host);
    // Sandbox → host.
    let l = std::net::TcpListener::bind((host, 0)).unwrap();
    let hp = l.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut s, &mut b).unwrap();
        std::io::Write::write_all(&mut s, b"from-host").unwrap();
        peer
    });
    let reply = ping(Some(Path::new(&netns)), SocketAddr::new(host, hp)).unwrap();
    assert_eq!(reply, b"from-host");
    assert_eq!(accept.join().unwrap().ip(), sandbox);

    e.sup.stop(&info.id, Some(info.lifecycle)).await.unwrap();
    assert!(g.tagged_links().await.is_empty());
    assert!(g.pinned().is_empty());
    assert!(g.leases().is_empty());
    assert_eq!(e.sup.net_gauges(), Default::default());
    e.assert_no_leaks();
}

/// NAT egress to the uplink, a published port reachable from the host and from outside,
/// and two isolated sandboxes that cannot reach each other while two plain ones can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_publish_and_isolate_through_the_supervisor() {
    let test = "nat_publish_isolate";
    if net_unavailable(test, true) {
        return;
    }
    let g = NetGuard::new(test, "198.18.51.0/24", true);
    g.make_router().await;
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    let start = |name: &str, v: VethSpec| {
        let mut spec = sh(name, "exec sleep 600");
        spec.network = veth(v);
        e.sup.start(spec)
    };
    let a = start(
        "a",
        VethSpec {
            nat: true,
            isolate: true,
            publish: vec![PublishSpec {
                host_port: 8080,
                sandbox_port: 80,
                protocol: Protocol::Tcp,
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .info;
    let b = start(
        "b",
        VethSpec {
            isolate: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .info;
    let c = start("c", VethSpec::default()).await.unwrap().info;
    let d = start("d", VethSpec::default()).await.unwrap().info;
    let (_, a_ip, a_ns) = addr(&a);
    let (_, b_ip, b_ns) = addr(&b);
    let (_, c_ip, c_ns) = addr(&c);
    let (_, d_ip, d_ns) = addr(&d);
    let router = g.router_path();
    let uplink = g.uplink_path();

    // Egress: a reaches the uplink, which sees the router's address (masqueraded).
    let (srv, port) = serve_once(&uplink, UPLINK, 0, b"pong");
    let reply = ping(Some(Path::new(&a_ns)), SocketAddr::new(UPLINK.into(), port)).unwrap();
    assert_eq!(reply, b"pong");
    assert_eq!(srv.join().unwrap().ip(), IpAddr::from(ROUTER_UP));

    // Published: host port 8080 → a:80, from the router itself and from the uplink.
    for from in [&router, &uplink] {
        let (srv, _) = serve_once(
            Path::new(&a_ns),
            a_ip.to_string().parse().unwrap(),
            80,
            b"published",
        );
        let reply = ping(Some(from), SocketAddr::new(ROUTER_UP.into(), 8080)).unwrap();
        assert_eq!(reply, b"published", "from {}", from.display());
        srv.join().unwrap();
    }

    // Isolation: a and b cannot reach each other (refused at once), c and d can.
    let (srv_b, bp) = serve_once(Path::new(&b_ns), b_ip.to_string().parse().unwrap(), 0, b"b");
    let err = ping(Some(Path::new(&a_ns)), SocketAddr::new(b_ip, bp)).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
        ) || err.raw_os_error() == Some(113),
        "{err:?}"
    );
    let (srv_d, dp) = serve_once(Path::new(&d_ns), d_ip.to_string().parse().unwrap(), 0, b"d");
    assert_eq!(
        ping(Some(Path::new(&c_ns)), SocketAddr::new(d_ip, dp)).unwrap(),
        b"d"
    );
    srv_d.join().unwrap();
    // b itself is reachable from the host (isolation is between sandboxes only).
    assert_eq!(
        ping(Some(&router), SocketAddr::new(b_ip, bp)).unwrap(),
        b"b"
    );
    srv_b.join().unwrap();
    let _ = c_ip;

    // A host port is one sandbox's: a second start publishing it is refused, unmade.
    let err = start(
        "e",
        VethSpec {
            publish: vec![PublishSpec {
                host_port: 8080,
                sandbox_port: 81,
                protocol: Protocol::Tcp,
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::PortInUse(_)), "{err:?}");
    assert!(err.to_string().contains("8080/tcp"), "{err}");
    assert_eq!(g.pinned().len(), 4);
    assert_eq!(g.leases().len(), 4);

    let table = a.network.as_ref().unwrap().table.clone().unwrap();
    for s in [&a, &b, &c, &d] {
        e.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    }
    // No rule is left in the table (it stays, empty, with the router namespace).
    let nft = paddock_net::Nft::new(&g.tag(), std::fs::File::open(&router).unwrap().into());
    assert_eq!(format!("ip {}", nft.table()), table);
    assert_eq!(nft.list().await.unwrap(), vec![]);
    assert!(g.pinned().is_empty());
    assert!(g.leases().is_empty());
    e.assert_no_leaks();
}

/// A tap inside the sandbox, owned by the given uid and gid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_inside_is_owned_by_the_given_ids() {
    let test = "tap_inside";
    if net_unavailable(test, false) {
        return;
    }
    let g = NetGuard::new(test, "198.18.52.0/24", true);
    g.make_router().await;
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    let mut spec = sh("vm", "exec sleep 600");
    spec.network = veth(VethSpec {
        taps: vec![TapSpec {
            name: "tap0".into(),
            uid: Some(4242),
            gid: Some(4343),
            multi_queue: true,
            vnet_hdr: false,
            address: Some("172.31.0.1/30".into()),
        }],
        ..Default::default()
    });
    let info = e.sup.start(spec).await.unwrap().info;
    let n = info.network.clone().unwrap();
    assert_eq!(n.taps, vec!["tap0".to_owned()]);
    let ns = std::fs::File::open(&n.netns).unwrap();
    let inside = paddock_net::link::connect("sandbox", Some(ns.into()))
        .await
        .unwrap();
    let m = paddock_net::link::get(&inside, "tap0")
        .await
        .unwrap()
        .expect("tap0 inside");
    let t = paddock_net::tap::info(&m).unwrap();
    assert_eq!(
        (t.uid, t.gid, t.is_tap, t.multi_queue),
        (Some(4242), Some(4343), true, true)
    );
    assert_eq!(
        paddock_net::link::ipv4_addresses(&inside, m.header.index, "tap0")
            .await
            .unwrap(),
        vec![(std::net::Ipv4Addr::new(172, 31, 0, 1), 30)]
    );
    // A tap subnet inside the node's pool would shadow eth0's routes: refused (422),
    // before anything is made.
    let mut bad = sh("tap-in-pool", "exec sleep 600");
    bad.network = veth(VethSpec {
        taps: vec![TapSpec {
            name: "tap0".into(),
            uid: None,
            gid: None,
            multi_queue: false,
            vnet_hdr: false,
            // The pool's first host address, as a /24.
            address: Some({
                let base: std::net::Ipv4Addr = g.pool.split('/').next().unwrap().parse().unwrap();
                format!("{}/24", std::net::Ipv4Addr::from(u32::from(base) + 1))
            }),
        }],
        ..Default::default()
    });
    let err = e.sup.start(bad).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("taps[0].address"), "{err}");
    e.sup.stop(&info.id, Some(info.lifecycle)).await.unwrap();
    assert!(g.pinned().is_empty());
    e.assert_no_leaks();
}

/// An exhausted pool refuses the start with `PoolExhausted` saying so, leaves nothing
/// behind, and a stop frees a lease for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_refuses_and_a_stop_frees_a_lease() {
    let test = "pool_exhausted";
    if net_unavailable(test, false) {
        return;
    }
    // A /29: two /30s.
    let g = NetGuard::new(test, "198.18.53.0/29", true);
    g.make_router().await;
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    let start = |name: &str| {
        let mut spec = sh(name, "exec sleep 600");
        spec.network = veth(VethSpec::default());
        e.sup.start(spec)
    };
    let one = start("one").await.unwrap().info;
    let _two = start("two").await.unwrap().info;
    let err = start("three").await.unwrap_err();
    assert!(matches!(err, Error::PoolExhausted(_)), "{err:?}");
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert_eq!(g.pinned().len(), 2);
    assert_eq!(g.leases().len(), 2);
    e.sup.stop(&one.id, Some(one.lifecycle)).await.unwrap();
    let three = start("three").await.unwrap().info;
    assert_eq!(three.network.unwrap().subnet, one.network.unwrap().subnet);
    e.sup.stop_all().await;
    assert!(g.pinned().is_empty());
    assert!(g.leases().is_empty());
    e.assert_no_leaks();
}

/// Bad values are refused naming the field, before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_veth_specs_change_nothing() {
    let test = "veth_invalid";
    if net_unavailable(test, false) {
        return;
    }
    let g = NetGuard::new(test, "198.18.54.0/24", false);
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    let mut spec = sh("bad", "exit 0");
    spec.network = veth(VethSpec {
        publish: vec![PublishSpec {
            host_port: 0,
            sandbox_port: 80,
            protocol: Protocol::Tcp,
        }],
        ..Default::default()
    });
    let err = e.sup.start(spec).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("network.veth.publish[0].host_port"),
        "{err}"
    );
    assert!(g.pinned().is_empty() && g.leases().is_empty());
    e.assert_no_leaks();
}
