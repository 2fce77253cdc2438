//! Root tests of the supervisor: lifecycles, the registry's guarantees, stop semantics,
//! pause/resume, quarantine, adoption and reclaim.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::*;
use paddock_supervisor::{
    Adopted, Config, Error, EventKind, Limits, Network, OnMainExit, State, StdioTarget, StopPolicy,
    Supervisor,
};

/// The payload double-forks a `setsid` escapee that ignores SIGTERM (`( setsid … & )`: the
/// subshell exits, so the escapee is orphaned and not the main's child), then its main
/// process exits: the sandbox ends, the escapee is killed, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_exit_stops_the_escapee() {
    let Some(env) = env("main_exit_stops_the_escapee") else {
        return;
    };
    let pidfile = env.scratch.path("esc");
    let mut spec = sh(
        "esc",
        &format!(
            "( setsid sh -c 'trap \"\" TERM; echo $$ > {p}.t; mv {p}.t {p}; exec sleep 300' & ) ; \
             while [ ! -e {p} ]; do sleep 0.01; done; exit 4",
            p = pidfile.display()
        ),
    );
    spec.stop.grace_period_ms = 200;
    let mut ev = env.sup.events();
    let s = env.sup.start(spec).await.unwrap();
    let report = env
        .sup
        .wait_stopped(&s.info.id, Some(s.info.lifecycle))
        .await
        .unwrap();
    let esc: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(esc), "escapee {esc} survived");
    assert_eq!(report.killed_after_grace, 1, "{report:?}");
    assert_eq!(
        report.killed.iter().map(|k| k.pid).collect::<Vec<_>>(),
        [esc],
        "{report:?}"
    );
    env.assert_no_leaks();
    let info = env.sup.get(&s.info.id).unwrap();
    assert_eq!(info.state, State::Stopped);
    assert_eq!(info.main_exit.unwrap().code, Some(4));
    // The event stream tells the story in order.
    let mut kinds = Vec::new();
    while let Ok(e) = ev.try_recv() {
        kinds.push(match e.kind {
            EventKind::Started { .. } => "started",
            EventKind::MainExited { .. } => "main_exited",
            EventKind::Stopping { .. } => "stopping",
            EventKind::LeakedProcessesKilled { .. } => "leaked_killed",
            EventKind::Stopped { .. } => "stopped",
            _ => "other",
        });
    }
    assert_eq!(
        kinds,
        [
            "started",
            "main_exited",
            "stopping",
            "leaked_killed",
            "stopped"
        ]
    );
}

/// `stopped` is the last event of a lifecycle: a stop (by request or a kill) that ends the
/// main process emits its `main_exited` before `stopped`, though the main's monitor and the
/// stop learn of the exit concurrently (the stop announces it when it learns first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_exited_comes_before_stopped() {
    let Some(env) = env("main_exited_comes_before_stopped") else {
        return;
    };
    let mut ev = env.sup.events();
    let mut lifecycles = Vec::new();
    for i in 0..40 {
        let s = env
            .sup
            .start(sh(&format!("order-{i}"), "exec sleep 300"))
            .await
            .unwrap();
        lifecycles.push(s.info.lifecycle);
        if i % 2 == 0 {
            env.sup.stop(&s.info.id, None).await.unwrap();
        } else {
            env.sup.kill(&s.info.id, None).await.unwrap();
        }
    }
    env.assert_no_leaks();
    let mut seen: std::collections::HashMap<_, Vec<&str>> = Default::default();
    while let Ok(e) = ev.try_recv() {
        let k = match e.kind {
            EventKind::MainExited { .. } => "main_exited",
            EventKind::Stopped { .. } => "stopped",
            _ => continue,
        };
        seen.entry(e.lifecycle).or_default().push(k);
    }
    for l in lifecycles {
        assert_eq!(
            seen.get(&l).map(Vec::as_slice),
            Some(&["main_exited", "stopped"][..]),
            "lifecycle {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_policy_outlives_main() {
    let Some(env) = env("keep_running_policy_outlives_main") else {
        return;
    };
    let mut spec = sh("keep", "sleep 300 & exit 0");
    spec.on_main_exit = OnMainExit::KeepRunning;
    let s = env.sup.start(spec).await.unwrap();
    let main = env
        .sup
        .wait_main_exit(&s.info.id, s.info.lifecycle)
        .await
        .unwrap();
    assert_eq!(main.code, Some(0));
    let info = env.sup.get(&s.info.id).unwrap();
    assert_eq!(info.state, State::Running);
    assert_eq!(env.sup.stats(&s.info.id, None).unwrap().processes, 1);
    let r = env.sup.stop(&s.info.id, None).await.unwrap();
    assert_eq!(r.signalled, 1);
    env.assert_no_leaks();
}

/// A failed start (bad program, bad cwd, missing controller, missing netns) returns the
/// cause and leaves nothing: no cgroup, no process, no registry entry.
#[tokio::test]
async fn failed_starts_leave_nothing() {
    let Some(env) = env("failed_starts_leave_nothing") else {
        return;
    };
    let mut cases = Vec::new();
    cases.push((
        "ENOENT",
        paddock_supervisor::SandboxSpec::new(id("f1"), "/nonexistent/prog", Vec::<String>::new()),
    ));
    let mut c = sh("f2", "true");
    c.cwd = Some("/nonexistent-dir".into());
    cases.push(("chdir", c));
    let mut c = sh("f3", "true");
    c.network = Network::Named("paddock-no-such-netns".into());
    cases.push(("netns", c));
    if !env
        .root
        .controllers()
        .unwrap()
        .iter()
        .any(|c| c == "memory")
    {
        let mut c = sh("f4", "true");
        c.limits = Limits {
            memory_max: Some(64 << 20),
            ..Limits::default()
        };
        cases.push(("memory", c));
    }
    let mut c = sh("f5", "true");
    c.stdio.stdout = StdioTarget::File("/nonexistent-dir/out.log".into());
    cases.push(("nonexistent-dir", c));
    for (what, spec) in cases {
        let sid = spec.id.clone();
        let e = env.sup.start(spec).await.unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
        if what == "netns" || what == "nonexistent-dir" {
            assert!(matches!(e, Error::InvalidSpec(_)), "{what}: {e:?}");
        }
        assert!(
            env.sup.get(&sid).is_none(),
            "{what}: registry kept a failed start"
        );
        env.assert_no_leaks();
    }
    // Invalid specs change nothing either.
    let mut bad = sh("f6", "true");
    bad.limits.cpu_weight = Some(0);
    assert!(matches!(
        env.sup.start(bad).await,
        Err(Error::InvalidSpec(_))
    ));
    // The missing netns and the stdio file are refused before the start is registered,
    // like an invalid spec: they are not failed starts.
    assert_eq!(
        env.sup
            .counters()
            .starts_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        3 - usize::from(
            env.root
                .controllers()
                .unwrap()
                .iter()
                .any(|c| c == "memory")
        ) as u64
    );
    env.assert_no_leaks();
}

/// Hooks that hold every start in `before_create` until the test opens the gate: the start
/// that got the ID is then still `creating` (it has yielded) while the other one runs.
struct GateHooks {
    calls: AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}
impl paddock_supervisor::Hooks for GateHooks {
    fn before_create(&self, _rec: &paddock_supervisor::Record) -> paddock_supervisor::Persisting {
        self.calls.fetch_add(1, SeqCst);
        let mut open = self.open.subscribe();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            Ok(())
        })
    }
}

/// Two starts of one ID released together on two worker threads, the winner held in
/// `creating` by a hook while the other runs: exactly one wins, the other gets
/// `AlreadyExists` having started nothing (it never reached the hook, no second cgroup, no
/// process outside the winner's cgroup). 50 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_starts_of_one_id_one_wins() {
    let gate = Arc::new(GateHooks {
        calls: AtomicUsize::new(0),
        open: tokio::sync::watch::channel(false).0,
    });
    let hooks = gate.clone();
    let Some(env) = env_with("two_concurrent_starts_of_one_id_one_wins", |c| {
        c.hooks = hooks;
    }) else {
        return;
    };
    for round in 0..50 {
        gate.open.send_replace(false);
        gate.calls.store(0, SeqCst);
        let together = Arc::new(tokio::sync::Barrier::new(2));
        let task = || {
            let (sup, together) = (env.sup.clone(), together.clone());
            tokio::spawn(async move {
                together.wait().await;
                sup.start(sh("dup", "exec sleep 300")).await.map(|s| s.info)
            })
        };
        let (a, b) = (task(), task());
        // The winner waits in the hook; the loser must have its answer meanwhile. (Were
        // both let through, both would wait in the hook: calls == 2.)
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = gate.calls.load(SeqCst);
            if calls >= 2 || (calls == 1 && (a.is_finished() || b.is_finished())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the starts never met"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            gate.calls.load(SeqCst),
            1,
            "round {round}: both starts got the ID"
        );
        assert_eq!(
            env.sup.get(&id("dup")).unwrap().state,
            State::Creating,
            "round {round}: the loser must have lost to a start still under way"
        );
        gate.open.send_replace(true);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (won, lost) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("round {round}: expected exactly one winner, got {a:?} / {b:?}"),
        };
        assert!(matches!(lost, Error::AlreadyExists(_)), "{lost}");
        let (names, other) = env.root.list().unwrap();
        assert_eq!(
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            [won.cgroup_path.file_name().unwrap().to_str().unwrap()],
            "round {round}: the loser must start nothing: {names:?} {other:?}"
        );
        let all = paddock_testutil::procs_recursive(env.t.path());
        let winners = paddock_testutil::procs_recursive(&won.cgroup_path);
        assert!(
            !all.is_empty() && all.iter().all(|p| winners.contains(p)),
            "round {round}: processes outside the winner's cgroup: {all:?} vs {winners:?}"
        );
        env.sup.kill(&won.id, Some(won.lifecycle)).await.unwrap();
        env.sup
            .forget_lifecycle(&won.id, Some(won.lifecycle))
            .unwrap();
    }
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_sandboxes_started_and_stopped_concurrently() {
    let Some(env) = env("hundred_sandboxes_started_and_stopped_concurrently") else {
        return;
    };
    let sup = env.sup.clone();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let sup = sup.clone();
        set.spawn(async move {
            // Each payload leaves a setsid escapee that ignores SIGTERM.
            let mut spec = sh(
                &format!("c{i}"),
                "setsid sh -c 'trap \"\" TERM; exec sleep 300' & exec sleep 300",
            );
            spec.stop = StopPolicy {
                grace_period_ms: 300,
                ..StopPolicy::default()
            };
            sup.start(spec).await.map(|s| s.info)
        });
    }
    let mut started = Vec::new();
    while let Some(r) = set.join_next().await {
        started.push(r.unwrap().unwrap());
    }
    let t_start = t0.elapsed();
    assert_eq!(
        sup.list()
            .iter()
            .filter(|i| i.state == State::Running)
            .count(),
        100
    );
    let mut set = tokio::task::JoinSet::new();
    for info in started {
        let sup = sup.clone();
        set.spawn(async move { sup.stop(&info.id, Some(info.lifecycle)).await });
    }
    while let Some(r) = set.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(r.stuck.is_empty());
    }
    eprintln!(
        "100 starts in {t_start:?}, all stopped after {:?}",
        t0.elapsed()
    );
    assert!(sup.list().iter().all(|i| i.state == State::Stopped));
    env.assert_no_leaks();
}

/// Twenty racing stop-and-restart cycles of one ID (the checkpoint/resume pattern that
/// made lifecycles unreachable, see docs/background.md) end with exactly one live lifecycle and nothing leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_stop_and_restart_cycles() {
    let Some(env) = env("racing_stop_and_restart_cycles") else {
        return;
    };
    let sup = env.sup.clone();
    let mut spec = sh("vm", "trap 'sleep 0.05; exit 0' TERM; sleep 300 & wait");
    spec.stop.grace_period_ms = 1_000;
    // Every lifecycle that ever started: the old ones are the stale handles used below.
    let mut lifecycles = vec![sup.start(spec.clone()).await.unwrap().info.lifecycle];
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let sup = sup.clone();
        let spec = spec.clone();
        set.spawn(async move {
            let _ = sup.stop(&spec.id, None).await;
            sup.start(spec).await.ok().map(|s| s.info.lifecycle)
        });
    }
    while let Some(r) = set.join_next().await {
        lifecycles.extend(r.unwrap());
    }
    assert!(lifecycles.len() >= 2, "no restart won");
    // Let every retiring lifecycle finish its own teardown.
    for info in sup.list() {
        if !info.current {
            let _ = sup.wait_stopped(&info.id, Some(info.lifecycle)).await;
        }
    }
    let live: Vec<_> = sup
        .list()
        .into_iter()
        .filter(|i| i.state == State::Running)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let (names, _) = env.root.list().unwrap();
    assert_eq!(
        names.len(),
        1,
        "exactly the live lifecycle's cgroup: {names:?}"
    );
    // Stale handles (real lifecycle IDs of earlier starts) can neither stop, kill, pause
    // nor evict the live one; stop and kill return the old lifecycle's own report.
    let live_pid = live[0].pid.unwrap();
    for &old in lifecycles.iter().filter(|&&l| l != live[0].lifecycle) {
        let stopped = sup.stop(&live[0].id, Some(old)).await;
        let killed = sup.kill(&live[0].id, Some(old)).await;
        let (Ok(stopped), Ok(killed)) = (stopped, killed) else {
            panic!("stop/kill of the finished lifecycle {old} must return its report");
        };
        assert_eq!(stopped, killed, "one lifecycle, one report");
        assert!(matches!(
            sup.pause(&live[0].id, Some(old)).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            sup.forget_lifecycle(&live[0].id, Some(old)),
            Err(Error::NotFound { .. })
        ));
        let now = sup.get(&live[0].id).unwrap();
        assert_eq!(
            (now.lifecycle, now.state, now.paused),
            (live[0].lifecycle, State::Running, false),
            "a stale handle ({old}) touched the live lifecycle"
        );
        assert!(alive(live_pid) && live[0].cgroup_path.exists());
    }
    let stale = paddock_supervisor::LifecycleId::fresh();
    assert!(matches!(
        sup.stop(&live[0].id, Some(stale)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        sup.forget_lifecycle(&live[0].id, Some(stale)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(sup.get(&live[0].id).unwrap().state, State::Running);
    assert_eq!(env.root.list().unwrap().0.len(), 1);
    sup.stop(&live[0].id, Some(live[0].lifecycle))
        .await
        .unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_old_lifecycle_is_stopping() {
    let Some(env) = env("restart_while_old_lifecycle_is_stopping") else {
        return;
    };
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "ckpt",
        &format!("trap '' TERM; echo > {}; exec sleep 300", ready.display()),
    );
    spec.stop.grace_period_ms = 500;
    let old = env.sup.start(spec.clone()).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(5)).await;
    let sup = env.sup.clone();
    let old_id = old.id.clone();
    let stopping = tokio::spawn(async move { sup.stop(&old_id, Some(old.lifecycle)).await });
    // Wait until the old lifecycle is stopping, then start the ID again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.sup.get(&old.id).unwrap().state != State::Stopping {
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let new = env.sup.start(spec).await.unwrap().info;
    assert_ne!(new.lifecycle, old.lifecycle);
    assert_ne!(new.cgroup_path, old.cgroup_path);
    let r = stopping.await.unwrap().unwrap();
    assert_eq!(r.killed_after_grace, 1);
    // The old one finished on its own and did not touch the new one.
    assert_eq!(env.sup.get(&new.id).unwrap().state, State::Running);
    assert!(new.cgroup_path.exists() && !old.cgroup_path.exists());
    env.sup.kill(&new.id, Some(new.lifecycle)).await.unwrap();
    env.assert_no_leaks();
}

/// Concurrent stops all get the same outcome; a kill during a graceful stop cuts the grace
/// period short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stops_share_one_outcome_and_kill_escalates() {
    let Some(env) = env("concurrent_stops_share_one_outcome_and_kill_escalates") else {
        return;
    };
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "many",
        &format!("trap '' TERM; echo > {}; exec sleep 300", ready.display()),
    );
    spec.stop.grace_period_ms = 30_000;
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    let sup = env.sup.clone();
    let mut stops = Vec::new();
    for _ in 0..5 {
        let sup = sup.clone();
        let id = s.id.clone();
        stops.push(tokio::spawn(
            async move { sup.stop(&id, None).await.unwrap() },
        ));
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // let the graceful stop begin
    let killed = env.sup.kill(&s.id, None).await.unwrap();
    for st in stops {
        assert_eq!(st.await.unwrap(), killed);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the kill did not cut the 30 s grace short"
    );
    assert_eq!(killed.killed_after_grace, 1);
    // Idempotent: stopping again returns the same report.
    assert_eq!(env.sup.stop(&s.id, None).await.unwrap(), killed);
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_stats_and_stop_while_paused() {
    let Some(env) = env("pause_resume_stats_and_stop_while_paused") else {
        return;
    };
    let out = env.scratch.path("ticks");
    let s = env
        .sup
        .start(sh(
            "pz",
            &format!("while :; do echo t >> {}; sleep 0.01; done", out.display()),
        ))
        .await
        .unwrap()
        .info;
    wait_file(&out, Duration::from_secs(5)).await;
    let p = env.sup.pause(&s.id, None).await.unwrap();
    assert!(p.paused);
    let n1 = std::fs::read_to_string(&out).unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().len(),
        n1,
        "a paused sandbox ran"
    );
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(st.cpu_usage_usec.unwrap() > 0 && st.processes >= 1);
    let r = env.sup.resume(&s.id, None).await.unwrap();
    assert!(!r.paused);
    env.sup.pause(&s.id, None).await.unwrap();
    let rep = env.sup.stop(&s.id, None).await.unwrap();
    assert!(rep.stuck.is_empty());
    assert!(
        !env.sup.get(&s.id).unwrap().paused,
        "a stopped sandbox is not paused"
    );
    assert!(matches!(
        env.sup.pause(&s.id, None).await,
        Err(Error::InvalidState { .. })
    ));
    env.assert_no_leaks();
}

/// A payload that forks as fast as it can while being stopped leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_forking_while_stopped() {
    let Some(env) = env("payload_forking_while_stopped") else {
        return;
    };
    for i in 0..10 {
        let ready = env.scratch.path(&format!("ready{i}"));
        let mut spec = sh(
            &format!("fork{i}"),
            &format!(
                "trap '' TERM; echo > {}; while :; do ( trap '' TERM; sleep 30 & ) ; done",
                ready.display()
            ),
        );
        spec.stop.grace_period_ms = 20;
        let s = env.sup.start(spec).await.unwrap().info;
        wait_file(&ready, Duration::from_secs(10)).await;
        // Stop while the storm is under way (some orphaned `sleep`s exist already).
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.sup.stats(&s.id, None).unwrap().processes < 4 {
            assert!(Instant::now() < deadline, "the storm never got going");
            tokio::task::yield_now().await;
        }
        let r = env.sup.stop(&s.id, None).await.unwrap();
        assert!(r.stuck.is_empty(), "{r:?}");
        assert!(
            r.killed_after_grace > 0,
            "the orphans ignore SIGTERM and must have been killed: {r:?}"
        );
        assert!(!s.cgroup_path.exists());
    }
    env.assert_no_leaks();
}

/// A payload that forks without pause ([`paddock_testutil::FORKER`]). Every child,
/// including one
/// whose fork was under way at the stop, must get SIGTERM, so the stop ends in the grace
/// period with nothing killed. Before the stop froze the cgroup to signal it, a child
/// forked at that instant lived until the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_reaches_children_forked_at_the_stop() {
    let Some(env) = env("graceful_stop_reaches_children_forked_at_the_stop") else {
        return;
    };
    for i in 0..5 {
        let mut spec = sh(&format!("forker{i}"), paddock_testutil::FORKER);
        spec.stop.grace_period_ms = 10_000;
        let s = env.sup.start(spec).await.unwrap().info;
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.sup.stats(&s.id, None).unwrap().processes < 30 {
            assert!(Instant::now() < deadline, "the forking never got going");
            tokio::task::yield_now().await;
        }
        let r = env.sup.stop(&s.id, None).await.unwrap();
        assert_eq!(r.killed_after_grace, 0, "round {i}: {r:?}");
        assert!(r.signalled >= 30, "round {i}: {r:?}");
        assert!(r.grace_ms < 5_000.0, "round {i}: {r:?}");
        assert!(!s.cgroup_path.exists());
    }
    env.assert_no_leaks();
}

/// A process that has SIGTERM blocked when the stop signal reaches it, and forks only
/// after the thaw ([`paddock_testutil::BLOCKED_FORKER`]; Perl does this around every
/// `fork`): its child must get SIGTERM too, so the stop ends in the grace period with
/// nothing killed. Before the stop followed up on such processes, the child's
/// `sleep 300` lived until the kill after the full grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_reaches_a_child_forked_after_the_thaw() {
    let test = "graceful_stop_reaches_a_child_forked_after_the_thaw";
    let Some(env) = env(test) else {
        return;
    };
    for i in 0..3 {
        let ready = std::env::temp_dir().join(format!("{test}.{}.{i}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let script = format!(
            "READY={} {}",
            ready.display(),
            paddock_testutil::BLOCKED_FORKER
        );
        let mut spec = sh(&format!("blocked{i}"), &script);
        spec.stop.grace_period_ms = 10_000;
        let s = env.sup.start(spec).await.unwrap().info;
        wait_file(&ready, Duration::from_secs(10)).await;
        let _ = std::fs::remove_file(&ready);
        let r = env.sup.stop(&s.id, None).await.unwrap();
        assert_eq!(r.killed_after_grace, 0, "round {i}: {r:?}");
        assert_eq!(
            r.signalled, 2,
            "round {i}: the parent, then its child: {r:?}"
        );
        assert!(r.grace_ms < 5_000.0, "round {i}: {r:?}");
        assert!(!s.cgroup_path.exists());
    }
    env.assert_no_leaks();
}

/// A process that cannot die (frozen by the v1 freezer, so in state D and immune to
/// SIGKILL) puts the sandbox in quarantine with the process named (pid, command, state,
/// wait channel), `pids.max = 0` where the controller exists and a `quarantined` event;
/// once it is released the sandbox is removed and stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkillable_process_quarantines_then_drains() {
    let test = "unkillable_process_quarantines_then_drains";
    let Some(freezer) = V1FreezerMount::find_or_mount(test) else {
        return;
    };
    let Some(env) = env_with(test, |c| c.quarantine_recheck = Duration::from_millis(100)) else {
        return;
    };
    let fz = V1Freezer::new(freezer.path());
    let mut spec = sh("stuck", "exec sleep 300");
    spec.stop = StopPolicy {
        grace_period_ms: 50,
        kill_timeout_ms: 300,
        ..StopPolicy::default()
    };
    let mut events = env.sup.events();
    let s = env.sup.start(spec).await.unwrap().info;
    let pid = s.pid.unwrap();
    // Freeze the `sleep`, not the shell before its `exec` (slow under the VM's emulation).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "the payload never exec'd sleep");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fz.freeze(pid);
    let wchan_now = std::fs::read_to_string(format!("/proc/{pid}/wchan"))
        .map(|w| w.trim().to_owned())
        .unwrap_or_default();
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert_eq!(r.stuck.len(), 1, "{r:?}");
    assert_eq!(r.stuck[0].pid, pid);
    assert_eq!(r.stuck[0].state.as_deref(), Some("D"));
    assert_eq!(r.stuck[0].comm.as_deref(), Some("sleep"), "{r:?}");
    if !wchan_now.is_empty() && wchan_now != "0" {
        // Readable here (root, kernel symbols not hidden): the report must have it too.
        assert!(
            r.stuck[0].wchan.as_deref().is_some_and(|w| !w.is_empty()),
            "/proc/{pid}/wchan says {wchan_now:?}, the report {r:?}"
        );
    }
    let q = env.sup.get(&s.id).unwrap();
    assert_eq!(q.state, State::Quarantined);
    assert!(
        q.cgroup_path.exists(),
        "a quarantined sandbox keeps its cgroup"
    );
    assert_eq!(q.stuck, r.stuck);
    match std::fs::read_to_string(q.cgroup_path.join("pids.max")) {
        Ok(v) => {
            assert_eq!(v.trim(), "0", "a quarantined sandbox keeps pids.max = 0");
            assert!(r.pids_frozen, "{r:?}");
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
            assert!(!in_vm(), "the VM has the pids controller");
        }
    }
    let mut quarantined_event = None;
    while let Ok(ev) = events.try_recv() {
        if let EventKind::Quarantined { stuck } = ev.kind {
            quarantined_event = Some((ev.lifecycle, stuck));
        }
    }
    assert_eq!(
        quarantined_event,
        Some((s.lifecycle, r.stuck.clone())),
        "no quarantined event naming the stuck process"
    );
    fz.thaw();
    let done = env
        .sup
        .wait_stopped(&s.id, Some(s.lifecycle))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.sup.get(&s.id).unwrap().state != State::Stopped {
        assert!(Instant::now() < deadline, "quarantine never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!done.stuck.is_empty());
    assert!(!alive(pid));
    // Drained like any stop: the main process's exit is known and its zombie reaped by
    // the time the outcome is out (torture once found it still a zombie child then).
    let info = env.sup.get(&s.id).unwrap();
    assert!(
        info.main_exit.is_some(),
        "no main exit after the drain: {info:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the main process {pid} is still a zombie after the drain"
    );
    assert_eq!(
        env.sup
            .counters()
            .quarantines_drained
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    env.assert_no_leaks();
    drop(fz);
    drop(freezer);
}

/// A cgroup v1 freezer hierarchy to hold a process in state D with: the host's
/// (`/sys/fs/cgroup/freezer` on a hybrid host), or, inside the test VM only, one mounted
/// for the test and unmounted on drop. The host's mounts are never changed.
struct V1FreezerMount {
    path: std::path::PathBuf,
    mounted: bool,
}
impl V1FreezerMount {
    fn find_or_mount(test: &str) -> Option<Self> {
        let host = std::path::Path::new("/sys/fs/cgroup/freezer");
        if host.join("freezer.state").exists() || host.join("cgroup.procs").exists() {
            return Some(V1FreezerMount {
                path: host.to_owned(),
                mounted: false,
            });
        }
        if !in_vm() {
            paddock_testutil::skip(
                test,
                "no cgroup v1 freezer hierarchy to hold a process in state D (mounting one is done only inside the test VM)",
            );
            return None;
        }
        let path = std::env::temp_dir().join(format!("paddock-freezer-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let out = paddock_proc::Command::new("mount")
            .args(["-t", "cgroup", "-o", "freezer", "paddock-freezer"])
            .arg(path.as_os_str())
            .output()
            .unwrap();
        if !out.status.success() {
            let _ = std::fs::remove_dir(&path);
            paddock_testutil::skip(
                test,
                &format!(
                    "could not mount a cgroup v1 freezer hierarchy: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
            return None;
        }
        Some(V1FreezerMount {
            path,
            mounted: true,
        })
    }
    fn path(&self) -> &std::path::Path {
        &self.path
    }
}
impl Drop for V1FreezerMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = paddock_proc::Command::new("umount")
                .arg(self.path.as_os_str())
                .output();
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// A v1 freezer cgroup owned by one test, thawed and removed on drop.
struct V1Freezer(std::path::PathBuf);
impl V1Freezer {
    fn new(base: &std::path::Path) -> Self {
        let p = base.join(format!("paddock-test-freeze-{}", std::process::id()));
        let _ = std::fs::create_dir(&p);
        V1Freezer(p)
    }
    fn freeze(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(self.0.join("freezer.state"), "FROZEN").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(self.0.join("freezer.state"))
            .unwrap()
            .trim()
            != "FROZEN"
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    fn thaw(&self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
}
impl Drop for V1Freezer {
    fn drop(&mut self) {
        self.thaw();
        // Processes leave a v1 cgroup when they exit; move any survivor back to the root.
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            let parent = self.0.parent().unwrap().join("cgroup.procs");
            for p in procs.lines() {
                let _ = std::fs::write(&parent, p);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A new supervisor (as after a crash) adopts a running sandbox and can stop it; a tagged
/// cgroup without a record is reclaimed; an untagged one is reported and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_after_restart_and_reclaim() {
    let Some(env) = env("adopt_after_restart_and_reclaim") else {
        return;
    };
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "adoptee",
        &format!(
            "setsid sh -c 'trap \"\" TERM; echo > {}; exec sleep 300' & exec sleep 300",
            ready.display()
        ),
    );
    spec.stop.grace_period_ms = 200;
    // The first supervisor stands for one that crashed: it must not react to anything.
    spec.on_main_exit = OnMainExit::KeepRunning;
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(5)).await;
    let record = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    // A leftover of ours without a record, and a stranger's cgroup.
    let orphan = env
        .root
        .create(&paddock_cgroup::CgroupName::new("lost@0000000000000001").unwrap())
        .unwrap();
    // The default owner is this process: `env.sup`'s and `sup2`'s alike.
    orphan.set_owner(env.sup.owner()).unwrap();
    let stranger = env
        .root
        .create(&paddock_cgroup::CgroupName::new("someone-else").unwrap())
        .unwrap();
    let mut cfg = Config::new(env.root.clone());
    cfg.subreaper = true;
    let sup2 = Supervisor::new(cfg).unwrap();
    let adopted = sup2.adopt(record.clone()).await.unwrap();
    let Adopted::Running(info) = adopted else {
        panic!("{adopted:?}")
    };
    assert_eq!(info.pid, s.pid);
    assert_eq!(info.state, State::Running);
    // A record whose PID now belongs to another process (wrong start time) is not adopted
    // as running: the main is treated as gone and the sandbox is stopped.
    let rep = sup2.reclaim().await.unwrap();
    assert_eq!(rep.reclaimed, vec!["lost@0000000000000001".to_string()]);
    assert_eq!(rep.untagged, vec!["someone-else".to_string()]);
    assert!(!orphan.path().exists() && stranger.path().exists());
    let r = sup2.stop(&s.id, None).await.unwrap();
    assert_eq!(r.killed_after_grace, 1, "{r:?}");
    assert!(!s.cgroup_path.exists());
    // Adopting a record whose cgroup is gone says so.
    assert!(matches!(
        sup2.adopt(record).await.unwrap(),
        Adopted::Running(_) | Adopted::Gone { .. }
    ));
    stranger.remove(&Default::default()).await.unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_refuses_a_reused_pid() {
    let Some(env) = env("adopt_refuses_a_reused_pid") else {
        return;
    };
    let s = env
        .sup
        .start(sh("reuse", "exec sleep 300"))
        .await
        .unwrap()
        .info;
    let mut record = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    record.main_start_time = record.main_start_time.map(|t| t + 1);
    let sup2 = Supervisor::new(Config::new(env.root.clone())).unwrap();
    let a = sup2.adopt(record).await.unwrap();
    // The PID does not match the recorded process, so the main counts as gone and the
    // default policy stops the sandbox.
    assert!(
        matches!(a, Adopted::Stopping(ref i) if i.pid.is_none()),
        "{a:?}"
    );
    sup2.wait_stopped(&s.id, None).await.unwrap();
    assert!(!s.cgroup_path.exists());
    let _ = Arc::new(());
    env.assert_no_leaks();
}

/// Where the pids controller exists (pure cgroup v2, e.g. the test VM), a stop sets
/// `pids.max = 0` before the kill, so a fork storm cannot outrun it; and `pids.max` given in
/// the spec caps the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sets_pids_max_zero_before_the_kill() {
    let test = "stop_sets_pids_max_zero_before_the_kill";
    let Some(env) = env(test) else { return };
    if !env.root.controllers().unwrap().iter().any(|c| c == "pids") {
        skip_missing(test, "the cgroup v2 hierarchy here has no pids controller");
        return;
    }
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "storm",
        &format!(
            "trap '' TERM; echo > {}; while :; do ( trap '' TERM; sleep 30 & ) ; done",
            ready.display()
        ),
    );
    spec.limits.pids_max = Some(64);
    spec.stop.grace_period_ms = 50;
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(10)).await;
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(st.pids_current.unwrap() <= 64, "{st:?}");
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert!(
        r.pids_frozen,
        "pids.max = 0 was not set before the kill: {r:?}"
    );
    assert!(r.killed_after_grace > 0 && r.stuck.is_empty(), "{r:?}");
    env.assert_no_leaks();
}

/// Regression (found by the torture runner): a stop that finished while nobody waited (the
/// main process exited, the main-exit stop ran) must still hand its report to later
/// `stop`/`kill`/`wait_stopped` calls instead of leaving them waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_an_unobserved_stop_returns_its_report() {
    let Some(env) = env("stop_after_an_unobserved_stop_returns_its_report") else {
        return;
    };
    let s = env.sup.start(sh("quick", "exit 0")).await.unwrap().info;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.sup.get(&s.id).unwrap().state != State::Stopped {
        assert!(Instant::now() < deadline, "main-exit stop never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..2 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            env.sup.stop(&s.id, Some(s.lifecycle)),
        )
        .await
        .expect("stop of a stopped sandbox hung")
        .unwrap();
        assert_eq!(r.reason, paddock_supervisor::StopReason::MainExited);
    }
    let w = tokio::time::timeout(Duration::from_secs(5), env.sup.wait_stopped(&s.id, None)).await;
    assert!(w.expect("wait_stopped hung").is_ok());
    env.assert_no_leaks();
}

/// Regression (found by the torture runner): a pause whose caller gives up half-way must
/// not leave the cgroup frozen while the sandbox says it is not paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pause_keeps_state_and_cgroup_in_agreement() {
    let Some(env) = env("cancelled_pause_keeps_state_and_cgroup_in_agreement") else {
        return;
    };
    let s = env
        .sup
        .start(sh("pz", "while :; do :; done"))
        .await
        .unwrap()
        .info;
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_micros(50), env.sup.pause(&s.id, None)).await;
        // Whatever the caller saw, once the operation has settled the two must agree.
        let _op_done = env.sup.stats(&s.id, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let paused = env.sup.get(&s.id).unwrap().paused;
            let frozen = std::fs::read_to_string(s.cgroup_path.join("cgroup.freeze"))
                .unwrap()
                .trim()
                == "1";
            if paused == frozen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "paused={paused} but cgroup.freeze={frozen}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if env.sup.get(&s.id).unwrap().paused {
            env.sup.resume(&s.id, None).await.unwrap();
        }
    }
    env.sup.kill(&s.id, None).await.unwrap();
    env.assert_no_leaks();
}

/// A crash between `mkdir` and the owner tag leaves an untagged cgroup of a record still
/// `creating`: adoption recognises it as its own by the record, removes it, and reports it
/// gone. An untagged cgroup of a record in any other state is not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_removes_a_cgroup_cut_off_before_its_tag() {
    let Some(env) = env("adopt_removes_a_cgroup_cut_off_before_its_tag") else {
        return;
    };
    let s = env
        .sup
        .start(sh("torn", "exec sleep 300"))
        .await
        .unwrap()
        .info;
    let mut rec = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    env.sup.kill(&s.id, None).await.unwrap();
    // Recreate the cgroup as a crash right after mkdir would have left it: no tag, no process.
    std::fs::create_dir(&s.cgroup_path).unwrap();
    rec.state = State::Creating;
    rec.main_pid = None;
    let sup2 = Supervisor::new(Config::new(env.root.clone())).unwrap();
    let a = sup2.adopt(rec.clone()).await.unwrap();
    assert!(matches!(a, Adopted::Gone { .. }), "{a:?}");
    assert!(!s.cgroup_path.exists());
    // The same untagged cgroup with a record that says `running` is not ours to take.
    std::fs::create_dir(&s.cgroup_path).unwrap();
    rec.state = State::Running;
    assert!(sup2.adopt(rec).await.is_err());
    std::fs::remove_dir(&s.cgroup_path).unwrap();
    env.assert_no_leaks();
}

/// Hooks whose store refuses the record of a started sandbox.
struct FailingRunningRecord;
impl paddock_supervisor::Hooks for FailingRunningRecord {
    fn on_change(&self, rec: &paddock_supervisor::Record) -> paddock_supervisor::Persisting {
        if rec.state == State::Running {
            Box::pin(std::future::ready(Err(paddock_supervisor::HookError::new(
                paddock_supervisor::HookErrorKind::Write,
                "disk full",
            ))))
        } else {
            paddock_supervisor::persisted()
        }
    }
}

/// A sandbox whose `running` record cannot be written is not left running unrecorded (a
/// restarted supervisor would not know it): the start kills it, removes its cgroup, forgets
/// it and fails with the store's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_whose_record_fails_is_killed_and_refused() {
    let Some(env) = env_with("start_whose_record_fails_is_killed_and_refused", |c| {
        c.hooks = Arc::new(FailingRunningRecord);
    }) else {
        return;
    };
    let spec = sh("unrecorded", "sleep 300 & exec sleep 300");
    let id = spec.id.clone();
    let err = match env.sup.start(spec).await {
        Ok(s) => panic!("the start succeeded: {:?}", s.info),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Journal { reason, .. } if reason.to_string() == "disk full"),
        "{err:?}"
    );
    assert!(env.sup.get(&id).is_none(), "still listed");
    env.assert_no_leaks();
}

/// Regression (found by the API's `wait`): when `stop` or `kill` returns, the sandbox
/// already shows how its main process ended (the stop waits for the reaper's status
/// instead of racing the monitor that records it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stop_shows_the_main_exit() {
    let Some(env) = env("a_finished_stop_shows_the_main_exit") else {
        return;
    };
    for i in 0..10 {
        let kill = i % 2 == 0;
        let s = env
            .sup
            .start(sh(&format!("mx{i}"), "exec sleep 300"))
            .await
            .unwrap()
            .info;
        if kill {
            env.sup.kill(&s.id, Some(s.lifecycle)).await.unwrap();
        } else {
            env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
        }
        let info = env.sup.get_lifecycle(&s.id, s.lifecycle).unwrap();
        assert_eq!(info.state, State::Stopped);
        let exit = info
            .main_exit
            .expect("main exit recorded when the stop returns");
        assert_eq!(exit.signal, Some(if kill { 9 } else { 15 }), "{exit:?}");
        env.sup.forget(&s.id).unwrap();
    }
    env.assert_no_leaks();
}

/// `stop`, `kill` and `wait_stopped` stay idempotent after a finished lifecycle left the
/// registry: killed twice (same report), stopped after the kill, killed by its old
/// lifecycle ID after a restart of its ID replaced it, after it was pruned as an older
/// lifecycle that finished stopping, and after it was forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_kill_stay_idempotent_after_the_lifecycle_is_gone() {
    let Some(env) = env("stop_and_kill_stay_idempotent_after_the_lifecycle_is_gone") else {
        return;
    };
    let sup = &env.sup;
    let a = sup.start(sh("idem", "exec sleep 300")).await.unwrap().info;
    let ra = sup.kill(&a.id, Some(a.lifecycle)).await.unwrap();
    assert_eq!(ra.reason, paddock_supervisor::StopReason::Killed);
    assert_eq!(sup.kill(&a.id, Some(a.lifecycle)).await.unwrap(), ra);
    assert_eq!(sup.stop(&a.id, Some(a.lifecycle)).await.unwrap(), ra);
    assert_eq!(
        sup.wait_stopped(&a.id, Some(a.lifecycle)).await.unwrap(),
        ra
    );
    // A restart replaces the stopped lifecycle, which leaves the registry.
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "idem",
        &format!("trap '' TERM; echo > {}; exec sleep 300", ready.display()),
    );
    spec.stop.grace_period_ms = 300;
    let b = sup.start(spec.clone()).await.unwrap().info;
    assert!(sup.get_lifecycle(&a.id, a.lifecycle).is_none());
    assert_eq!(sup.kill(&a.id, Some(a.lifecycle)).await.unwrap(), ra);
    assert_eq!(sup.stop(&a.id, Some(a.lifecycle)).await.unwrap(), ra);
    assert_eq!(sup.get(&b.id).unwrap().lifecycle, b.lifecycle);
    assert_eq!(sup.get(&b.id).unwrap().state, State::Running);
    // B is restarted while it is stopping: it retires, finishes, and is pruned.
    wait_file(&ready, Duration::from_secs(5)).await;
    let stopping = {
        let (sup, id) = (sup.clone(), b.id.clone());
        tokio::spawn(async move { sup.stop(&id, Some(b.lifecycle)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sup.get_lifecycle(&b.id, b.lifecycle).unwrap().state != State::Stopping {
        assert!(Instant::now() < deadline, "B never began stopping");
        tokio::task::yield_now().await;
    }
    let c = sup.start(sh("idem", "exec sleep 300")).await.unwrap().info;
    let rb = stopping.await.unwrap().unwrap();
    assert_eq!(rb.killed_after_grace, 1, "{rb:?}");
    assert!(
        sup.get_lifecycle(&b.id, b.lifecycle).is_none(),
        "a finished older lifecycle is pruned"
    );
    assert_eq!(sup.kill(&b.id, Some(b.lifecycle)).await.unwrap(), rb);
    assert_eq!(
        sup.wait_stopped(&b.id, Some(b.lifecycle)).await.unwrap(),
        rb
    );
    assert_eq!(sup.get(&c.id).unwrap().state, State::Running);
    assert_eq!(sup.get(&c.id).unwrap().lifecycle, c.lifecycle);
    // Forgotten: the report is still there for its lifecycle, but an ID-only call has no
    // lifecycle to mean.
    let rc = sup.kill(&c.id, Some(c.lifecycle)).await.unwrap();
    sup.forget_lifecycle(&c.id, Some(c.lifecycle)).unwrap();
    assert_eq!(sup.stop(&c.id, Some(c.lifecycle)).await.unwrap(), rc);
    assert!(matches!(
        sup.stop(&c.id, None).await,
        Err(Error::NotFound { .. })
    ));
    env.assert_no_leaks();
}

/// `kill` of a paused sandbox (no thaw: the kill of the frozen cgroup) leaves nothing,
/// quickly, with `cgroup.kill` and with the freeze-and-signal fallback; the sandbox is no
/// longer shown as paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_a_paused_sandbox() {
    let test = "kill_of_a_paused_sandbox";
    for fallback in [false, true] {
        let Some(env) = env_with(test, |c| c.force_kill_fallback = fallback) else {
            return;
        };
        let ready = env.scratch.path("ready");
        let s = env
            .sup
            .start(sh(
                "pk",
                &format!(
                    "trap '' TERM; sleep 300 & ( setsid sleep 300 & ) ; echo > {}; exec sleep 300",
                    ready.display()
                ),
            ))
            .await
            .unwrap()
            .info;
        wait_file(&ready, Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while env.sup.stats(&s.id, None).unwrap().processes < 3 {
            assert!(Instant::now() < deadline, "the payload never got going");
            tokio::task::yield_now().await;
        }
        assert!(env.sup.pause(&s.id, None).await.unwrap().paused);
        let t0 = Instant::now();
        let r = env.sup.kill(&s.id, Some(s.lifecycle)).await.unwrap();
        let took = t0.elapsed();
        assert!(r.stuck.is_empty() && r.error.is_none(), "{r:?}");
        assert_eq!(r.killed_after_grace, 3, "fallback={fallback}: {r:?}");
        assert!(
            took < Duration::from_secs(1),
            "fallback={fallback}: the kill of a paused sandbox took {took:?}: {r:?}"
        );
        let info = env.sup.get(&s.id).unwrap();
        assert_eq!(info.state, State::Stopped);
        assert!(!info.paused, "a killed sandbox is not paused");
        assert!(!s.cgroup_path.exists());
        env.assert_no_leaks();
    }
}

/// The statistics report exactly the controllers enabled for the sandbox: `None` (absent,
/// never zero) for a missing one. On the hybrid host memory, I/O and pids are absent while
/// CPU usage (core `cpu.stat`) is there; in the VM every one is there without any limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_exactly_the_enabled_controllers() {
    let test = "stats_report_exactly_the_enabled_controllers";
    let Some(env) = env(test) else { return };
    let offered = env.root.controllers().unwrap();
    let s = env
        .sup
        .start(sh(
            "st",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 300 & exec sleep 300",
        ))
        .await
        .unwrap()
        .info;
    let enabled = controllers_of(&s.cgroup_path);
    // The default configuration enables every one of them the root is offered.
    for c in paddock_supervisor::DEFAULT_CONTROLLERS {
        assert_eq!(
            enabled.iter().any(|e| e == c),
            offered.iter().any(|o| o == c),
            "{c}: offered {offered:?}, enabled {enabled:?}"
        );
    }
    if in_vm() {
        for c in paddock_supervisor::DEFAULT_CONTROLLERS {
            assert!(enabled.iter().any(|e| e == c), "the VM offers {c}");
        }
    }
    let has = |c: &str| enabled.iter().any(|e| e == c);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = env.sup.stats(&s.id, None).unwrap();
        if st.processes == 2 && st.cpu_usage_usec.is_some_and(|u| u > 0) {
            break st;
        }
        assert!(Instant::now() < deadline, "{st:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(st.cpu_user_usec.is_some() && st.cpu_system_usec.is_some());
    assert_eq!(st.cpu_nr_throttled.is_some(), has("cpu"), "{st:?}");
    assert_eq!(st.memory_current.is_some(), has("memory"), "{st:?}");
    assert_eq!(st.memory_oom_kill.is_some(), has("memory"), "{st:?}");
    assert_eq!(st.memory_max_events.is_some(), has("memory"), "{st:?}");
    assert_eq!(st.io_read_bytes.is_some(), has("io"), "{st:?}");
    assert_eq!(st.io_write_bytes.is_some(), has("io"), "{st:?}");
    assert_eq!(st.pids_current.is_some(), has("pids"), "{st:?}");
    if has("pids") {
        assert_eq!(st.pids_current, Some(2), "{st:?}");
    }
    if has("memory") {
        assert!(st.memory_current.unwrap() > 0, "{st:?}");
    }
    let mount_offers = |c: &str| {
        std::fs::read_to_string(env.t.mount().join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|o| o == c)
    };
    if !mount_offers("memory") {
        // The hybrid host: absent, not zero.
        assert_eq!(
            (st.memory_current, st.memory_peak, st.memory_oom_kill),
            (None, None, None)
        );
    }
    if !mount_offers("io") {
        assert_eq!((st.io_read_bytes, st.io_write_bytes), (None, None));
    }
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert!(r.cpu_usage_usec.is_some_and(|u| u > 0), "{r:?}");
    assert_eq!(r.memory_peak.is_some(), has("memory"), "{r:?}");
    assert_eq!(r.oom_kills, has("memory").then_some(0), "{r:?}");
    env.assert_no_leaks();
}

/// The serial of the scratch disk the test VM may be given (an NVMe drive the tests may
/// overwrite); see `vm_memory_and_io_stats_without_limits`.
const SCRATCH_DISK_SERIAL: &str = "paddock-scratch";

/// A block device the I/O test may overwrite: one named by `PADDOCK_TEST_BLOCKDEV`, inside
/// the VM a disk whose serial is [`SCRATCH_DISK_SERIAL`], else a loop device over a file in
/// the scratch directory (detached on drop). An error says why there is none (the VM's
/// kernel has the loop driver as a module and loads none).
enum BlockDev {
    Given(String),
    Loop(String),
}
impl BlockDev {
    fn new(backing: &std::path::Path) -> Result<BlockDev, String> {
        if let Some(dev) = std::env::var_os("PADDOCK_TEST_BLOCKDEV") {
            return Ok(BlockDev::Given(dev.to_string_lossy().into_owned()));
        }
        if in_vm() {
            for e in std::fs::read_dir("/sys/block")
                .into_iter()
                .flatten()
                .flatten()
            {
                let serial = std::fs::read_to_string(e.path().join("device/serial"));
                if serial.is_ok_and(|s| s.trim() == SCRATCH_DISK_SERIAL) {
                    let name = e.file_name();
                    return Ok(BlockDev::Given(format!("/dev/{}", name.to_string_lossy())));
                }
            }
        }
        std::fs::write(backing, vec![0u8; 8 << 20]).map_err(|e| e.to_string())?;
        // `losetup -f` names a free device (util-linux and busybox alike; busybox has no
        // `--show`), then the device is attached.
        let losetup = |args: &[&std::ffi::OsStr]| -> Result<String, String> {
            let out = paddock_proc::Command::new("losetup")
                .args(args)
                .output()
                .map_err(|e| format!("losetup: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            } else {
                Err(format!(
                    "no disk with serial {SCRATCH_DISK_SERIAL}, no PADDOCK_TEST_BLOCKDEV, and losetup {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let dev = losetup(&["-f".as_ref()])?;
        losetup(&[dev.as_ref(), backing.as_os_str()])?;
        Ok(BlockDev::Loop(dev))
    }
    fn path(&self) -> &str {
        match self {
            BlockDev::Given(p) | BlockDev::Loop(p) => p,
        }
    }
}
impl Drop for BlockDev {
    fn drop(&mut self) {
        if let BlockDev::Loop(dev) = self {
            let _ = paddock_proc::Command::new("losetup")
                .args(["-d", dev.as_str()])
                .output();
        }
    }
}

/// In the VM, with no limit in the spec: memory usage is reported, the I/O fields are
/// present, and where a block device can be had (see [`BlockDev`]), 2 MiB of direct writes
/// show in `io_write_bytes`. Writes to tmpfs (all the VM has without a scratch disk) are
/// not block I/O, so without one that last check is reported as not done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_memory_and_io_stats_without_limits() {
    let test = "vm_memory_and_io_stats_without_limits";
    let Some(env) = env(test) else { return };
    let offered = env.root.controllers().unwrap();
    if !["memory", "io"]
        .iter()
        .all(|c| offered.iter().any(|o| o == c))
    {
        skip_missing(
            test,
            &format!("the managed root is offered {offered:?}, not memory and io"),
        );
        return;
    }
    let dev = BlockDev::new(&env.scratch.path("disk.img"));
    let done = env.scratch.path("done");
    let script = match &dev {
        Ok(d) => format!(
            "dd if=/dev/zero of={d} bs=64k count=32 oflag=direct 2>/dev/null || \
             dd if=/dev/zero of={d} bs=64k count=32 conv=fsync; echo > {done}; exec sleep 300",
            d = d.path(),
            done = done.display()
        ),
        Err(_) => format!(
            "x=$(head -c 4000000 /dev/zero | tr '\\0' a); echo > {}; exec sleep 300",
            done.display()
        ),
    };
    let s = env.sup.start(sh("io", &script)).await.unwrap().info;
    wait_file(&done, Duration::from_secs(60)).await;
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(st.memory_current.is_some_and(|m| m > 0), "{st:?}");
    assert!(st.memory_peak.is_some(), "{st:?}");
    assert!(
        st.io_write_bytes.is_some() && st.io_read_bytes.is_some(),
        "{st:?}"
    );
    match &dev {
        Ok(d) => assert!(
            st.io_write_bytes.unwrap() >= 32 * 64 * 1024,
            "2 MiB written to {} directly: {st:?}",
            d.path()
        ),
        Err(e) => eprintln!(
            "{test}: io_write_bytes > 0 not checked: no block device to write to here (losetup: {e})"
        ),
    }
    env.sup.kill(&s.id, None).await.unwrap();
    drop(dev);
    env.assert_no_leaks();
}

/// In the VM: a sandbox with `memory.max` 32 MiB whose main process hogs memory is
/// OOM-killed (SIGKILL); the OOM kill shows in the stats and in the stop's report carried
/// by the `stopped` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_oom_kill_shows_in_stats_and_events() {
    let test = "vm_oom_kill_shows_in_stats_and_events";
    let Some(env) = env(test) else { return };
    if !env
        .root
        .controllers()
        .unwrap()
        .iter()
        .any(|c| c == "memory")
    {
        skip_missing(
            test,
            "the cgroup v2 hierarchy here has no memory controller",
        );
        return;
    }
    let mut spec = sh(
        "oom",
        "x=$(head -c 1073741824 /dev/zero | tr '\\0' a); echo survived",
    );
    spec.limits.memory_max = Some(32 << 20);
    // Keep the cgroup after the main process died, to read its stats.
    spec.on_main_exit = OnMainExit::KeepRunning;
    let mut events = env.sup.events();
    let s = env.sup.start(spec).await.unwrap().info;
    if let Ok(swap) = std::fs::read_to_string(s.cgroup_path.join("memory.swap.max")) {
        // No escape into swap (the VM has none; a host might).
        if swap.trim() != "0" {
            std::fs::write(s.cgroup_path.join("memory.swap.max"), "0").unwrap();
        }
    }
    let exit = tokio::time::timeout(
        Duration::from_secs(120),
        env.sup.wait_main_exit(&s.id, s.lifecycle),
    )
    .await
    .expect("the hog was not OOM-killed within 120 s")
    .unwrap();
    assert_eq!(exit.signal, Some(9), "the OOM killer's SIGKILL: {exit:?}");
    let st = env.sup.stats(&s.id, None).unwrap();
    assert!(st.memory_oom_kill.is_some_and(|n| n >= 1), "{st:?}");
    assert!(st.memory_max_events.is_some_and(|n| n >= 1), "{st:?}");
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert!(r.oom_kills.is_some_and(|n| n >= 1), "{r:?}");
    let mut stopped = None;
    while let Ok(ev) = events.try_recv() {
        if let EventKind::Stopped { report } = ev.kind {
            stopped = Some(report);
        }
    }
    let stopped = stopped.expect("a stopped event");
    assert!(
        stopped.oom_kills.is_some_and(|n| n >= 1),
        "the stopped event must show the OOM kill: {stopped:?}"
    );
    env.assert_no_leaks();
}

/// A double-forked `setsid` escapee (orphaned, so not the main process's child) that
/// ignores SIGTERM, while the main process keeps running: `stop` kills it after the grace
/// period and names it in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_double_forked_setsid_escapee() {
    let Some(env) = env("stop_kills_a_double_forked_setsid_escapee") else {
        return;
    };
    let pidfile = env.scratch.path("esc");
    let mut spec = sh(
        "esc2",
        &format!(
            "( setsid sh -c 'trap \"\" TERM; echo $$ > {p}.t; mv {p}.t {p}; exec sleep 300' & ) ; \
             while :; do sleep 1; done",
            p = pidfile.display()
        ),
    );
    spec.stop.grace_period_ms = 300;
    let s = env.sup.start(spec).await.unwrap().info;
    let esc: i32 = wait_file(&pidfile, Duration::from_secs(10))
        .await
        .trim()
        .parse()
        .unwrap();
    let main = s.pid.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // The escapee: its own session, and orphaned (its parent, the subshell, is gone).
    while stat_field(esc, 4).and_then(|p| p.parse::<i32>().ok()) == Some(main)
        || stat_field(esc, 6).and_then(|p| p.parse::<i32>().ok()) != Some(esc)
    {
        assert!(Instant::now() < deadline, "{esc} is not a setsid orphan");
        tokio::task::yield_now().await;
    }
    let ppid: i32 = stat_field(esc, 4).unwrap().parse().unwrap();
    assert_ne!(
        ppid, main,
        "the escapee must not be the main process's child"
    );
    let r = env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    assert!(!alive(esc), "escapee {esc} survived");
    assert!(r.killed_after_grace >= 1, "{r:?}");
    assert!(
        r.killed
            .iter()
            .any(|k| k.pid == esc && k.comm.as_deref() == Some("sleep")),
        "the report must name the escapee {esc}: {r:?}"
    );
    assert!(
        r.killed.iter().all(|k| k.pid != main),
        "the main process obeys SIGTERM: {r:?}"
    );
    env.assert_no_leaks();
}

/// Step 1 sends SIGCONT with the stop signal: a payload that stopped itself (SIGSTOP) and
/// exits on SIGTERM ends within the grace period, nothing killed. Without the SIGCONT its
/// SIGTERM would stay pending until the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_continues_a_stopped_payload() {
    let Some(env) = env("graceful_stop_continues_a_stopped_payload") else {
        return;
    };
    let mut spec = sh("tstop", "trap 'exit 7' TERM; kill -STOP $$; exec sleep 300");
    spec.stop.grace_period_ms = 30_000;
    let s = env.sup.start(spec).await.unwrap().info;
    let pid = s.pid.unwrap();
    wait_state(pid, "T", Duration::from_secs(5)).await;
    let r = env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    assert_eq!(r.killed_after_grace, 0, "{r:?}");
    assert!(r.killed.is_empty(), "{r:?}");
    assert_eq!(r.signalled, 1, "{r:?}");
    assert!(r.grace_ms < 10_000.0, "{r:?}");
    let info = env.sup.get_lifecycle(&s.id, s.lifecycle).unwrap();
    assert_eq!(info.main_exit.unwrap().code, Some(7), "{info:?}");
    env.assert_no_leaks();
}

/// A payload that makes a child cgroup of its own cgroup: the plain `rmdir` fails with
/// `EBUSY`, the removal takes the fallback, and the report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_cgroup_makes_the_removal_take_the_fallback() {
    let Some(env) = env("nested_cgroup_makes_the_removal_take_the_fallback") else {
        return;
    };
    let ready = env.scratch.path("ready");
    let s = env
        .sup
        .start(sh(
            "nest",
            &format!(
                "p=$(sed -n 's/^0:://p' /proc/self/cgroup); mkdir \"{m}$p/inner\" && echo > {r}; exec sleep 300",
                m = env.t.mount().display(),
                r = ready.display()
            ),
        ))
        .await
        .unwrap()
        .info;
    wait_file(&ready, Duration::from_secs(5)).await;
    assert!(s.cgroup_path.join("inner").is_dir());
    let r = env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    assert!(r.rmdir_fallback, "{r:?}");
    assert!(r.stuck.is_empty() && r.error.is_none(), "{r:?}");
    assert!(!s.cgroup_path.exists());
    env.assert_no_leaks();
}

/// Hooks that look at the cgroup when a stop is about to kill.
#[derive(Default)]
struct KillProbe {
    cgroup: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// `pids.max` (absent without the controller) and the number of processes, as the hook
    /// saw them.
    seen: std::sync::Mutex<Vec<(Option<String>, usize)>>,
}
impl paddock_supervisor::Hooks for KillProbe {
    fn wants_records(&self) -> bool {
        false
    }
    fn before_kill(
        &self,
        _id: &paddock_supervisor::SandboxId,
        _lc: paddock_supervisor::LifecycleId,
    ) {
        let Some(cg) = self.cgroup.lock().unwrap().clone() else {
            return;
        };
        let pids_max = std::fs::read_to_string(cg.join("pids.max"))
            .ok()
            .map(|s| s.trim().to_owned());
        let procs = paddock_testutil::procs_recursive(&cg).len();
        self.seen.lock().unwrap().push((pids_max, procs));
    }
}

/// `pids.max` reads 0 while the processes that outlived the grace period are still in the
/// cgroup, right before the kill (observed by a hook, not taken from paddock's own flag);
/// where the pids controller is absent (the hybrid host) the file is absent and the report
/// says no freeze was set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_max_is_zero_while_the_kill_still_finds_processes() {
    let probe = Arc::new(KillProbe::default());
    let hooks = probe.clone();
    let Some(env) = env_with(
        "pids_max_is_zero_while_the_kill_still_finds_processes",
        |c| {
            c.hooks = hooks;
        },
    ) else {
        return;
    };
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "pz0",
        &format!(
            "trap '' TERM; sleep 300 & echo > {}; exec sleep 300",
            ready.display()
        ),
    );
    spec.stop.grace_period_ms = 200;
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(5)).await;
    *probe.cgroup.lock().unwrap() = Some(s.cgroup_path.clone());
    let r = env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    let seen = probe.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one kill, one look: {seen:?}");
    let (pids_max, procs) = seen[0].clone();
    // The `sleep` child has SIGTERM's default action and is gone; the main ignores it.
    assert!(procs >= 1, "the kill found nothing to kill: {seen:?} {r:?}");
    assert!(r.killed_after_grace >= 1, "{r:?}");
    if env
        .root
        .enabled_controllers()
        .unwrap()
        .iter()
        .any(|c| c == "pids")
    {
        assert_eq!(pids_max.as_deref(), Some("0"), "{seen:?}");
        assert!(r.pids_frozen, "{r:?}");
    } else {
        assert!(!in_vm(), "the VM has the pids controller");
        assert_eq!(pids_max, None, "{seen:?}");
        assert!(!r.pids_frozen, "{r:?}");
    }
    env.assert_no_leaks();
}

/// Hooks that log, in order, every record handed to them and every event.
#[derive(Default)]
struct Journal {
    log: std::sync::Mutex<Vec<String>>,
}
impl Journal {
    fn push(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
    fn record(rec: &paddock_supervisor::Record) -> String {
        format!(
            "record {} paused={} pid={} reason={:?}",
            rec.state,
            rec.paused,
            rec.main_pid.is_some(),
            rec.stop_reason
        )
    }
}
impl paddock_supervisor::Hooks for Journal {
    fn before_create(&self, rec: &paddock_supervisor::Record) -> paddock_supervisor::Persisting {
        self.push(Self::record(rec));
        paddock_supervisor::persisted()
    }
    fn on_change(&self, rec: &paddock_supervisor::Record) -> paddock_supervisor::Persisting {
        self.push(Self::record(rec));
        paddock_supervisor::persisted()
    }
    fn on_event(&self, ev: &paddock_supervisor::Event) {
        // The main process's exit races the stop's end: not part of the sequence.
        if !matches!(ev.kind, EventKind::MainExited { .. }) {
            let json = serde_json::to_value(&ev.kind).unwrap();
            self.push(format!("event {}", json["type"].as_str().unwrap()));
        }
    }
    fn on_forget(&self, _id: &paddock_supervisor::SandboxId, _lc: paddock_supervisor::LifecycleId) {
        self.push("forget".into());
    }
}

/// Every state change hands the hooks exactly one record of the state entered, before the
/// change's event; a graceful stop's `stopping` record comes before the `stopping` event
/// (it is written before the state changes, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_is_recorded_once_before_its_event() {
    let journal = Arc::new(Journal::default());
    let hooks = journal.clone();
    let Some(env) = env_with("every_transition_is_recorded_once_before_its_event", |c| {
        c.hooks = hooks;
    }) else {
        return;
    };
    let spec = paddock_supervisor::SandboxSpec::new(id("rec1"), "/bin/sleep", ["300"]);
    let s = env.sup.start(spec).await.unwrap().info;
    env.sup.pause(&s.id, Some(s.lifecycle)).await.unwrap();
    env.sup.resume(&s.id, Some(s.lifecycle)).await.unwrap();
    let r = env.sup.stop(&s.id, Some(s.lifecycle)).await.unwrap();
    assert_eq!(r.killed_after_grace, 0, "sleep dies of SIGTERM: {r:?}");
    env.sup.forget_lifecycle(&s.id, Some(s.lifecycle)).unwrap();
    let log = journal.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "record creating paused=false pid=false reason=None",
            "record running paused=false pid=true reason=None",
            "event started",
            "record running paused=true pid=true reason=None",
            "event paused",
            "record running paused=false pid=true reason=None",
            "event resumed",
            "record stopping paused=false pid=true reason=Some(Requested)",
            "event stopping",
            "record stopped paused=false pid=true reason=Some(Requested)",
            "event stopped",
            "forget",
        ]
    );
    env.assert_no_leaks();
}

/// The `pgrp` and `session` fields of `/proc/<pid>/stat`.
fn pgrp_and_session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name's closing parenthesis: state, ppid, pgrp, session.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// By default a sandbox's main process leads a session and a process group of its own, so
/// a signal to the supervisor's group (a terminal's Ctrl-C, a scheduler killing the group
/// of an exiting daemon) cannot reach it; `new_session: false` keeps it in the supervisor's
/// group, as `paddock run` in the foreground wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_has_a_session_of_its_own() {
    // From /proc, not getpgrp(2): in the VM suite the test runs in the kernel's first
    // process group, 0, which rustix's `getpgrp` does not expect.
    let own_pgrp = pgrp_and_session(std::process::id() as i32).0;
    for new_session in [true, false] {
        let name = format!("session_{new_session}");
        let Some(env) = env_with(&name, |c| c.new_session = new_session) else {
            return;
        };
        let s = env
            .sup
            .start(sh("sess", "exec sleep 300"))
            .await
            .unwrap()
            .info;
        let pid = s.pid.unwrap();
        let (pgrp, session) = pgrp_and_session(pid);
        if new_session {
            assert_eq!((pgrp, session), (pid, pid), "new_session: true");
        } else {
            assert_eq!(pgrp, own_pgrp, "new_session: false");
            assert_ne!(session, pid, "new_session: false");
        }
        env.sup.stop(&s.id, None).await.unwrap();
        env.assert_no_leaks();
    }
}
