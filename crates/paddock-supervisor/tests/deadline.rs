//! Deadlines against the real kernel: a sandbox is stopped gracefully, by its own stop
//! policy and with reason `deadline`, when its deadline passes; `extend_deadline` moves it
//! (recorded, with an event) and is refused for a sandbox that is not running; an adopted
//! sandbox keeps the deadline of its record, also one that passed while no supervisor ran.
//! Needs root and a writable cgroup2 (skipped with a reason otherwise).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{env, sh};
use paddock_supervisor::{Adopted, Config, Error, EventKind, OnMainExit, StopReason, Supervisor};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The payload: exits 3 on SIGTERM (so the report shows the graceful stop), else sleeps.
const TRAPS_TERM: &str = "trap 'exit 3' TERM; sleep 100 & wait";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_the_sandbox_gracefully_with_reason_deadline() {
    let Some(env) = env("a_deadline_stops_the_sandbox_gracefully") else {
        return;
    };
    let mut events = env.sup.events();
    let mut spec = sh("dl-1", TRAPS_TERM);
    spec.deadline_ms = Some(300);
    let t0 = Instant::now();
    let s = env.sup.start(spec).await.unwrap().info;
    let at = s.deadline_at_ms.expect("the deadline is shown");
    assert!(
        at >= s.created_at_ms + 300 && at <= s.created_at_ms + 400,
        "{at} {s:?}"
    );
    let r = env
        .sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.reason, StopReason::Deadline, "{r:?}");
    assert_eq!(
        r.killed_after_grace, 0,
        "stopped by SIGTERM, not killed: {r:?}"
    );
    let exit = env.sup.get(&s.id).unwrap().main_exit.unwrap();
    assert_eq!(exit.code, Some(3), "the payload's TERM trap ran: {exit:?}");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e.kind);
    }
    assert!(
        seen.contains(&EventKind::Deadline { deadline_at_ms: at }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&EventKind::Stopping {
            reason: StopReason::Deadline
        }),
        "{seen:?}"
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_moves_the_deadline_and_is_refused_when_not_running() {
    let Some(env) = env("extending_moves_the_deadline") else {
        return;
    };
    let mut spec = sh("dl-2", TRAPS_TERM);
    spec.deadline_ms = Some(400);
    let t0 = Instant::now();
    let s = env.sup.start(spec).await.unwrap().info;
    let first = s.deadline_at_ms.unwrap();
    let mut events = env.sup.events();
    let moved = env
        .sup
        .extend_deadline(&s.id, Duration::from_millis(600))
        .await
        .unwrap();
    assert_eq!(moved, first + 600);
    assert_eq!(env.sup.get(&s.id).unwrap().deadline_at_ms, Some(moved));
    assert_eq!(
        events.recv().await.unwrap().kind,
        EventKind::DeadlineSet {
            deadline_at_ms: moved
        }
    );
    // The record a restarted supervisor would read has it too.
    let rec = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle);
    if let Some(rec) = rec {
        assert_eq!(rec.deadline_at_ms, Some(moved));
    }
    // Zero keeps the deadline as it is.
    assert_eq!(
        env.sup
            .extend_deadline(&s.id, Duration::ZERO)
            .await
            .unwrap(),
        moved
    );
    // Out of range: refused, nothing changed.
    for bad in [Duration::from_secs(86_400 * 366)] {
        assert!(
            matches!(
                env.sup.extend_deadline(&s.id, bad).await,
                Err(Error::InvalidSpec(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(env.sup.get(&s.id).unwrap().deadline_at_ms, Some(moved));
    let r = env
        .sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.reason, StopReason::Deadline);
    // Stopped: refused.
    assert!(matches!(
        env.sup.extend_deadline(&s.id, Duration::from_secs(1)).await,
        Err(Error::InvalidState { .. })
    ));
    // A sandbox started without a deadline gets one.
    let s = env.sup.start(sh("dl-3", TRAPS_TERM)).await.unwrap().info;
    assert_eq!(s.deadline_at_ms, None);
    let before = now_ms();
    let at = env
        .sup
        .extend_deadline(&s.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(at >= before + 200 && at <= now_ms() + 200, "{at}");
    let r = env
        .sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    assert_eq!(r.reason, StopReason::Deadline);
    assert!(now_ms() >= at);
    env.assert_no_leaks();
}

/// A restarted supervisor stops an adopted sandbox at the deadline of its record (not
/// before), and at once when that deadline passed while no supervisor ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_sandbox_keeps_its_deadline() {
    let Some(env) = env("an_adopted_sandbox_keeps_its_deadline") else {
        return;
    };
    let mut cfg = Config::new(env.root.clone());
    cfg.subreaper = true;
    let sup2 = Supervisor::new(cfg).unwrap();
    for (name, in_ms) in [("dl-4", 800u64), ("dl-5", 0)] {
        // The first supervisor stands for one that crashed: no deadline of its own, and
        // it does not react to the main process's exit.
        let mut spec = sh(name, TRAPS_TERM);
        spec.on_main_exit = OnMainExit::KeepRunning;
        let s = env.sup.start(spec).await.unwrap().info;
        let mut record = env
            .sup
            .records()
            .into_iter()
            .find(|r| r.lifecycle == s.lifecycle)
            .expect("the supervisor keeps records");
        let at = now_ms() + in_ms;
        record.deadline_at_ms = Some(at);
        let mut events = sup2.events();
        let adopted_at = now_ms();
        let Adopted::Running(info) = sup2.adopt(record).await.unwrap() else {
            panic!("not adopted as running")
        };
        assert_eq!(info.deadline_at_ms, Some(at));
        let r = sup2.wait_stopped(&s.id, Some(s.lifecycle)).await.unwrap();
        assert_eq!(r.reason, StopReason::Deadline, "{name}: {r:?}");
        assert!(now_ms() >= at, "{name}: stopped before its deadline");
        // The stop began at the deadline (at once for one that had passed).
        let mut began = None;
        while let Ok(e) = events.try_recv() {
            if let EventKind::Deadline { .. } = e.kind {
                began = Some(e.at_ms);
            }
        }
        let began = began.expect("a deadline event");
        assert!(began >= at, "{name}: began {began}, deadline {at}");
        assert!(
            began < adopted_at.max(at) + 1_000,
            "{name}: began {} ms after its time",
            began - adopted_at.max(at)
        );
    }
    env.assert_no_leaks();
}
