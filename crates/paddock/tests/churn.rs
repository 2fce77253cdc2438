//! The daemon SIGKILLed at pseudo-random moments during a churn of creates, kills and
//! graceful stops, then restarted, many times (`PADDOCK_CHURN_ROUNDS`, default 8; the long
//! run in docs/torture.md uses 200). After every restart, checked by walking the cgroup
//! tree and /proc rather than asking the daemon: every cgroup under the root belongs to a
//! sandbox the daemon lists, every live process under the root is in the cgroup of a listed
//! live sandbox; and every running sandbox is controllable (each answers GET, one is paused
//! and resumed, its cgroup.freeze following). At the end nothing is left at all.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

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

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The sandboxes the daemon lists, by cgroup name (`<id>@<lifecycle>`).
fn listed(w: &World) -> BTreeMap<String, Value> {
    w.http("GET", "/v1/sandboxes", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}@{}",
                    s["id"].as_str().unwrap(),
                    s["lifecycle"].as_str().unwrap()
                ),
                s.clone(),
            )
        })
        .collect()
}

fn is_live(s: &Value) -> bool {
    matches!(
        s["state"].as_str(),
        Some("running") | Some("stopping") | Some("quarantined")
    )
}

/// Live processes under the managed root, with the first path component below it (the
/// sandbox cgroup they are in), read from /proc.
fn procs_under_root(w: &World) -> Vec<(i32, String)> {
    let rel = format!(
        "/{}/",
        w.cgroot
            .strip_prefix(w.t.mount())
            .unwrap()
            .display()
            .to_string()
            .trim_matches('/')
    );
    live_procs_with_cgroup()
        .into_iter()
        .filter_map(|(pid, cg)| {
            let below = cg.strip_prefix(&rel)?;
            Some((pid, below.split('/').next().unwrap_or("").to_owned()))
        })
        .collect()
}

/// The checks after a restart (nothing runs against the daemon meanwhile).
fn check_after_restart(w: &World, round: u64, rng: &mut Lcg) -> usize {
    let listed = listed(w);
    // Every cgroup under the root belongs to a listed sandbox: the restart adopted the live
    // ones and reclaimed the rest.
    for cg in w.cgroups() {
        assert!(
            listed.contains_key(&cg),
            "round {round}: cgroup {cg} belongs to no listed sandbox ({:?})",
            listed.keys()
        );
    }
    // Every live process under the root is in the cgroup of a listed live sandbox. A
    // process of a sandbox listed as stopping may exit meanwhile, so re-check the ones
    // that fail once the daemon's view is re-read.
    let bad: Vec<(i32, String)> = procs_under_root(w)
        .into_iter()
        .filter(|(_, cg)| !listed.get(cg).is_some_and(is_live))
        .collect();
    if !bad.is_empty() {
        let again = self::listed(w);
        let still: Vec<_> = bad
            .into_iter()
            .filter(|(pid, cg)| {
                paddock_testutil::pid_alive(*pid) && !again.get(cg).is_some_and(is_live)
            })
            .map(|(pid, cg)| {
                let st = again.get(&cg).map(|s| s["state"].clone());
                format!("pid {pid} in {cg} (listed: {st:?})")
            })
            .collect();
        assert!(
            still.is_empty(),
            "round {round}: processes under the root outside any live sandbox: {still:?}"
        );
    }
    // Every running sandbox answers; one of them is paused and resumed.
    let running: Vec<&Value> = listed
        .values()
        .filter(|s| s["state"] == "running" && s["current"] == true)
        .collect();
    for s in &running {
        let id = s["id"].as_str().unwrap();
        let r = w.http("GET", &format!("/v1/sandboxes/{id}"), None);
        assert_eq!(r.status, 200, "round {round}: GET {id}: {}", r.text());
        assert_eq!(r.json()["lifecycle"], s["lifecycle"], "round {round}: {id}");
    }
    if !running.is_empty() {
        let s = running[(rng.next() as usize) % running.len()];
        let id = s["id"].as_str().unwrap();
        let cg = w
            .cgroot
            .join(format!("{id}@{}", s["lifecycle"].as_str().unwrap()));
        let freeze = || {
            std::fs::read_to_string(cg.join("cgroup.freeze"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let r = w.http("POST", &format!("/v1/sandboxes/{id}/pause"), None);
        assert_eq!(r.status, 200, "round {round}: pause {id}: {}", r.text());
        assert_eq!(r.json()["paused"], true, "round {round}: pause {id}");
        assert_eq!(freeze(), "1", "round {round}: {id} paused but not frozen");
        let r = w.http("POST", &format!("/v1/sandboxes/{id}/resume"), None);
        assert_eq!(r.status, 200, "round {round}: resume {id}: {}", r.text());
        assert_eq!(r.json()["paused"], false, "round {round}: resume {id}");
        assert_eq!(
            freeze(),
            "0",
            "round {round}: {id} resumed but still frozen"
        );
    }
    running.len()
}

#[test]
fn daemon_killed_during_churn_loses_and_leaks_nothing() {
    let Some(w) = world("daemon_killed_during_churn_loses_and_leaks_nothing") else {
        return;
    };
    let w = Arc::new(w);
    let seed = env_u64("PADDOCK_CHURN_SEED", 0x5eed);
    let rounds = env_u64("PADDOCK_CHURN_ROUNDS", 8);
    eprintln!(
        "churn seed {seed} (PADDOCK_CHURN_SEED to replay), {rounds} rounds (PADDOCK_CHURN_ROUNDS)"
    );
    let t0 = Instant::now();
    let mut rng = Lcg(seed);
    let mut checked_running = 0;
    // Graceful stops issued, answered 200, and cut short by the crash (no answer).
    let graceful_stats = Arc::new([0, 0, 0].map(AtomicUsize::new));
    for round in 0..rounds {
        let mut d = w.daemon(&[]);
        checked_running += check_after_restart(&w, round, &mut rng);
        // Churn: creates (leaky payloads among them), kills and graceful stops with a 2 s
        // grace (the leaky payload ignores SIGTERM, so the kill at the deadline often
        // lands in the middle of one), from other threads.
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let w = w.clone();
            let stop = stop.clone();
            let gs = graceful_stats.clone();
            std::thread::spawn(move || {
                let mut graceful = Vec::new();
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
                    if i % 4 == 3 {
                        // A graceful stop waits out its grace: in a thread of its own.
                        let victim = format!("c{round}-{}", i - 3);
                        let socket = w.socket.clone();
                        let gs = gs.clone();
                        graceful.push(std::thread::spawn(move || {
                            gs[0].fetch_add(1, Ordering::Relaxed);
                            match try_http_unix(
                                &socket,
                                "POST",
                                &format!("/v1/sandboxes/{victim}/stop?timeout=2s"),
                                None,
                                &[],
                            ) {
                                Ok(r) if r.status == 200 => gs[1].fetch_add(1, Ordering::Relaxed),
                                Ok(_) => 0,
                                Err(_) => gs[2].fetch_add(1, Ordering::Relaxed),
                            };
                        }));
                    }
                    i += 1;
                }
                // The daemon is dead by now: the graceful stops' connections have ended.
                for g in graceful {
                    g.join().unwrap();
                }
            })
        };
        // The fault: SIGKILL at a pseudo-random moment of the churn (later under the test
        // VM's emulation, where a create takes 5–20 times longer).
        let scale = if std::env::var_os("PADDOCK_VM").is_some() {
            8
        } else {
            1
        };
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 250) * scale);
        d.sigkill();
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }
    // A last daemon: checked like every other restart; everything live is controllable;
    // stopping it all (graceful stops and kills) leaves nothing.
    let d = w.daemon(&[]);
    checked_running += check_after_restart(&w, rounds, &mut rng);
    let all = w.http("GET", "/v1/sandboxes", None).json();
    let live: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| is_live(s))
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !live.is_empty(),
        "the churn left no live sandbox to check: {all}"
    );
    for (k, id) in live.iter().enumerate() {
        let path = if k % 2 == 0 {
            format!("/v1/sandboxes/{id}/kill")
        } else {
            format!("/v1/sandboxes/{id}/stop?timeout=100ms")
        };
        let r = w.http("POST", &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let gs = graceful_stats.each_ref().map(|a| a.load(Ordering::Relaxed));
    eprintln!(
        "{} live sandboxes survived {rounds} daemon crashes and were stopped; {checked_running} \
         running sandboxes checked after restarts; graceful stops in the churn: {} issued, {} \
         done, {} cut short by the crash; {:?}",
        live.len(),
        gs[0],
        gs[1],
        gs[2],
        t0.elapsed()
    );
    assert!(gs[0] > 0, "the churn issued no graceful stop");
    drop(d);
    w.assert_no_leaks();
}
