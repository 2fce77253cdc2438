//! Measures `Supervisor::kill` of a sandbox whose payload left a `setsid` escapee that
//! ignores SIGTERM: time from the kill request to the cgroup being gone. A quick profile
//! aid; `paddock-bench` is the benchmark of record.
//!
//! `cargo run --release -p paddock-supervisor --example kill_latency [N]` (as root).

use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::{Config, SandboxId, SandboxSpec, Supervisor};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let root =
        Root::open_or_create(std::path::Path::new("paddock-bench.kill-latency")).expect("root");
    let sup = Supervisor::new(Config::new(root.clone())).expect("supervisor");
    let mut times = Vec::with_capacity(n);
    let mut inner = Vec::with_capacity(n);
    for i in 0..n {
        let id = SandboxId::new(format!("k{i}")).unwrap();
        let spec = SandboxSpec::new(
            id.clone(),
            "/bin/sh",
            [
                "-c",
                "setsid sh -c 'trap \"\" TERM; exec sleep 300' & exec sleep 300",
            ],
        );
        let s = sup.start(spec).await.expect("start");
        // Let the payload build its tree.
        while sup.stats(&id, None).map(|s| s.processes).unwrap_or(0) < 2 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Past the kernel's 10 ms rate limit of cgroup.events notifications, as a sandbox
        // that has run for a while would be.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Called from a task, as an embedding program calls it (not from the thread blocked
        // on the runtime, whose hand-offs to the workers would be timed too).
        let (sup2, id2, lc) = (sup.clone(), id.clone(), s.info.lifecycle);
        let (dt, r) = tokio::spawn(async move {
            let t0 = Instant::now();
            let r = sup2.kill(&id2, Some(lc)).await.expect("kill");
            (t0.elapsed(), r)
        })
        .await
        .expect("kill task");
        times.push(dt);
        inner.push((r.total_ms, r.kill_ms, r.remove_ms));
        sup.forget(&id).unwrap();
    }
    times.sort();
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1000.0
    };
    println!(
        "inside the stop task: total p50={:.0}µs, kill p50={:.0}µs, remove p50={:.0}µs",
        med(inner.iter().map(|x| x.0).collect()),
        med(inner.iter().map(|x| x.1).collect()),
        med(inner.iter().map(|x| x.2).collect())
    );
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "kill of a leaky sandbox: n={n} p50={:.0}µs p90={:.0}µs p99={:.0}µs",
        p(0.5),
        p(0.9),
        p(0.99)
    );
    drop(sup);
    let _ = std::fs::remove_dir(root.path());
}
