//! Bounded growth in the supervisor: the O(1) count of live lifecycles that admission
//! reads, the retention of stopped lifecycles, and the deletion of the records and logs
//! of lifecycles that leave the registry.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use paddock_supervisor::{
    Hooks, LifecycleId, Retention, SandboxId, State, StdioTarget, Supervisor,
};

/// Records every `on_forget` (what the daemon turns into a store row deletion).
#[derive(Default)]
struct Forgets(Mutex<Vec<(SandboxId, LifecycleId)>>);

impl Hooks for Forgets {
    fn on_forget(&self, id: &SandboxId, lc: LifecycleId) {
        self.0.lock().unwrap().push((id.clone(), lc));
    }
}

impl Forgets {
    fn has(&self, id: &SandboxId, lc: LifecycleId) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(i, l)| i == id && *l == lc)
    }
}

/// The count the admission check used to compute by listing every lifecycle.
fn live_by_listing(sup: &Supervisor) -> usize {
    sup.list()
        .iter()
        .filter(|i| {
            matches!(
                i.state,
                State::Running | State::Stopping | State::Quarantined
            )
        })
        .count()
}

fn assert_live(sup: &Supervisor, want: usize, when: &str) {
    assert_eq!(sup.live(), want, "live(), {when}");
    assert_eq!(live_by_listing(sup), want, "listed, {when}");
}

/// Polls (bounded) until `f` holds.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `live()` stays exact across one ID's start, stop, restart, restart while the previous
/// lifecycle is still stopping, kill, and a failed start; each lifecycle that leaves the
/// registry without a forget (replaced by a restart, or pruned after its stop) has its
/// record forgotten and its log deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_count_across_start_stop_restart_of_one_id() {
    let hooks = Arc::new(Forgets::default());
    let h = hooks.clone();
    let Some(env) = env_with("live_count_across_start_stop_restart", |c| c.hooks = h) else {
        return;
    };
    let sup = &env.sup;
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "one",
        &format!(
            "echo output; trap '' TERM; echo > {r}.t; mv {r}.t {r}; exec sleep 300",
            r = ready.display()
        ),
    );
    spec.stdio.stdout = StdioTarget::Log;
    spec.stop.grace_period_ms = 300;
    assert_live(sup, 0, "at first");

    let a = sup.start(spec.clone()).await.unwrap().info;
    assert_live(sup, 1, "started");
    sup.kill(&a.id, Some(a.lifecycle)).await.unwrap();
    assert_live(sup, 0, "killed");
    let log_a = sup.log_path(&a.id, a.lifecycle).unwrap();
    assert!(log_a.exists(), "a stopped lifecycle keeps its log");

    // A restart replaces the stopped lifecycle: its record and log go.
    let _ = std::fs::remove_file(&ready);
    let b = sup.start(spec.clone()).await.unwrap().info;
    assert_live(sup, 1, "restarted");
    assert!(
        hooks.has(&a.id, a.lifecycle),
        "replaced lifecycle not forgotten"
    );
    eventually(
        "the replaced lifecycle's log deleted",
        Duration::from_secs(5),
        || !log_a.exists(),
    )
    .await;

    // Restart while `b` is still stopping (it ignores SIGTERM): both count.
    wait_file(&ready, Duration::from_secs(5)).await;
    let (s2, id2) = (sup.clone(), b.id.clone());
    let stopping = tokio::spawn(async move { s2.stop(&id2, Some(b.lifecycle)).await });
    eventually("b stopping", Duration::from_secs(5), || {
        sup.get_lifecycle(&b.id, b.lifecycle)
            .is_some_and(|i| i.state == State::Stopping)
    })
    .await;
    assert_live(sup, 1, "b stopping");
    let c = sup.start(spec.clone()).await.unwrap().info;
    assert_live(sup, 2, "c started while b stops");
    stopping.await.unwrap().unwrap();
    assert_live(sup, 1, "b stopped");
    // `b` left the registry when its stop ended: record and log deleted.
    assert!(sup.get_lifecycle(&b.id, b.lifecycle).is_none());
    assert!(
        hooks.has(&b.id, b.lifecycle),
        "pruned lifecycle not forgotten"
    );
    let log_b = sup.log_path(&b.id, b.lifecycle).unwrap();
    eventually(
        "the pruned lifecycle's log deleted",
        Duration::from_secs(5),
        || !log_b.exists(),
    )
    .await;

    sup.kill(&c.id, Some(c.lifecycle)).await.unwrap();
    assert_live(sup, 0, "c killed");
    // A failed start never counts.
    let mut bad = sh("other", "true");
    bad.command = "/nonexistent/paddock-test".into();
    assert!(sup.start(bad).await.is_err());
    assert_live(sup, 0, "after a failed start");
    sup.forget_lifecycle(&c.id, Some(c.lifecycle)).unwrap();
    assert_live(sup, 0, "forgotten");
    env.assert_no_leaks();
}

/// A reservation counts in `admitted()` until its lifecycle leaves `Creating`, and then
/// only `live()` counts it: a start that returned is counted once (the API counted it
/// twice until its request ended, and refused parallel creates under `--max-sandboxes`
/// early: a CI run got a 429 for 8 creates under a limit of 10). A failed start and a
/// reservation dropped unused release it; memory follows the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_counts_until_its_lifecycle_is_live() {
    let Some(env) = env_with("reservation_counts_until_live", |_| {}) else {
        return;
    };
    let sup = &env.sup;
    assert_eq!(sup.admitted(), (0, 0), "at first");

    let r = sup.reserve(1 << 20);
    assert_eq!(sup.admitted(), (1, 1 << 20), "reserved");
    let a = sup
        .start_reserved(sh("a", "exec sleep 300"), r)
        .await
        .unwrap()
        .info;
    assert_eq!(sup.live(), 1);
    assert_eq!(sup.admitted(), (1, 0), "live, counted once");

    // Eight in parallel, each reserved before any starts: never more than 8 counted.
    let rs: Vec<_> = (0..8).map(|_| sup.reserve(0)).collect();
    assert_eq!(sup.admitted().0, 9);
    let starts = rs.into_iter().enumerate().map(|(i, r)| {
        let s = sup.clone();
        tokio::spawn(async move {
            s.start_reserved(sh(&format!("p{i}"), "exec sleep 300"), r)
                .await
        })
    });
    let mut ids = vec![];
    for t in starts {
        ids.push(t.await.unwrap().unwrap().info);
        assert!(sup.admitted().0 <= 9, "{:?} counted past 9", sup.admitted());
    }
    assert_eq!(sup.admitted(), (9, 0), "all live, each counted once");

    let mut bad = sh("bad", "true");
    bad.command = "/nonexistent/paddock-test".into();
    assert!(sup.start_reserved(bad, sup.reserve(4096)).await.is_err());
    assert_eq!(
        sup.admitted(),
        (9, 0),
        "a failed start releases its reservation"
    );
    drop(sup.reserve(4096));
    assert_eq!(sup.admitted(), (9, 0), "a dropped reservation is released");

    for i in ids.iter().chain([&a]) {
        sup.kill(&i.id, Some(i.lifecycle)).await.unwrap();
    }
    assert_eq!(sup.admitted(), (0, 0), "all stopped");
    env.assert_no_leaks();
}

/// With `retain_stopped` of at most 2 and 1 s: a third stopped lifecycle evicts the one
/// that stopped first at once, and the others go once they are 1 s old; each is forgotten
/// (record) and its log deleted. Running ones are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_stopped_lifecycles_by_count_and_age() {
    let hooks = Arc::new(Forgets::default());
    let h = hooks.clone();
    let Some(env) = env_with("retention_forgets_stopped_lifecycles", |c| {
        c.hooks = h;
        c.retain_stopped = Retention {
            max_age: Some(Duration::from_secs(1)),
            max_count: Some(2),
        };
    }) else {
        return;
    };
    let sup = &env.sup;
    let spec = |name: &str, script: &str| {
        let mut s = sh(name, script);
        s.stdio.stdout = StdioTarget::Log;
        s
    };
    let running = sup
        .start(spec("running", "exec sleep 300"))
        .await
        .unwrap()
        .info;
    let mut done = Vec::new();
    for i in 0..3 {
        let s = sup
            .start(spec(&format!("done-{i}"), "echo bye"))
            .await
            .unwrap()
            .info;
        sup.wait_stopped(&s.id, Some(s.lifecycle)).await.unwrap();
        done.push(s);
    }
    let t_last = Instant::now();
    // The count: done-0 went when done-2 stopped.
    let listed =
        |sup: &Supervisor| -> Vec<String> { sup.list().iter().map(|i| i.id.to_string()).collect() };
    let l = listed(sup);
    assert!(!l.contains(&"done-0".to_string()), "{l:?}");
    assert!(
        l.contains(&"done-1".to_string()) && l.contains(&"done-2".to_string()),
        "{l:?}"
    );
    assert!(hooks.has(&done[0].id, done[0].lifecycle));
    let log0 = sup.log_path(&done[0].id, done[0].lifecycle).unwrap();
    eventually("done-0's log deleted", Duration::from_secs(5), || {
        !log0.exists()
    })
    .await;
    // The age: the other two go after 1 s (not before: checked while surely younger).
    if t_last.elapsed() < Duration::from_millis(700) {
        assert_eq!(listed(sup).len(), 3, "pruned before their time");
    }
    eventually(
        "done-1 and done-2 pruned by age",
        Duration::from_secs(10),
        || listed(sup) == ["running"],
    )
    .await;
    for d in &done {
        assert!(hooks.has(&d.id, d.lifecycle), "{} not forgotten", d.id);
        let log = sup.log_path(&d.id, d.lifecycle).unwrap();
        eventually("logs deleted", Duration::from_secs(5), || !log.exists()).await;
    }
    assert_eq!(
        sup.counters()
            .retention_pruned
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The running one was never touched; once stopped, it is pruned in turn.
    assert_eq!(sup.get(&running.id).unwrap().state, State::Running);
    sup.kill(&running.id, Some(running.lifecycle))
        .await
        .unwrap();
    eventually(
        "running pruned after its stop",
        Duration::from_secs(10),
        || sup.list().is_empty(),
    )
    .await;
    env.assert_no_leaks();
}
