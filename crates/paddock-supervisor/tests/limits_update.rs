//! Live updates of a running sandbox's limits (`Supervisor::update_limits`): written to the
//! cgroup field by field, recorded (an adopting supervisor keeps them), announced
//! (`limits_updated`), refused without changing anything when invalid, when a controller is
//! missing (naming it) or when the sandbox does not run; and, in the VM, a `memory.max`
//! lowered below what the payload uses ends in the group OOM kill (`docs/limits.md`).

mod common;

use std::time::Duration;

use common::*;
use paddock_supervisor::{
    Adopted, Config, Error, EventKind, LimitsUpdate, OnMainExit, State, StopReason, Supervisor,
};

fn read(p: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(p.join(file))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The core limits (no controller needed, so this runs on the hybrid host too) and, where
/// offered, memory, cpu and pids: set, lifted with `null`, recorded and kept by adoption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_writes_records_and_survives_adoption() {
    let Some(env) = env("update_writes_records_and_survives_adoption") else {
        return;
    };
    let offered = env.root.controllers().unwrap();
    let has = |c: &str| offered.iter().any(|o| o == c);
    let mut spec = sh("upd", "exec sleep 300");
    spec.limits.max_descendants = Some(2);
    spec.on_main_exit = OnMainExit::KeepRunning;
    let mut events = env.sup.events();
    let s = env.sup.start(spec).await.unwrap().info;
    let cg = s.cgroup_path.clone();
    assert_eq!(read(&cg, "cgroup.max.descendants"), "2");
    let mut u: LimitsUpdate =
        serde_json::from_str(r#"{"max_descendants": null, "max_depth": 3}"#).unwrap();
    if has("memory") {
        u.memory_max = Some(Some(1 << 30));
    }
    if has("pids") {
        u.pids_max = Some(Some(512));
    }
    if has("cpu") {
        u.cpus = Some(Some(2.0));
    }
    let info = env.sup.update_limits(&s.id, &u).await.unwrap();
    assert_eq!(read(&cg, "cgroup.max.descendants"), "max");
    assert_eq!(read(&cg, "cgroup.max.depth"), "3");
    assert_eq!(info.spec.limits.max_descendants, None);
    assert_eq!(info.spec.limits.max_depth, Some(3));
    if has("memory") {
        assert_eq!(read(&cg, "memory.max"), (1u64 << 30).to_string());
    }
    if has("pids") {
        assert_eq!(read(&cg, "pids.max"), "512");
    }
    if has("cpu") {
        assert_eq!(read(&cg, "cpu.max"), "200000 100000");
    }
    let mut seen = None;
    while let Ok(ev) = events.try_recv() {
        if let EventKind::LimitsUpdated { limits } = ev.kind {
            seen = Some(limits);
        }
    }
    assert_eq!(seen.expect("a limits_updated event").max_depth, Some(3));
    // Recorded: a new supervisor adopting the record has the updated limits.
    let record = env
        .sup
        .records()
        .into_iter()
        .find(|r| r.lifecycle == s.lifecycle)
        .unwrap();
    assert_eq!(record.spec.limits, info.spec.limits);
    let sup2 = Supervisor::new(Config::new(env.root.clone())).unwrap();
    let Adopted::Running(a) = sup2.adopt(record).await.unwrap() else {
        panic!("not adopted as running")
    };
    assert_eq!(a.spec.limits, info.spec.limits);
    // ...and updates it further.
    let u: LimitsUpdate = serde_json::from_str(r#"{"max_depth": null}"#).unwrap();
    let a = sup2.update_limits(&s.id, &u).await.unwrap();
    assert_eq!(a.spec.limits.max_depth, None);
    assert_eq!(read(&cg, "cgroup.max.depth"), "max");
    sup2.kill(&s.id, None).await.unwrap();
    env.assert_no_leaks();
}

/// An invalid value, a missing controller and a sandbox that does not run are refused, and
/// nothing is changed or announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_refusals_change_nothing() {
    let Some(env) = env("update_refusals_change_nothing") else {
        return;
    };
    let offered = env.root.controllers().unwrap();
    let mut spec = sh("upd-no", "exec sleep 300");
    spec.limits.max_depth = Some(4);
    let s = env.sup.start(spec).await.unwrap().info;
    let mut events = env.sup.events();
    for (body, want) in [
        (r#"{"cpus": 0, "max_depth": 1}"#, "cpus"),
        (r#"{"io_weight": 0}"#, "limits.io_weight"),
        (r#"{"cpuset_cpus": "3-1"}"#, "limits.cpuset_cpus"),
        (
            r#"{"io_max": [{"device": "/dev/null", "read_bps": 1}]}"#,
            "not a block device",
        ),
    ] {
        let u: LimitsUpdate = serde_json::from_str(body).unwrap();
        let e = env.sup.update_limits(&s.id, &u).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidSpec(_) | Error::Inconsistent(_)),
            "{body}: {e}"
        );
        assert!(e.to_string().contains(want), "{body}: {e}");
    }
    for ctrl in ["io", "cpuset", "memory"] {
        if offered.iter().any(|o| o == ctrl) {
            continue;
        }
        let body = match ctrl {
            "io" => r#"{"io_weight": 10, "max_depth": 1}"#,
            "cpuset" => r#"{"cpuset_cpus": "0", "max_depth": 1}"#,
            _ => r#"{"memory_max": 1048576, "max_depth": 1}"#,
        };
        let u: LimitsUpdate = serde_json::from_str(body).unwrap();
        let e = env.sup.update_limits(&s.id, &u).await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("controller {ctrl:?}")),
            "{body}: {e}"
        );
    }
    assert_eq!(read(&s.cgroup_path, "cgroup.max.depth"), "4");
    assert_eq!(env.sup.get(&s.id).unwrap().spec.limits.max_depth, Some(4));
    assert!(events.try_recv().is_err(), "nothing announced");
    env.sup.kill(&s.id, None).await.unwrap();
    let u: LimitsUpdate = serde_json::from_str(r#"{"max_depth": 1}"#).unwrap();
    let e = env.sup.update_limits(&s.id, &u).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidState {
                state: State::Stopped,
                ..
            }
        ),
        "{e}"
    );
    env.assert_no_leaks();
}

/// Updates racing a stop: every update either applies to the running sandbox or is
/// refused as not running; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_racing_a_stop() {
    let Some(env) = env("updates_racing_a_stop") else {
        return;
    };
    for round in 0..20u64 {
        let mut spec = sh("upd-race", "exec sleep 300");
        spec.stop.grace_period_ms = 0;
        let s = env.sup.start(spec).await.unwrap().info;
        let sup = env.sup.clone();
        let id = s.id.clone();
        let updates = tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..50u64 {
                let u = LimitsUpdate {
                    max_descendants: Some(Some(1 + (i + round) % 7)),
                    ..LimitsUpdate::default()
                };
                match sup.update_limits(&id, &u).await {
                    Ok(_) => ok += 1,
                    Err(Error::InvalidState { .. }) => {}
                    Err(e) => panic!("update during a stop: {e}"),
                }
                tokio::task::yield_now().await;
            }
            ok
        });
        tokio::time::sleep(Duration::from_micros(200 * round)).await;
        env.sup.stop(&s.id, None).await.unwrap();
        updates.await.unwrap();
        env.sup.forget(&s.id).unwrap();
        env.assert_no_leaks();
    }
}

/// In the VM: `memory.max` lowered below what the payload holds (swap off) makes the
/// kernel reclaim, and as nothing can be reclaimed, OOM-kill: the whole sandbox, with
/// reason `oom`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_lowering_memory_max_below_usage_ends_in_the_oom_kill() {
    let test = "vm_lowering_memory_max_below_usage_ends_in_the_oom_kill";
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
    let ready = env.scratch.path("ready");
    let mut spec = sh(
        "shrink",
        &format!(
            "sleep 300 & exec perl -e '$x = q(x) x (48 << 20); open F, q(>{}); print F qq(1\\n); close F; sleep 300'",
            ready.display()
        ),
    );
    spec.limits.memory_max = Some(256 << 20);
    if std::fs::read_dir("/sys/fs/cgroup").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    }) {
        spec.limits.memory_swap_max = Some(0);
    }
    let s = env.sup.start(spec).await.unwrap().info;
    wait_file(&ready, Duration::from_secs(60)).await;
    let before: u64 = read(&s.cgroup_path, "memory.current").parse().unwrap();
    let u = LimitsUpdate {
        memory_max: Some(Some(16 << 20)),
        ..LimitsUpdate::default()
    };
    // The write returns once the kernel has reclaimed or OOM-killed.
    let updated = env.sup.update_limits(&s.id, &u).await;
    let r = tokio::time::timeout(Duration::from_secs(60), env.sup.wait_stopped(&s.id, None))
        .await
        .expect("not stopped within 60 s")
        .unwrap();
    println!(
        "{test}: memory.current {before} before memory.max 16 MiB; update {:?}; report reason {:?}, oom_kills {:?}, group {:?}",
        updated.as_ref().map(|_| "ok"),
        r.reason,
        r.oom_kills,
        r.oom_group_kills
    );
    assert!(before > 32 << 20, "the payload held {before} bytes");
    assert_eq!(r.reason, StopReason::Oom, "{r:?}");
    assert!(r.oom_group_kills.is_some_and(|n| n >= 1), "{r:?}");
    env.assert_no_leaks();
}
