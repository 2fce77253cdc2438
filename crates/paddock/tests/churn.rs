//! The daemon SIGKILLed at pseudo-random moments during a churn of creates and stops, then
//! restarted, many times. After every restart: every cgroup under the root belongs to a
//! sandbox the daemon lists, every live sandbox is controllable, and at the end nothing is
//! left at all (checked by walking the cgroup tree and /proc, not by asking the daemon).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// A tiny deterministic generator, so a failing round can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn daemon_killed_during_churn_loses_and_leaks_nothing() {
    let Some(w) = world("daemon_killed_during_churn_loses_and_leaks_nothing") else {
        return;
    };
    let w = Arc::new(w);
    let seed = std::env::var("PADDOCK_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("churn seed {seed} (PADDOCK_CHURN_SEED to replay)");
    let mut rng = Lcg(seed);
    for round in 0..8 {
        let mut d = w.daemon(&[]);
        // Every cgroup under the root belongs to a listed sandbox: the restart adopted the
        // live ones and reclaimed the rest.
        let listed: Vec<String> = w
            .http("GET", "/v1/sandboxes", None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}@{}",
                    s["id"].as_str().unwrap(),
                    s["lifecycle"].as_str().unwrap()
                )
            })
            .collect();
        for cg in w.cgroups() {
            assert!(
                listed.contains(&cg),
                "round {round}: cgroup {cg} belongs to no listed sandbox ({listed:?})"
            );
        }
        // Churn: creates (leaky payloads among them) and kills, from another thread.
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let w = w.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("c{round}-{i}");
                    let script = if i % 2 == 0 { LEAKY } else { "exec sleep 300" };
                    let body = spec(&id, script);
                    let _ = try_http_unix(&w.socket, "POST", "/v1/sandboxes", Some(&body), &[]);
                    if i % 3 == 2 {
                        let victim = format!("c{round}-{}", i - 1);
                        let _ = try_http_unix(
                            &w.socket,
                            "POST",
                            &format!("/v1/sandboxes/{victim}/kill"),
                            None,
                            &[],
                        );
                    }
                    i += 1;
                }
            })
        };
        // The fault: SIGKILL at a pseudo-random moment of the churn.
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 250));
        d.sigkill();
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }
    // A last daemon: everything live is controllable; stopping it all leaves nothing.
    let d = w.daemon(&[]);
    let all = w.http("GET", "/v1/sandboxes", None).json();
    let live: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            matches!(
                s["state"].as_str(),
                Some("running") | Some("stopping") | Some("quarantined")
            )
        })
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !live.is_empty(),
        "the churn left no live sandbox to check: {all}"
    );
    for id in &live {
        let r = w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None);
        assert_eq!(r.status, 200, "kill {id}: {}", r.text());
    }
    eprintln!(
        "{} live sandboxes survived 8 daemon crashes and were stopped",
        live.len()
    );
    drop(d);
    w.assert_no_leaks();
}
