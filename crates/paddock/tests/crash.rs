//! The crash test: SIGKILL the daemon idle, mid-create and mid-stop; every restart must
//! list and control every running sandbox, finish half-done operations, and leak nothing
//! (checked by walking the test's cgroup subtree and /proc independently).

mod common;

use std::ffi::CString;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn state(w: &World, id: &str) -> Value {
    w.http("GET", &format!("/v1/sandboxes/{id}"), None).json()
}

/// PIDs of every live process in one sandbox cgroup (recursively), read from the files.
fn procs_of(w: &World, cgroup: &str) -> Vec<i32> {
    paddock_testutil::procs_recursive(&w.cgroot.join(cgroup))
}

fn cgroup_of(info: &Value) -> String {
    format!(
        "{}@{}",
        info["id"].as_str().unwrap(),
        info["lifecycle"].as_str().unwrap()
    )
}

#[test]
fn crash_and_recover() {
    let Some(w) = world("crash_and_recover") else {
        return;
    };

    // --- Daemon 1: create, then SIGKILL while idle.
    let mut d1 = w.daemon(&[]);
    for (id, script) in [
        ("plain", "exec sleep 300"),
        ("leaky", LEAKY),
        ("frozen", "exec sleep 300"),
    ] {
        let r = w.http("POST", "/v1/sandboxes", Some(&spec(id, script)));
        assert_eq!(r.status, 201, "{id}: {}", r.text());
    }
    assert_eq!(
        w.http("POST", "/v1/sandboxes/frozen/pause", None).status,
        200
    );
    // A sandbox that ends while no daemon runs: its record and its log go at the restart.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("vanished", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let vanished_cg = w.cgroot.join(cgroup_of(&r.json()));
    let vanished_log = w.state.join(format!("logs/{}.log", cgroup_of(&r.json())));
    assert!(vanished_log.exists(), "{}", vanished_log.display());
    let leaky = state(&w, "leaky");
    let leaky_cg = cgroup_of(&leaky);
    // The escapee double-forked and called setsid; it is still in the sandbox's cgroup.
    let leaky_procs = wait_for(Duration::from_secs(5), "leaky's escapee", || {
        let p = procs_of(&w, &leaky_cg);
        (p.len() >= 3).then_some(p)
    });
    let before: Vec<Value> = ["plain", "leaky", "frozen"]
        .iter()
        .map(|id| state(&w, id))
        .collect();
    d1.sigkill();
    for p in &leaky_procs {
        assert!(
            paddock_testutil::pid_alive(*p),
            "sandbox processes outlive a daemon crash"
        );
    }

    std::fs::write(vanished_cg.join("cgroup.kill"), "1").unwrap();
    wait_for(
        Duration::from_secs(5),
        "the vanished sandbox's cgroup to go",
        || std::fs::remove_dir(&vanished_cg).ok(),
    );

    // A lost record: an owned cgroup with a process and no record must be reclaimed (with
    // the EBUSY fallback, since it is populated); an untagged one must be left alone.
    let orphan = w.cgroot.join("orphan@0000000000000001");
    std::fs::create_dir(&orphan).unwrap();
    tag(&w, &orphan);
    let orphan_pid = spawn_into(&orphan);
    let foreign = w.cgroot.join("not-ours");
    std::fs::create_dir(&foreign).unwrap();
    // A cgroup tagged as paddock's but BESIDE the managed root (outside it), with a process:
    // reconciliation never touches anything outside the root.
    let beside = w.t.path().join("beside@0000000000000003");
    std::fs::create_dir(&beside).unwrap();
    tag(&w, &beside);
    let beside_pid = spawn_into(&beside);

    // --- Daemon 2 (JSON logs): adopts all three, reclaims the orphan.
    let mut d2 = w.daemon(&["--log-format", "json"]);
    for b in &before {
        let id = b["id"].as_str().unwrap();
        let now = state(&w, id);
        assert_eq!(now["state"], "running", "{id}: {now}");
        assert_eq!(now["lifecycle"], b["lifecycle"], "{id}");
        assert_eq!(now["pid"], b["pid"], "{id}");
    }
    assert_eq!(state(&w, "frozen")["paused"], true);
    assert_eq!(
        w.http("GET", "/v1/sandboxes/vanished", None).status,
        404,
        "a gone sandbox is not listed"
    );
    assert!(
        !vanished_log.exists(),
        "the log of a gone sandbox is deleted: {}",
        vanished_log.display()
    );
    assert!(
        !paddock_testutil::pid_alive(orphan_pid),
        "the orphan's process was killed"
    );
    assert!(!orphan.exists(), "the orphan cgroup was reclaimed");
    assert!(foreign.exists(), "an untagged cgroup is left alone");
    std::fs::remove_dir(&foreign).unwrap();
    assert!(
        beside.exists(),
        "a tagged cgroup outside the root is untouched"
    );
    assert!(
        paddock_testutil::pid_alive(beside_pid),
        "the process of a cgroup outside the root is untouched"
    );
    assert_eq!(paddock_testutil::procs_recursive(&beside), vec![beside_pid]);
    std::fs::write(beside.join("cgroup.kill"), "1").unwrap();
    wait_for(Duration::from_secs(5), "the beside cgroup to go", || {
        std::fs::remove_dir(&beside).ok()
    });
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_reconcile_adopted_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "paddock_reconcile_reclaimed_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "paddock_cgroup_rmdir_fallback_total").unwrap() >= 1.0,
        "{m}"
    );
    let dying = metric(&m, "paddock_cgroup_root_dying_descendants")
        .unwrap_or_else(|| panic!("no numeric paddock_cgroup_root_dying_descendants: {m}"));
    assert!(dying >= 0.0 && dying.fract() == 0.0, "{dying}");
    let log = d2.log_text();
    assert!(
        log.contains("cgroup rmdir failed, falling back to cgroup.kill"),
        "EBUSY WARN text:\n{log}"
    );
    let mut adopted_lines = 0;
    let mut left_alone = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["message"] == "cgroup rmdir failed, falling back to cgroup.kill" {
            assert_eq!(v["level"], "WARN", "{line}");
            // Logged by the cgroup layer, which knows neither ID: they come from the
            // supervisor's span around the operation.
            assert!(
                v["sandbox"].is_string() && v["lifecycle"].is_string(),
                "the EBUSY warning names the sandbox and lifecycle: {line}"
            );
        }
        // Every line about a sandbox names its ID and its lifecycle.
        if v.get("sandbox").is_some() {
            assert!(
                v["lifecycle"].is_string() && !v["lifecycle"].as_str().unwrap().is_empty(),
                "a line about a sandbox without its lifecycle: {line}"
            );
        }
        if v["message"]
            == "reconcile: cgroups under the root without paddock's owner tag; left alone"
        {
            left_alone += 1;
            assert_eq!(v["level"], "WARN", "{line}");
            let cgs = v["cgroups"].as_str().unwrap_or_default();
            assert!(cgs.contains("not-ours"), "{line}");
            assert!(!cgs.contains("beside"), "{line}");
        }
        if v["message"] == "adopted sandbox" {
            adopted_lines += 1;
            assert!(
                v["sandbox"].is_string() && v["lifecycle"].is_string(),
                "{line}"
            );
        }
    }
    assert_eq!(adopted_lines, 3, "{log}");
    assert_eq!(
        left_alone, 1,
        "the untagged cgroup is reported once:\n{log}"
    );

    // The adopted sandboxes are controllable: resume, stats, stop the leaky one (the
    // escapee ignores SIGTERM and must be killed after the grace period).
    assert_eq!(
        w.http("POST", "/v1/sandboxes/frozen/resume", None).status,
        200
    );
    assert_eq!(w.http("GET", "/v1/sandboxes/plain/stats", None).status, 200);
    let r = w.http("POST", "/v1/sandboxes/leaky/stop?timeout=500ms", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["killed_after_grace"].as_u64().unwrap() >= 1,
        "{}",
        r.text()
    );
    for p in &leaky_procs {
        assert!(
            !paddock_testutil::pid_alive(*p),
            "leaky process {p} survived"
        );
    }
    assert!(!w.cgroot.join(&leaky_cg).exists());
    let m = w.http("GET", "/metrics", None).text();
    assert!(
        metric(&m, "paddock_processes_killed_after_grace_total").unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_stop_duration_seconds_count{phase="total"}"#),
        Some(1.0),
        "{m}"
    );

    // --- Mid-stop: a slow stop (main ignores SIGTERM, 3 s grace) is cut by SIGKILL.
    let mut slow = serde_json::from_slice::<Value>(&spec("slow", LEAKY)).unwrap();
    slow["stop"]["grace_period_ms"] = 3000.into();
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&serde_json::to_vec(&slow).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let slow_cg = cgroup_of(&r.json());
    let slow_procs = wait_for(Duration::from_secs(5), "slow's escapee", || {
        let p = procs_of(&w, &slow_cg);
        (p.len() >= 3).then_some(p)
    });
    let sock = w.socket.clone();
    let stopper = std::thread::spawn(move || {
        let _ = try_http_unix(&sock, "POST", "/v1/sandboxes/slow/stop", None, &[]);
    });
    wait_for(Duration::from_secs(5), "slow to be stopping", || {
        (state(&w, "slow")["state"] == "stopping").then_some(())
    });
    d2.sigkill();
    stopper.join().unwrap();
    assert!(
        w.cgroot.join(&slow_cg).exists(),
        "the stop was really cut short"
    );

    // --- Mid-create: a burst of creates with the daemon killed while they run.
    let mut d3 = w.daemon(&[]);
    // The restart finishes the interrupted stop.
    wait_for(
        Duration::from_secs(15),
        "the recovered stop to finish",
        || (!w.cgroot.join(&slow_cg).exists()).then_some(()),
    );
    for p in &slow_procs {
        assert!(
            !paddock_testutil::pid_alive(*p),
            "slow's process {p} survived the recovered stop"
        );
    }
    let creators: Vec<_> = (0..6)
        .map(|i| {
            let sock = w.socket.clone();
            std::thread::spawn(move || {
                let body = spec(&format!("burst-{i}"), LEAKY);
                try_http_unix(&sock, "POST", "/v1/sandboxes", Some(&body), &[])
                    .ok()
                    .map(|r| r.status)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(15));
    d3.sigkill();
    let answers: Vec<Option<u16>> = creators.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!(
        "mid-create: answers before the SIGKILL: {answers:?}; cgroups on disk: {:?}",
        w.cgroups()
    );

    // Deterministic mid-create points, written into the store as a crash would leave it:
    // (a) the record committed, the cgroup never made; (b) the cgroup made and the payload
    // spawned (it leaks an escapee), the crash before the `running` record was written.
    let rec_a = creating_record("half-a", None);
    let rec_b = creating_record("half-b", None);
    let cg_b = w.cgroot.join(&rec_b.cgroup);
    std::fs::create_dir(&cg_b).unwrap();
    tag(&w, &cg_b);
    let half_b_pid = spawn_into(&cg_b);
    put_records(&w, &[&rec_a, &rec_b]);

    // --- Daemon 4: everything listed is controllable; everything else is gone.
    let d4 = w.daemon(&[]);
    let list = w.http("GET", "/v1/sandboxes", None).json();
    eprintln!(
        "mid-create: after restart: {}",
        d4.log_text()
            .lines()
            .filter(|l| l.contains("burst-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut live = Vec::new();
    for i in list.as_array().unwrap() {
        let id = i["id"].as_str().unwrap().to_owned();
        let st = i["state"].as_str().unwrap();
        assert!(
            ["running", "stopping", "stopped"].contains(&st),
            "{id}: {i}"
        );
        if st == "running" {
            live.push(cgroup_of(i));
        }
    }
    for id in ["plain", "frozen"] {
        assert_eq!(
            state(&w, id)["state"],
            "running",
            "{id} survived three crashes"
        );
    }
    for id in ["half-a", "half-b"] {
        assert_eq!(
            w.http("GET", &format!("/v1/sandboxes/{id}"), None).status,
            404,
            "{id}: a start that never completed is dropped"
        );
    }
    assert!(!cg_b.exists(), "half-b's cgroup was removed");
    assert!(
        !paddock_testutil::pid_alive(half_b_pid),
        "half-b's process was killed"
    );
    // Every cgroup on disk is a listed live sandbox (or finishing its stop).
    wait_for(Duration::from_secs(15), "cgroups to match the list", || {
        let on_disk = w.cgroups();
        on_disk.iter().all(|c| live.contains(c)).then_some(())
    });
    for i in w
        .http("GET", "/v1/sandboxes", None)
        .json()
        .as_array()
        .unwrap()
    {
        if i["state"] == "running" {
            let id = i["id"].as_str().unwrap();
            let r = w.http(
                "POST",
                &format!("/v1/sandboxes/{id}/stop?timeout=200ms"),
                None,
            );
            assert_eq!(r.status, 200, "{id}: {}", r.text());
        }
    }
    for i in w
        .http("GET", "/v1/sandboxes", None)
        .json()
        .as_array()
        .unwrap()
    {
        let id = i["id"].as_str().unwrap();
        assert_eq!(
            w.http("DELETE", &format!("/v1/sandboxes/{id}"), None)
                .status,
            204,
            "{id}"
        );
    }
    assert_eq!(
        w.http("GET", "/v1/sandboxes", None).json(),
        serde_json::json!([])
    );
    w.assert_no_leaks();
    drop(d4);
    // Nothing is left for a fifth daemon to find.
    let _d5 = w.daemon(&[]);
    assert_eq!(
        w.http("GET", "/v1/sandboxes", None).json(),
        serde_json::json!([])
    );
    w.assert_no_leaks();
}

/// Writes records into the store of a stopped daemon, as a crash would have left them.
fn put_records(w: &World, recs: &[&paddock_supervisor::Record]) {
    let db = redb::Database::create(w.state.join("paddock.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("sandboxes"))
            .unwrap();
        for r in recs {
            t.insert(r.cgroup.as_str(), serde_json::to_vec(r).unwrap().as_slice())
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Tags a cgroup as the world's daemon's (`daemon:<its identity>`, read from the state
/// directory a daemon of this world has made).
fn tag(w: &World, cg: &std::path::Path) {
    let id = std::fs::read_to_string(w.state.join("owner-id")).unwrap();
    let v = format!("daemon:{}", id.trim());
    let v = v.as_bytes();
    let path = CString::new(cg.to_str().unwrap()).unwrap();
    let k = CString::new("user.paddock.owner").unwrap();
    // SAFETY: valid C strings and buffer for the duration of the call.
    let rc = unsafe { libc::setxattr(path.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// The record `before_create` commits for a fresh start.
fn creating_record(id: &str, main_pid: Option<i32>) -> paddock_supervisor::Record {
    use paddock_supervisor::*;
    let spec = SandboxSpec::new(SandboxId::new(id).unwrap(), "/bin/sh", ["-c", LEAKY]);
    let lifecycle = LifecycleId::fresh();
    Record {
        cgroup: cgroup_name(id, lifecycle),
        spec,
        lifecycle,
        state: State::Creating,
        paused: false,
        main_pid,
        main_start_time: None,
        stop_reason: None,
        created_at_ms: 0,
        jail: None,
        deadline_at_ms: None,
        restart_count: 0,
        restart_since_reset: 0,
        restart_pending: None,
        network: None,
    }
}

/// Starts `sleep 300` inside the cgroup at `cg` (via a shell that moves itself first).
fn spawn_into(cg: &std::path::Path) -> i32 {
    let script = format!("echo $$ > {}/cgroup.procs && exec sleep 300", cg.display());
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for(
        Duration::from_secs(5),
        "the orphan process to join its cgroup",
        || {
            paddock_testutil::procs_recursive(cg)
                .contains(&pid)
                .then_some(())
        },
    );
    // Deliberately not waited for here: it is killed by the reclaim, and reaped below.
    std::thread::spawn(move || {
        let mut c = child;
        let _ = c.wait();
    });
    pid
}

#[test]
fn periodic_reconcile_reclaims_while_running() {
    let Some(w) = world("crash_periodic_reconcile_reclaims_while_running") else {
        return;
    };
    // `daemon` (gid 1) exists on Debian: a group other than root's, so the chgrp shows.
    let _d = w.daemon(&["--reconcile-interval", "1", "--socket-group", "daemon"]);
    let meta = std::fs::metadata(&w.socket).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    assert_eq!(mode & 0o7777, 0o660, "--socket-group makes the socket 0660");
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        1,
        "--socket-group daemon chgrps the socket"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_eq!(
        w.http(
            "POST",
            "/v1/sandboxes",
            Some(&spec("keep", "exec sleep 300"))
        )
        .status,
        201
    );
    let orphan = w.cgroot.join("late@0000000000000002");
    std::fs::create_dir(&orphan).unwrap();
    tag(&w, &orphan);
    let pid = spawn_into(&orphan);
    wait_for(
        Duration::from_secs(10),
        "the periodic reconcile to reclaim the orphan",
        || (!orphan.exists()).then_some(()),
    );
    assert!(!paddock_testutil::pid_alive(pid));
    assert_eq!(
        state(&w, "keep")["state"],
        "running",
        "a recorded sandbox is never reclaimed"
    );
    let m = w.http("GET", "/metrics", None).text();
    assert!(
        metric(&m, "paddock_reconcile_runs_total").unwrap() >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "paddock_reconcile_reclaimed_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(w.http("POST", "/v1/sandboxes/keep/kill", None).status, 200);
    w.assert_no_leaks();
}

/// Mid-create crashes at exact points: the daemon's test hook (`PADDOCK_TEST_PAUSE_AT`)
/// holds a create at the point and logs it; the test SIGKILLs the daemon there, checks the
/// state on disk is the one that point leaves, and restarts: the record, the cgroup and any
/// spawned process are reclaimed (a start that never completed is dropped), nothing leaks,
/// and the ID can be used again.
#[test]
fn crash_mid_create_at_each_point() {
    let Some(w) = world("crash_mid_create_at_each_point") else {
        return;
    };
    for point in ["after_record", "after_mkdir", "after_spawn"] {
        let mut d = w.spawn_daemon_env(&[], &[("PADDOCK_TEST_PAUSE_AT", point)]);
        d.wait_ready();
        let sock = w.socket.clone();
        let id = format!("mid-{}", point.replace('_', "-"));
        let body = spec(&id, LEAKY);
        let creator = std::thread::spawn(move || {
            try_http_unix(&sock, "POST", "/v1/sandboxes", Some(&body), &[]).map(|r| r.status)
        });
        d.wait_log("test hook: create paused", Duration::from_secs(10));
        assert!(
            d.log_text().contains(&format!("point=\"{point}\""))
                || d.log_text().contains(&format!("point={point}")),
            "{}",
            d.log_text()
        );
        // What the point leaves on disk, before the crash.
        let cgs = w.cgroups();
        let spawned: Vec<i32> = match point {
            "after_record" => {
                assert!(cgs.is_empty(), "{point}: no cgroup yet: {cgs:?}");
                Vec::new()
            }
            "after_mkdir" => {
                assert_eq!(cgs.len(), 1, "{point}: {cgs:?}");
                assert!(cgs[0].starts_with(&format!("{id}@")), "{cgs:?}");
                assert!(procs_of(&w, &cgs[0]).is_empty(), "{point}: nothing spawned");
                Vec::new()
            }
            _ => {
                assert_eq!(cgs.len(), 1, "{point}: {cgs:?}");
                // The payload runs (and leaks an escapee) with no `running` record. Its two
                // shells live on; the `sleep 1`s they run come and go, so only the shells
                // are checked to outlive the crash (a `sleep` that ended by itself in
                // between failed this test twice in about 10 runs).
                wait_for(Duration::from_secs(5), "the payload's escapee", || {
                    let shells: Vec<i32> = procs_of(&w, &cgs[0])
                        .into_iter()
                        .filter(|p| {
                            std::fs::read_to_string(format!("/proc/{p}/comm"))
                                .is_ok_and(|c| c.trim() == "sh")
                        })
                        .collect();
                    (shells.len() >= 2).then_some(shells)
                })
            }
        };
        d.sigkill();
        let answer = creator.join().unwrap();
        assert!(
            !matches!(answer, Ok(201)),
            "{point}: the create never finished, it cannot have answered 201: {answer:?}"
        );
        for p in &spawned {
            assert!(
                paddock_testutil::pid_alive(*p),
                "{point}: {p} outlives the crash"
            );
        }

        let d = w.daemon(&[]);
        let r = w.http("GET", &format!("/v1/sandboxes/{id}"), None);
        assert_eq!(
            r.status,
            404,
            "{point}: a start that never completed is dropped: {}",
            r.text()
        );
        assert_eq!(
            w.http("GET", "/v1/sandboxes", None).json(),
            serde_json::json!([]),
            "{point}"
        );
        assert!(w.cgroups().is_empty(), "{point}: {:?}", w.cgroups());
        for p in &spawned {
            assert!(
                !paddock_testutil::pid_alive(*p),
                "{point}: process {p} leaked"
            );
        }
        w.assert_no_leaks();
        let log = d.log_text();
        assert!(
            log.contains("reconcile: sandbox is gone; record and log dropped") && log.contains(&id),
            "{point}: {log}"
        );
        // The ID is free again, and the record is really gone: a third daemon finds nothing.
        let r = w.http("POST", "/v1/sandboxes", Some(&spec(&id, "exec sleep 300")));
        assert_eq!(r.status, 201, "{point}: {}", r.text());
        assert_eq!(
            w.http("POST", &format!("/v1/sandboxes/{id}/kill"), None)
                .status,
            200
        );
        assert_eq!(
            w.http("DELETE", &format!("/v1/sandboxes/{id}"), None)
                .status,
            204
        );
        drop(d);
        let d = w.daemon(&[]);
        assert_eq!(
            w.http("GET", "/v1/sandboxes", None).json(),
            serde_json::json!([]),
            "{point}"
        );
        w.assert_no_leaks();
        drop(d);
    }
}

/// A hook value that is not a point is refused at start-up.
#[test]
fn unknown_pause_point_is_refused() {
    let Some(w) = world("crash_unknown_pause_point_is_refused") else {
        return;
    };
    let o = std::process::Command::new(BIN)
        .args(w.serve_args())
        .env("PADDOCK_TEST_PAUSE_AT", "sometime")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PADDOCK_TEST_PAUSE_AT") && err.contains("after_spawn"),
        "{err}"
    );
}

/// A record with a main PID but no start time cannot prove the PID is still its process:
/// it is never adopted (a reused PID would be), the main process is treated as gone, and
/// the sandbox's cgroup is stopped and removed; the unrelated process that holds the PID
/// is untouched.
#[test]
fn a_pid_without_start_time_is_not_adopted() {
    let Some(w) = world("crash_a_pid_without_start_time_is_not_adopted") else {
        return;
    };
    // A first daemon makes the store; then it is gone.
    let mut d = w.daemon(&[]);
    d.sigkill();
    // The "reused PID": a process outside every sandbox.
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stranger_pid = stranger.id() as i32;
    let mut rec = creating_record("unverified", Some(stranger_pid));
    rec.state = paddock_supervisor::State::Running;
    assert_eq!(rec.main_start_time, None);
    let cg = w.cgroot.join(&rec.cgroup);
    std::fs::create_dir(&cg).unwrap();
    tag(&w, &cg);
    let inside = spawn_into(&cg);
    put_records(&w, &[&rec]);

    let d = w.daemon(&[]);
    // Whatever the daemon does with the sandbox, it never takes the stranger for its main
    // process: the sandbox (stopped by the recovery) reports no PID.
    wait_for(
        Duration::from_secs(15),
        "the recovered stop to finish",
        || (!cg.exists()).then_some(()),
    );
    let r = w.http("GET", "/v1/sandboxes/unverified", None);
    if r.status == 200 {
        let info = r.json();
        assert!(info["pid"].is_null(), "{info}");
        assert_ne!(info["state"], "running", "{info}");
    } else {
        assert_eq!(r.status, 404, "{}", r.text());
    }
    assert!(
        !paddock_testutil::pid_alive(inside),
        "the sandbox's process was killed"
    );
    assert!(
        paddock_testutil::pid_alive(stranger_pid),
        "the process holding the recorded PID is untouched"
    );
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("no start time")
            && l.contains("unverified")
            && l.contains(&stranger_pid.to_string())),
        "{log}"
    );
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_reconcile_adopted_total"),
        Some(1.0),
        "{m}"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
    w.assert_no_leaks();
}
