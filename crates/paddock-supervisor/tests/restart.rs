//! Restart policies against the real kernel: `on_failure` restarts a failing payload as new
//! lifecycles of the same ID, with a doubling backoff, up to its limit; a clean exit is not
//! restarted under `on_failure` and is under `always`; a stop during the backoff cancels
//! the restart (recorded); a restart pending when the supervisor stopped is made by the
//! next one after adoption. Needs root and a writable cgroup2 (skipped with a reason
//! otherwise).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{env, sh};
use paddock_supervisor::{
    Adopted, Config, Error, EventKind, LifecycleId, OnMainExit, RestartMode, RestartPolicy,
    SandboxId, StdioTarget, Supervisor,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn policy(mode: RestartMode, max: Option<u32>, initial_ms: u64) -> RestartPolicy {
    RestartPolicy {
        mode,
        max_restarts: max,
        initial_backoff_ms: initial_ms,
        max_backoff_ms: 10_000,
    }
}

/// Waits (bounded) until the current lifecycle of `id` is restart number `count` and has
/// stopped; returns it.
async fn stopped_restart(sup: &Supervisor, id: &SandboxId, count: u32) -> LifecycleId {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = sup.get(id)
            && i.restart_count == count
            && i.state == paddock_supervisor::State::Stopped
        {
            return i.lifecycle;
        }
        assert!(
            Instant::now() < deadline,
            "restart {count} of {id} did not stop in time: {:?}",
            sup.get(id)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_up_to_its_limit_with_a_doubling_backoff() {
    let Some(env) = env("on_failure_restarts_up_to_its_limit") else {
        return;
    };
    let mut events = env.sup.events();
    let mut spec = sh("rs-1", "exit 3");
    spec.restart = policy(RestartMode::OnFailure, Some(2), 50);
    let first = env.sup.start(spec).await.unwrap().info;
    let last = stopped_restart(&env.sup, &first.id, 2).await;
    let info = env.sup.get_lifecycle(&first.id, last).unwrap();
    assert_eq!(info.restart_pending, None, "the limit is reached: {info:?}");
    assert_eq!(info.main_exit.unwrap().code, Some(3));
    let mut restarting = Vec::new();
    let mut lifecycles = std::collections::BTreeSet::new();
    while let Ok(e) = events.try_recv() {
        lifecycles.insert(e.lifecycle);
        if let EventKind::Restarting {
            attempt,
            restart_at_ms,
        } = e.kind
        {
            restarting.push((attempt, restart_at_ms.saturating_sub(e.at_ms)));
        }
    }
    assert_eq!(lifecycles.len(), 3, "three lifecycles of one ID");
    let attempts: Vec<u32> = restarting.iter().map(|r| r.0).collect();
    assert_eq!(attempts, vec![1, 2]);
    // The backoffs: 50 ms, then doubled.
    assert!((45..=60).contains(&restarting[0].1), "{restarting:?}");
    assert!((95..=110).contains(&restarting[1].1), "{restarting:?}");
    assert_eq!(
        env.sup
            .counters()
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_exits_always_and_a_stop_that_cancels_the_backoff() {
    let Some(env) = env("clean_exits_always_and_a_stop_that_cancels") else {
        return;
    };
    // on_failure: a clean exit is not restarted.
    let mut spec = sh("rs-2", "exit 0");
    spec.restart = policy(RestartMode::OnFailure, None, 10);
    let s = env.sup.start(spec).await.unwrap().info;
    env.sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    assert_eq!(env.sup.get(&s.id).unwrap().restart_pending, None);

    // always: it is; a stop during the backoff cancels it, on record too.
    let mut spec = sh("rs-3", "exit 0");
    spec.restart = policy(RestartMode::Always, None, 300);
    let s = env.sup.start(spec).await.unwrap().info;
    let mut events = env.sup.events();
    env.sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    let pending = env.sup.get(&s.id).unwrap().restart_pending;
    assert_eq!(pending.map(|p| p.attempt), Some(1), "{pending:?}");
    env.sup.stop(&s.id, None).await.unwrap();
    let info = env.sup.get(&s.id).unwrap();
    assert_eq!(info.restart_pending, None, "{info:?}");
    assert_eq!(info.lifecycle, s.lifecycle);
    let rec = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    assert_eq!(rec.restart_pending, None, "the cancellation is on record");
    let mut cancelled = false;
    while let Ok(e) = events.try_recv() {
        cancelled |= e.kind == EventKind::RestartCancelled;
    }
    assert!(cancelled);
    // Past the backoff, no new lifecycle came (the timer was cancelled).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.sup.get(&s.id).unwrap().lifecycle, s.lifecycle);

    // Refused specs: nothing started.
    let mut keep = sh("rs-bad", "true");
    keep.restart = policy(RestartMode::Always, None, 10);
    keep.on_main_exit = OnMainExit::KeepRunning;
    assert!(matches!(
        env.sup.start(keep).await,
        Err(Error::Inconsistent(_))
    ));
    let mut piped = sh("rs-bad", "true");
    piped.restart = policy(RestartMode::Always, None, 10);
    piped.stdio.stdout = StdioTarget::Pipe;
    assert!(matches!(
        env.sup.start(piped).await,
        Err(Error::Inconsistent(_))
    ));
    let mut backoff = sh("rs-bad", "true");
    backoff.restart = policy(RestartMode::Always, None, 0);
    assert!(matches!(
        env.sup.start(backoff).await,
        Err(Error::InvalidSpec(_))
    ));
    assert!(env.sup.get(&SandboxId::new("rs-bad").unwrap()).is_none());
    env.assert_no_leaks();
}

/// A restart pending in the record of a stopped lifecycle is made by a supervisor that
/// adopts the record (as after a crash during the backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_restart_is_made_after_adoption() {
    let Some(env) = env("a_pending_restart_is_made_after_adoption") else {
        return;
    };
    let mut spec = sh("rs-4", "exit 1");
    // Long enough that the first supervisor never makes it in this test.
    spec.restart = RestartPolicy {
        max_backoff_ms: 60_000,
        ..policy(RestartMode::Always, Some(1), 60_000)
    };
    let s = env.sup.start(spec).await.unwrap().info;
    env.sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    let mut record = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    let mut pending = record.restart_pending.expect("a restart is pending");
    assert_eq!(pending.attempt, 1);
    // The first supervisor is gone (its timer with it); the restart's time has come.
    env.sup.forget(&s.id).unwrap();
    pending.at_ms = now_ms() + 100;
    record.restart_pending = Some(pending);
    let mut cfg = Config::new(env.root.clone());
    cfg.subreaper = true;
    let sup2 = Supervisor::new(cfg).unwrap();
    assert!(matches!(
        sup2.adopt(record).await.unwrap(),
        Adopted::Gone { .. }
    ));
    let lc = stopped_restart(&sup2, &s.id, 1).await;
    assert_ne!(lc, s.lifecycle);
    let info = sup2.get(&s.id).unwrap();
    assert_eq!(
        info.restart_pending, None,
        "max_restarts 1 reached: {info:?}"
    );
    assert!(info.created_at_ms >= pending.at_ms, "{info:?}");
    env.assert_no_leaks();
}
