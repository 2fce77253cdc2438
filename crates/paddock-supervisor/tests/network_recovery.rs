//! A supervisor that crashed with `veth` sandboxes, and the one that takes over: the live
//! sandboxes keep their network (still connected) and lease; the network objects and
//! leases of everything else with the supervisor's tag — a sandbox that died meanwhile,
//! one whose record was lost, a network left half-made by a crash — are reclaimed and
//! counted; nothing without the tag is touched. Root, real kernel; traffic stays between
//! namespaces the test made (198.18.0.0/15).

mod common;
mod netcommon;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::{env_with, sh};
use netcommon::{NetGuard, net_unavailable, ping, serve_once};
use paddock_supervisor::{Adopted, Config, Network, OnMainExit, Supervisor, VethSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_live_networks_and_reclaims_the_rest() {
    let test = "net_restart";
    if net_unavailable(test, true) {
        return;
    }
    let g = NetGuard::new(test, "198.18.60.0/24", true);
    g.make_router().await;
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    // The first supervisor stands for one that crashed: it must not react to anything.
    let start = |name: &str, v: VethSpec| {
        let mut spec = sh(name, "exec sleep 600");
        spec.on_main_exit = OnMainExit::KeepRunning;
        spec.network = Network::Veth(v);
        e.sup.start(spec)
    };
    let live = start("live", VethSpec::default()).await.unwrap().info;
    let dead = start("dead", VethSpec::default()).await.unwrap().info;
    let lost = start(
        "lost",
        VethSpec {
            nat: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .info;
    let records = e.sup.records();
    let rec = |lc| records.iter().find(|r| r.lifecycle == lc).cloned().unwrap();
    let (r_live, r_dead) = (rec(live.lifecycle), rec(dead.lifecycle));
    assert_eq!(r_live.network, live.network, "the record holds the network");

    // A network half made by a crash (namespace and link, lease recorded, no record).
    let half = paddock_net::Key::new("00000000000000ff").unwrap();
    let lease = paddock_net::LeaseFile::new(&g.lease_file, g.pool.parse().unwrap())
        .unwrap()
        .allocate(&g.tag(), half.as_str(), &[], |_| false)
        .unwrap()
        .0;
    let router = std::fs::File::open(g.router_path()).unwrap();
    let raw = paddock_net::Network::new_in(&g.pin_dir, g.tag(), router.into())
        .await
        .unwrap();
    raw.create(
        &half,
        &paddock_net::SandboxSpec {
            lease,
            taps: vec![],
            rules: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(g.pinned().len(), 4);
    assert_eq!(g.leases().len(), 4);

    // "dead" dies while no supervisor watches, and its cgroup goes.
    std::fs::write(dead.cgroup_path.join("cgroup.kill"), "1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::remove_dir(&dead.cgroup_path).is_err() {
        assert!(
            Instant::now() < deadline,
            "the killed sandbox's cgroup stays busy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The restart: the same owner, root and network configuration.
    let mut cfg = Config::new(e.root.clone());
    g.configure(&mut cfg);
    let sup2 = Supervisor::new(cfg).unwrap();
    let a = sup2.adopt(r_live).await.unwrap();
    assert!(
        matches!(a, Adopted::Running(ref i) if i.network == live.network),
        "{a:?}"
    );
    let a = sup2.adopt(r_dead).await.unwrap();
    assert!(matches!(a, Adopted::Gone { .. }), "{a:?}");
    let report = sup2.reclaim().await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let owner_of = |i: &paddock_supervisor::SandboxInfo| i.network.as_ref().unwrap().owner.clone();
    let mut namespaces = report.net_namespaces.clone();
    namespaces.sort();
    let mut want = vec![
        owner_of(&dead),
        owner_of(&lost),
        format!("{}+{}", g.owner, half),
    ];
    want.sort();
    assert_eq!(namespaces, want, "{report:?}");
    assert_eq!(report.net_links.len(), 3, "{report:?}");
    assert_eq!(report.net_rules, vec![owner_of(&lost)], "{report:?}");
    assert_eq!(report.net_leases.len(), 3, "{report:?}");
    assert_eq!(report.reclaimed.len(), 1, "lost's cgroup: {report:?}");
    let c = sup2.counters();
    assert_eq!(c.net_reclaimed_namespaces.load(Relaxed), 3);
    assert_eq!(c.net_reclaimed_links.load(Relaxed), 3);
    assert_eq!(c.net_reclaimed_rules.load(Relaxed), 1);
    assert_eq!(c.net_reclaimed_leases.load(Relaxed), 3);
    assert_eq!(sup2.net_gauges().namespaces, 1);
    assert_eq!(sup2.net_gauges().leases, 1);

    // Only the live sandbox's network is left, and it is still connected.
    assert_eq!(g.pinned(), vec![owner_of(&live)]);
    let held = g.leases();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].lease.key, live.lifecycle.to_string());
    let n = live.network.clone().unwrap();
    let (srv, port) = serve_once(
        Path::new(&n.netns),
        n.sandbox_address.parse().unwrap(),
        0,
        b"still here",
    );
    let to = SocketAddr::new(n.sandbox_address.parse().unwrap(), port);
    assert_eq!(ping(Some(&g.router_path()), to).unwrap(), b"still here");
    srv.join().unwrap();
    // A second reclaim finds nothing more.
    let again = sup2.reclaim().await.unwrap();
    assert!(
        again.net_namespaces.is_empty() && again.net_leases.is_empty(),
        "{again:?}"
    );

    sup2.stop(&live.id, Some(live.lifecycle)).await.unwrap();
    assert!(g.pinned().is_empty());
    assert!(g.leases().is_empty());
    assert_eq!(sup2.net_gauges(), Default::default());
}

/// The lease of a `paddock run` that died (a `pid:` owner whose process is gone) is
/// dropped by the next allocation from the shared file, and its objects reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_lease_and_objects_are_reclaimed() {
    let test = "net_dead_run";
    if net_unavailable(test, false) {
        return;
    }
    let g = NetGuard::new(test, "198.18.61.0/29", true);
    g.make_router().await;
    let Some(e) = env_with(test, |c| g.configure(c)) else {
        return;
    };
    // A dead process's owner tag: this process's pid namespace, a pid that exists with
    // another start time (ours, start time 1), so it is provably not that process.
    let me = paddock_cgroup::Owner::this_process().unwrap().to_string();
    let mut parts: Vec<&str> = me.split(':').collect();
    parts[2] = "1";
    let dead_tag = paddock_net::Tag::new(parts.join(":")).unwrap();
    let file = paddock_net::LeaseFile::new(&g.lease_file, g.pool.parse().unwrap()).unwrap();
    let key = paddock_net::Key::new("0000000000000abc").unwrap();
    let (lease, _) = file
        .allocate(&dead_tag, key.as_str(), &[], |_| false)
        .unwrap();
    let router = std::fs::File::open(g.router_path()).unwrap();
    let theirs = paddock_net::Network::new_in(&g.pin_dir, dead_tag.clone(), router.into())
        .await
        .unwrap();
    theirs
        .create(
            &key,
            &paddock_net::SandboxSpec {
                lease,
                taps: vec![],
                rules: Default::default(),
            },
        )
        .await
        .unwrap();
    let theirs_owner = format!("{dead_tag}+{key}");
    assert!(NetNames::of(&g).contains(&theirs_owner));

    // The pool (a /29: two /30s) has one free; a reclaim frees the dead run's.
    let report = e.sup.reclaim().await.unwrap();
    assert_eq!(report.net_leases, vec![theirs_owner.clone()], "{report:?}");
    assert_eq!(
        report.net_namespaces,
        vec![theirs_owner.clone()],
        "{report:?}"
    );
    assert!(!NetNames::of(&g).contains(&theirs_owner));
    assert!(g.leases().is_empty());
}

struct NetNames;
impl NetNames {
    fn of(g: &NetGuard) -> Vec<String> {
        paddock_net::NetnsDir::new(&g.pin_dir).list().unwrap()
    }
}
