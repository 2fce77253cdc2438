//! Root tests of the supervisor: lifecycles, the registry's guarantees, stop semantics,
//! pause/resume, quarantine, adoption and reclaim.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use paddock_supervisor::{
    Adopted, Config, Error, EventKind, Limits, Network, OnMainExit, State, StdioTarget, StopPolicy,
    Supervisor,
};

/// The payload double-forks a `setsid` escapee that ignores SIGTERM, then its main process
/// exits: the sandbox ends, the escapee is killed, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_exit_stops_the_escapee() {
    let Some(env) = env("main_exit_stops_the_escapee") else {
        return;
    };
    let pidfile = env.scratch.path("esc");
    let mut spec = sh(
        "esc",
        &format!(
            "setsid sh -c 'trap \"\" TERM; echo $$ > {p}.t; mv {p}.t {p}; exec sleep 300' & \
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
    assert_eq!(
        env.sup
            .counters()
            .starts_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        5 - usize::from(
            env.root
                .controllers()
                .unwrap()
                .iter()
                .any(|c| c == "memory")
        ) as u64
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_starts_of_one_id_one_wins() {
    let Some(env) = env("two_concurrent_starts_of_one_id_one_wins") else {
        return;
    };
    for round in 0..10 {
        let (a, b) = tokio::join!(
            env.sup.start(sh("dup", "exec sleep 300")),
            env.sup.start(sh("dup", "exec sleep 300"))
        );
        let (won, lost) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("round {round}: expected exactly one winner, got {a:?} / {b:?}"),
        };
        assert!(matches!(lost, Error::AlreadyExists(_)), "{lost}");
        let (names, _) = env.root.list().unwrap();
        assert_eq!(names.len(), 1, "the loser must start nothing: {names:?}");
        env.sup.kill(&won.info.id, None).await.unwrap();
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
/// compounded the incident) end with exactly one live lifecycle and nothing leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_stop_and_restart_cycles() {
    let Some(env) = env("racing_stop_and_restart_cycles") else {
        return;
    };
    let sup = env.sup.clone();
    let mut spec = sh("vm", "trap 'sleep 0.05; exit 0' TERM; sleep 300 & wait");
    spec.stop.grace_period_ms = 1_000;
    sup.start(spec.clone()).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let sup = sup.clone();
        let spec = spec.clone();
        set.spawn(async move {
            let _ = sup.stop(&spec.id, None).await;
            sup.start(spec).await.is_ok()
        });
    }
    let mut wins = 0;
    while let Some(r) = set.join_next().await {
        wins += usize::from(r.unwrap());
    }
    assert!(wins >= 1);
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
    // A stale handle (an old lifecycle) can neither stop nor evict the live one.
    let stale = paddock_supervisor::LifecycleId::fresh();
    assert!(matches!(
        sup.stop(&live[0].id, Some(stale)).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(sup.get(&live[0].id).unwrap().state, State::Running);
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

/// A process that cannot die (frozen by the v1 freezer, so in state D and immune to
/// SIGKILL) puts the sandbox in quarantine with the process named; once it is released the
/// sandbox is removed and stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkillable_process_quarantines_then_drains() {
    let test = "unkillable_process_quarantines_then_drains";
    let freezer = std::path::Path::new("/sys/fs/cgroup/freezer");
    if !freezer.join("freezer.state").exists() && !freezer.join("cgroup.procs").exists() {
        // Pure cgroup v2 hosts have no v1 freezer to make a process unkillable with.
        eprintln!("SKIP {test}: no cgroup v1 freezer hierarchy to hold a process in state D");
        return;
    }
    let Some(env) = env_with(test, |c| c.quarantine_recheck = Duration::from_millis(100)) else {
        return;
    };
    let fz = V1Freezer::new(freezer);
    let mut spec = sh("stuck", "exec sleep 300");
    spec.stop = StopPolicy {
        grace_period_ms: 50,
        kill_timeout_ms: 300,
        ..StopPolicy::default()
    };
    let s = env.sup.start(spec).await.unwrap().info;
    let pid = s.pid.unwrap();
    fz.freeze(pid);
    let r = env.sup.stop(&s.id, None).await.unwrap();
    assert_eq!(r.stuck.len(), 1, "{r:?}");
    assert_eq!(r.stuck[0].pid, pid);
    assert_eq!(r.stuck[0].state.as_deref(), Some("D"));
    let q = env.sup.get(&s.id).unwrap();
    assert_eq!(q.state, State::Quarantined);
    assert!(
        q.cgroup_path.exists(),
        "a quarantined sandbox keeps its cgroup"
    );
    // A new lifecycle of the same ID may start while the old one is quarantined.
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
    assert_eq!(
        env.sup
            .counters()
            .quarantines_drained
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    env.assert_no_leaks();
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
    orphan.set_owner("paddock").unwrap();
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
        assert!(
            std::env::var_os("PADDOCK_VM").is_none(),
            "the VM must offer the pids controller"
        );
        eprintln!(
            "SKIP {test}: the cgroup v2 hierarchy here has no pids controller (hybrid host; runs in the VM)"
        );
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
            Box::pin(std::future::ready(Err("disk full".to_string())))
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
        matches!(&err, Error::Journal { reason, .. } if reason == "disk full"),
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
