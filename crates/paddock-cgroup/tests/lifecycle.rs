//! Root tests of the cgroup core against the real kernel: kill, remove, the EBUSY backstop.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use paddock_cgroup::{CgroupName, Error, KillMethod, KillOptions, RemoveOptions, Root};
use paddock_testutil::pid_alive;

// The removal tests that spawn through the cgroup fd with paddock-proc are in
// tests/remove_backstop.rs, a binary of their own: paddock-proc's reaper would reap the children
// this file spawns with std::process and waits for.

#[tokio::test]
async fn plain_remove_of_empty_cgroup_is_silent() {
    let Some((_t, root)) = root("plain_remove_of_empty_cgroup_is_silent") else {
        return;
    };
    let cap = Capture::default();
    let _g = cap.install();
    let cg = root.create(&name("empty")).unwrap();
    let r = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(r.fast_path && r.kill.is_none());
    assert!(!cg.path().exists());
    assert!(!cap.text().contains("WARN"), "{}", cap.text());
    // Idempotent: removing again is fine and says it was gone.
    let again = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(again.already_gone);
    assert_eq!(root.counters().snapshot().rmdir_fast, 1);
}

/// A double-forked `setsid` escapee that ignores SIGTERM is still in the cgroup and dies.
async fn escapee(force_fallback: bool, test: &str) {
    // The payload's ready file (cgroupfs cannot hold one). Made before the test root, so it
    // is removed after the test root's drop has killed the payload, also on failure.
    let ready = TempFile::new(&format!(
        "paddock-esc-{}-{force_fallback}",
        std::process::id()
    ));
    let Some((_t, root)) = root(test) else { return };
    let cg = root.create(&name("sbx-esc")).unwrap();
    let ready = ready.path();
    let script = format!(
        "setsid sh -c 'trap \"\" TERM; (trap \"\" TERM; exec sleep 300) & echo $! > {r}.tmp; mv {r}.tmp {r}; wait' & exit 0",
        r = ready.display()
    );
    let child = spawn_in(&cg, &script);
    assert!(reap(child, Duration::from_secs(5)).success());
    wait_file(ready, Duration::from_secs(5));
    let esc: i32 = std::fs::read_to_string(ready)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(esc));
    assert!(cg.procs_recursive().unwrap().contains(&esc));
    let r = cg
        .remove(&RemoveOptions {
            force_kill_fallback: force_fallback,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.kill.as_ref().unwrap().found >= 2, "{r:?}");
    assert!(!cg.path().exists());
    assert!(!pid_alive(esc), "escapee {esc} survived");
}

#[tokio::test]
async fn double_fork_setsid_escapee_is_killed() {
    escapee(false, "double_fork_setsid_escapee_is_killed").await;
}

#[tokio::test]
async fn double_fork_setsid_escapee_is_killed_by_fallback() {
    escapee(true, "double_fork_setsid_escapee_is_killed_by_fallback").await;
}

/// A kill names (PID and comm) up to `name_first` of the processes it found, read before
/// they died; the count is always complete.
#[tokio::test]
async fn kill_names_the_first_processes_it_found() {
    let Some((_t, root)) = root("kill_names_the_first_processes_it_found") else {
        return;
    };
    for force_fallback in [false, true] {
        let cg = root
            .create(&name(&format!("named-{force_fallback}")))
            .unwrap();
        let child = spawn_in(&cg, "sleep 300 & sleep 300 & exec sleep 300");
        wait_procs(&cg, 3, Duration::from_secs(10));
        let listed = cg.procs_recursive().unwrap();
        let r = cg
            .kill(&KillOptions {
                force_fallback,
                name_first: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.found, 3, "{r:?}");
        assert_eq!(r.named.len(), 2, "{r:?}");
        for (k, pid) in r.named.iter().zip(&listed) {
            assert_eq!(k.pid, *pid, "{r:?}");
            // The main shell may not have exec'd its `sleep` yet.
            assert!(matches!(k.comm.as_deref(), Some("sleep" | "sh")), "{r:?}");
        }
        let _ = reap(child, Duration::from_secs(3));
        cg.remove(&RemoveOptions::default()).await.unwrap();
    }
}

/// A payload that keeps forking while it is killed: every kill must end with the subtree
/// empty (a single cgroup.kill write is not always enough on this kernel), and no kill may
/// reach its deadline.
async fn fork_storm(force_fallback: bool, test: &str, rounds: usize) {
    let Some((_t, root)) = root(test) else { return };
    let start = Instant::now();
    for i in 0..rounds {
        let cg = root.create(&name(&format!("storm-{i}"))).unwrap();
        // Each loop iteration forks a subshell that forks again; bounded by the kill.
        let child = spawn_in(&cg, "while :; do ( sleep 30 & ) ; done");
        wait_procs(&cg, 8, Duration::from_secs(10));
        cg.kill(&KillOptions {
            timeout: Duration::from_secs(10),
            force_fallback,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("round {i}: {e}"));
        let left = cg.procs_recursive().unwrap();
        assert!(left.is_empty(), "round {i}: survivors {left:?}");
        assert!(
            !cg.events().unwrap().populated,
            "round {i}: still populated"
        );
        let _ = reap(child, Duration::from_secs(3));
        cg.remove(&RemoveOptions::default()).await.unwrap();
    }
    let c = root.counters().snapshot();
    eprintln!(
        "{test}: {rounds} rounds in {:?}: {} extra cgroup.kill writes, {} fallback kills, {} \
         kill failures",
        start.elapsed(),
        c.kill_rewrites,
        c.kill_freeze_fallback,
        c.kill_failures
    );
    assert_eq!(c.kill_failures, 0, "{c:?}");
    assert_eq!(c.remove_failures, 0, "{c:?}");
    let fallbacks = if force_fallback { rounds as u64 } else { 0 };
    assert_eq!(c.kill_freeze_fallback, fallbacks, "{c:?}");
}

/// 100 rounds (about 2 s on an idle machine; `PADDOCK_STORM_ROUNDS` overrides it for a
/// soak run). The number of extra `cgroup.kill` writes is printed, not asserted: it depends
/// on the machine's load (a write is repeated whenever the wait for `populated 0` stalls,
/// which a busy machine makes more likely). Measured here (kernel 6.18, 2 shared cores):
/// 0, 0, 0, 1, 1 and 4 extra writes in six runs of 60 rounds, 4 to 57 in eight runs of
/// 200 rounds; never reliably non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forking_payload_is_always_emptied() {
    let rounds = std::env::var("PADDOCK_STORM_ROUNDS").map_or(100, |v| {
        v.parse()
            .expect("PADDOCK_STORM_ROUNDS must be a number of rounds")
    });
    fork_storm(false, "forking_payload_is_always_emptied", rounds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forking_payload_is_always_emptied_by_fallback() {
    fork_storm(true, "forking_payload_is_always_emptied_by_fallback", 15).await;
}

/// The payload builds nested child cgroups, moves into the deepest, and one of them is
/// frozen: kill and removal still leave nothing.
async fn nested_and_frozen(force_fallback: bool, test: &str) {
    let Some((_t, root)) = root(test) else { return };
    let cg = root.create(&name("sbx-nest")).unwrap();
    let script = "mkdir -p $CG/a/b $CG/c; echo $$ > $CG/a/b/cgroup.procs; \
                  sh -c 'echo $$ > '$CG'/c/cgroup.procs; exec sleep 300' & \
                  sleep 300 & exec sleep 300";
    let child = spawn_in(&cg, script);
    wait_procs(&cg, 3, Duration::from_secs(5));
    wait_file(&cg.path().join("c"), Duration::from_secs(5));
    let c = cg.open_child(&name("c")).unwrap();
    wait_procs(&c, 1, Duration::from_secs(5));
    let ab = cg
        .open_child(&name("a"))
        .unwrap()
        .open_child(&name("b"))
        .unwrap();
    wait_procs(&ab, 1, Duration::from_secs(5));
    assert!(
        c.freeze_wait(Duration::from_secs(5)).await.unwrap(),
        "child did not freeze"
    );
    assert!(cg.children().unwrap().len() == 2);
    let r = cg
        .remove(&RemoveOptions {
            force_kill_fallback: force_fallback,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.cgroups_removed, 4, "{r:?}");
    assert!(!cg.path().exists());
    assert_eq!(
        reap(child, Duration::from_secs(3)).signal(),
        Some(libc::SIGKILL)
    );
}

#[tokio::test]
async fn nested_and_frozen_child_cgroups_are_removed() {
    nested_and_frozen(false, "nested_and_frozen_child_cgroups_are_removed").await;
}

#[tokio::test]
async fn nested_and_frozen_child_cgroups_are_removed_by_fallback() {
    nested_and_frozen(
        true,
        "nested_and_frozen_child_cgroups_are_removed_by_fallback",
    )
    .await;
}

/// A removal cancelled part-way (its future dropped at an await point) leaves the cgroup
/// removable; the next removal succeeds. The future is polled exactly once by hand; with
/// many processes to kill, that first poll stops at the wait for `populated 0`. Where a
/// very fast kill finishes within the first poll anyway, the round is repeated.
#[tokio::test]
async fn cancelled_removal_can_be_retried() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let Some((_t, root)) = root("cancelled_removal_can_be_retried") else {
        return;
    };
    let mut cancelled = 0;
    for round in 0..10 {
        let cg = root.create(&name(&format!("sbx-cancel-{round}"))).unwrap();
        let child = spawn_in(
            &cg,
            "i=0; while [ $i -lt 60 ]; do sleep 300 & i=$((i+1)); done; exec sleep 300",
        );
        wait_procs(&cg, 61, Duration::from_secs(10));
        let opts = RemoveOptions::default();
        let done = {
            let mut fut = std::pin::pin!(cg.remove(&opts));
            let mut cx = Context::from_waker(Waker::noop());
            matches!(fut.as_mut().poll(&mut cx), Poll::Ready(_))
        };
        if !done {
            cancelled += 1;
            assert!(
                cg.path().exists(),
                "a cancelled removal must not have removed the cgroup"
            );
        }
        let r = cg.remove(&RemoveOptions::default()).await.unwrap();
        assert!(done || !r.already_gone, "{r:?}");
        assert!(!cg.path().exists());
        let _ = reap(child, Duration::from_secs(3));
        if cancelled >= 3 {
            break;
        }
    }
    assert!(cancelled >= 1, "no removal was ever cancelled part-way");
}

/// A kill that cannot empty the cgroup ends at its deadline with [`Error::KillTimeout`]
/// listing who is left (pid, command, state). The survivor is held by a cgroup v1 freezer:
/// a v1-frozen task sleeps uninterruptibly and SIGKILL cannot end it until it is thawed.
/// Both kill mechanisms are checked; after the thaw a kill empties the cgroup.
#[tokio::test]
async fn kill_deadline_lists_the_survivors() {
    let test = "kill_deadline_lists_the_survivors";
    let Some((_t, root)) = root(test) else { return };
    let v1 = match V1Freezer::create(test) {
        Ok(f) => f,
        Err(reason) => {
            // Not `paddock_testutil::skip`: a pure cgroup v2 machine (the VM) has no v1
            // freezer by design. The deadline itself is checked everywhere by
            // `failed_removal_is_retried`.
            paddock_testutil::note_skip(test, &reason);
            return;
        }
    };
    let cg = root.create(&name("sbx-stuck")).unwrap();
    let child = spawn_in(&cg, "exec sleep 300");
    let pid = wait_procs(&cg, 1, Duration::from_secs(5))[0];
    wait_comm(pid, "sleep", Duration::from_secs(5));
    v1.add(pid);
    v1.freeze();
    let timeout = Duration::from_millis(300);
    for (i, force_fallback) in [false, true].into_iter().enumerate() {
        let start = Instant::now();
        let err = cg
            .kill(&KillOptions {
                timeout,
                force_fallback,
                ..Default::default()
            })
            .await
            .expect_err("a v1-frozen process cannot die, so the kill must time out");
        assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
        let msg = err.to_string();
        let Error::KillTimeout {
            remaining,
            elapsed,
            list_error,
            path,
        } = err
        else {
            panic!("not a KillTimeout: {msg}");
        };
        assert_eq!(path, cg.path());
        assert!(elapsed >= timeout, "{elapsed:?}");
        assert!(list_error.is_none(), "{msg}");
        let p = remaining
            .iter()
            .find(|p| p.pid == pid)
            .unwrap_or_else(|| panic!("survivor {pid} not listed: {msg}"));
        assert_eq!(p.comm.as_deref(), Some("sleep"), "{msg}");
        assert_eq!(p.state, Some('D'), "{msg}");
        assert!(
            msg.contains(&format!("1 process(es): pid {pid} (sleep) state D")),
            "{msg}"
        );
        assert_eq!(
            root.counters().snapshot().kill_failures,
            i as u64 + 1,
            "force_fallback {force_fallback}"
        );
    }
    assert!(
        !cg.events().unwrap().frozen,
        "the fallback left the cgroup frozen"
    );
    v1.thaw();
    cg.kill(&KillOptions::default()).await.unwrap();
    assert_eq!(
        reap(child, Duration::from_secs(3)).signal(),
        Some(libc::SIGKILL)
    );
    cg.remove(&RemoveOptions::default()).await.unwrap();
}

/// A removal that fails (its deadline is zero while a process lives) returns the error,
/// leaves the directory, counts the failure, and a later removal succeeds.
#[tokio::test]
async fn failed_removal_is_retried() {
    let Some((_t, root)) = root("failed_removal_is_retried") else {
        return;
    };
    let cg = root.create(&name("sbx-fail")).unwrap();
    let child = spawn_in(&cg, "exec sleep 300");
    wait_procs(&cg, 1, Duration::from_secs(5));
    let before = root.counters().snapshot();
    let err = cg
        .remove(&RemoveOptions {
            timeout: Duration::ZERO,
            ..Default::default()
        })
        .await
        .expect_err("a zero deadline cannot be met while a process lives");
    assert!(matches!(err, Error::KillTimeout { .. }), "{err}");
    assert!(cg.path().exists(), "a failed removal removed the directory");
    let after = root.counters().snapshot();
    assert_eq!(after.remove_failures, before.remove_failures + 1);
    assert_eq!(after.kill_failures, before.kill_failures + 1);
    assert_eq!(after.rmdir_fallback, before.rmdir_fallback + 1);
    let r = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert!(!r.already_gone, "{r:?}");
    assert!(!cg.path().exists());
    assert_eq!(
        root.counters().snapshot().remove_failures,
        after.remove_failures
    );
    assert_eq!(
        reap(child, Duration::from_secs(3)).signal(),
        Some(libc::SIGKILL)
    );
}

/// Not a test: the multi-threaded payload of `threaded_subtree_is_killed`, which runs this
/// test binary again with `--ignored --exact threaded_payload` and
/// `PADDOCK_THREADED_PAYLOAD=1`. Without that variable it returns at once.
#[test]
#[ignore = "the payload of threaded_subtree_is_killed, run by it"]
fn threaded_payload() {
    if std::env::var_os("PADDOCK_THREADED_PAYLOAD").is_none() {
        return;
    }
    for _ in 0..3 {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A payload whose thread sits in a threaded child cgroup. `cgroup.kill` and
/// `cgroup.procs` both refuse threaded cgroups (`EOPNOTSUPP`), so a kill of the threaded
/// child's handle takes the freeze-and-signal fallback, which must find the process
/// through `cgroup.threads`; a kill of the sandbox (the threaded domain) uses
/// `cgroup.kill`, and a forced fallback there works too. Each time the process dies of
/// SIGKILL and the sandbox is empty and removable.
#[tokio::test]
async fn threaded_subtree_is_killed() {
    let Some((_t, root)) = root("threaded_subtree_is_killed") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "PADDOCK_THREADED_PAYLOAD=1 exec '{}' --ignored --exact threaded_payload \
         --test-threads=1 >/dev/null 2>&1",
        exe.display()
    );
    // (kill the threaded child's handle?, force the fallback?, expected method)
    let cases = [
        (true, false, KillMethod::FreezeAndSignal),
        (false, false, KillMethod::CgroupKill),
        (false, true, KillMethod::FreezeAndSignal),
    ];
    for (i, (kill_child, force_fallback, method)) in cases.into_iter().enumerate() {
        let cg = root.create(&name(&format!("sbx-thr-{i}"))).unwrap();
        let t = cg.create_child(&name("t")).unwrap();
        std::fs::write(t.path().join("cgroup.type"), "threaded").unwrap();
        let child = spawn_in(&cg, &script);
        let pid = wait_procs(&cg, 1, Duration::from_secs(5))[0];
        // The payload runs once it has its three extra threads.
        let deadline = Instant::now() + Duration::from_secs(10);
        let tid = loop {
            let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&t| t != pid)
                .collect();
            if tids.len() >= 3 {
                break tids[0];
            }
            assert!(
                Instant::now() < deadline,
                "the payload {pid} has no threads"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        std::fs::write(t.path().join("cgroup.threads"), tid.to_string()).unwrap();
        assert!(t.events().unwrap().populated);
        assert_eq!(t.procs().unwrap(), vec![pid], "the owner of thread {tid}");
        assert_eq!(
            cg.procs_recursive().unwrap(),
            vec![pid],
            "each process once"
        );
        let target = if kill_child { &t } else { &cg };
        let rep = target
            .kill(&KillOptions {
                timeout: Duration::from_secs(5),
                force_fallback,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!((rep.method, rep.found), (method, 1), "case {i}: {rep:?}");
        assert!(!t.events().unwrap().populated, "case {i}");
        // What the kill controls is the request (`cgroup.freeze`); the kernel's `frozen`
        // in `cgroup.events` follows it. Once in about 100 runs under load, a threaded
        // subtree killed while frozen still read `frozen 1` right after the kill; so the
        // request is checked at once and the report waited for, bounded.
        for c in [&cg, &t] {
            let req = std::fs::read_to_string(c.path().join("cgroup.freeze")).unwrap();
            assert_eq!(
                req.trim(),
                "0",
                "case {i}: {} left frozen",
                c.path().display()
            );
            assert!(
                c.watch()
                    .unwrap()
                    .wait_frozen(false, Duration::from_secs(2))
                    .await
                    .unwrap(),
                "case {i}: {} has cgroup.freeze 0 but still reports frozen 1 after 2 s",
                c.path().display()
            );
        }
        assert_eq!(
            reap(child, Duration::from_secs(3)).signal(),
            Some(libc::SIGKILL),
            "case {i}"
        );
        let r = cg.remove(&RemoveOptions::default()).await.unwrap();
        assert_eq!(r.cgroups_removed, 2, "case {i}: {r:?}");
        assert!(!cg.path().exists(), "case {i}");
    }
}

/// The freeze-and-signal kill dropped while it waits for `frozen 1` (its future polled
/// once, then dropped) thaws the cgroup; a second kill then empties it. Rounds where the
/// first poll got past the freeze (cgroup.freeze already back to 0 before the drop) prove
/// nothing and are repeated; with 60 processes to freeze, most stop at the wait.
#[tokio::test]
async fn cancelled_fallback_kill_leaves_the_cgroup_thawed() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let Some((_t, root)) = root("cancelled_fallback_kill_leaves_the_cgroup_thawed") else {
        return;
    };
    let freeze_file = |cg: &paddock_cgroup::Cgroup| {
        std::fs::read_to_string(cg.path().join("cgroup.freeze"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let mut cancelled_frozen = 0;
    for round in 0..10 {
        let cg = root.create(&name(&format!("sbx-kcancel-{round}"))).unwrap();
        let child = spawn_in(
            &cg,
            "i=0; while [ $i -lt 60 ]; do sleep 300 & i=$((i+1)); done; exec sleep 300",
        );
        wait_procs(&cg, 61, Duration::from_secs(10));
        let opts = KillOptions {
            timeout: Duration::from_secs(5),
            force_fallback: true,
            ..Default::default()
        };
        let (done, frozen_at_drop) = {
            let mut fut = std::pin::pin!(cg.kill(&opts));
            let mut cx = Context::from_waker(Waker::noop());
            let done = matches!(fut.as_mut().poll(&mut cx), Poll::Ready(_));
            (done, freeze_file(&cg) == "1")
        };
        if frozen_at_drop {
            cancelled_frozen += 1;
        }
        assert!(!done || !frozen_at_drop, "round {round}: done but frozen");
        assert_eq!(
            freeze_file(&cg),
            "0",
            "round {round}: the dropped kill left the cgroup frozen"
        );
        let rep = cg.kill(&KillOptions::default()).await.unwrap();
        assert!(!cg.events().unwrap().populated, "round {round}: {rep:?}");
        assert_eq!(
            reap(child, Duration::from_secs(3)).signal(),
            Some(libc::SIGKILL),
            "round {round}"
        );
        cg.remove(&RemoveOptions::default()).await.unwrap();
        if cancelled_frozen >= 3 {
            break;
        }
    }
    assert!(
        cancelled_frozen >= 1,
        "the first poll never stopped at the wait for frozen"
    );
}

#[tokio::test]
async fn bad_names_create_nothing() {
    let Some((t, root)) = root("bad_names_create_nothing") else {
        return;
    };
    // Other tests (and other processes) create cgroups under the mount concurrently, so
    // look for exactly what an escape would have created, and at this test's own subtree.
    let before: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for bad in [
        "",
        "..",
        ".",
        "a/b",
        "../escape",
        "cgroup.procs",
        "memory.max",
        "x\0y",
        &"n".repeat(256),
    ] {
        assert!(
            matches!(CgroupName::new(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(Root::open_or_create(std::path::Path::new("../escape")).is_err());
    assert!(Root::open_or_create(&t.path().join("ok/../../escape")).is_err());
    assert!(Root::open_or_create(std::path::Path::new("/etc/paddock")).is_err());
    let after: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after);
    assert!(!t.mount().join("escape").exists());
    assert!(!t.path().join("ok").exists());
    assert!(root.list().unwrap().0.is_empty());
    // An existing name is never silently shared.
    let _a = root.create(&name("dup")).unwrap();
    assert!(matches!(
        root.create(&name("dup")),
        Err(Error::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn members_signal_all_and_procs_recursive() {
    let Some((_t, root)) = root("members_signal_all_and_procs_recursive") else {
        return;
    };
    let cg = root.create(&name("sbx-members")).unwrap();
    let child = spawn_in(
        &cg,
        "mkdir $CG/sub; sh -c 'echo $$ > '$CG'/sub/cgroup.procs; exec sleep 300' & exec sleep 300",
    );
    wait_procs(&cg, 2, Duration::from_secs(5));
    wait_file(&cg.path().join("sub"), Duration::from_secs(5));
    wait_procs(
        &cg.open_child(&name("sub")).unwrap(),
        1,
        Duration::from_secs(5),
    );
    let pids = cg.procs_recursive().unwrap();
    assert_eq!(cg.procs().unwrap().len(), 1, "top-level procs only");
    let members = cg.members().unwrap();
    assert_eq!(members.len(), 2);
    for m in &members {
        assert!(pids.contains(&m.pid));
    }
    let n = cg.signal_all(rustix::process::Signal::TERM).unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        reap(child, Duration::from_secs(3)).signal(),
        Some(libc::SIGTERM)
    );
    let w = cg.watch().unwrap();
    assert!(w.wait_unpopulated(Duration::from_secs(3)).await.unwrap());
    let r = cg.remove(&RemoveOptions::default()).await.unwrap();
    assert_eq!(r.cgroups_removed, 2);
}

#[tokio::test]
async fn freeze_thaw_and_events() {
    let Some((_t, root)) = root("freeze_thaw_and_events") else {
        return;
    };
    let cg = root.create(&name("sbx-freeze")).unwrap();
    assert!(!cg.events().unwrap().populated);
    let child = spawn_in(&cg, "exec sleep 300");
    wait_procs(&cg, 1, Duration::from_secs(5));
    assert!(cg.events().unwrap().populated);
    assert!(cg.freeze_wait(Duration::from_secs(5)).await.unwrap());
    assert!(cg.events().unwrap().frozen);
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") S ") || stat.contains(") D "), "{stat}");
    // Stats keep working while frozen; kill works on a frozen cgroup.
    assert!(cg.stats().unwrap().cpu.is_some());
    assert!(cg.thaw_wait(Duration::from_secs(5)).await.unwrap());
    assert!(cg.freeze_wait(Duration::from_secs(5)).await.unwrap());
    let rep = cg.kill(&KillOptions::default()).await.unwrap();
    assert_eq!(rep.found, 1);
    assert_eq!(
        reap(child, Duration::from_secs(3)).signal(),
        Some(libc::SIGKILL)
    );
    cg.remove(&RemoveOptions::default()).await.unwrap();
}

#[tokio::test]
async fn kill_of_empty_cgroup_is_a_no_op() {
    let Some((_t, root)) = root("kill_of_empty_cgroup_is_a_no_op") else {
        return;
    };
    let cg = root.create(&name("idle")).unwrap();
    let r = cg.kill(&KillOptions::default()).await.unwrap();
    assert_eq!(r.method, KillMethod::NothingToKill);
    cg.remove(&RemoveOptions::default()).await.unwrap();
    // Killing a removed cgroup is also fine.
    assert_eq!(
        cg.kill(&KillOptions::default()).await.unwrap().method,
        KillMethod::NothingToKill
    );
}

/// The kernel announces `cgroup.events` changes at most once per 10 ms per file, so a
/// process killed right after it joined the cgroup is reported `populated 0` up to 10 ms
/// late. A wait that tracks the processes' pidfds must see the cgroup empty as soon as they
/// have exited. Without the tracking, the median here is the rate-limit interval (~10 ms).
#[tokio::test]
async fn exit_tracking_beats_the_notification_rate_limit() {
    let test = "exit_tracking_beats_the_notification_rate_limit";
    if std::env::var_os("PADDOCK_VM").is_some() {
        paddock_testutil::note_skip(
            test,
            "a latency bound is not meaningful under TCG emulation",
        );
        return;
    }
    let Some((_t, root)) = root(test) else { return };
    let mut times = Vec::new();
    for i in 0..9 {
        let cg = root.create(&name(&format!("rl-{i}"))).unwrap();
        // Joining the cgroup raised a notification just now: the next one is deferred.
        let child = spawn_in(&cg, "exec sleep 300");
        let pids = wait_procs(&cg, 1, Duration::from_secs(5));
        let w = cg.watch().unwrap();
        assert!(w.read().unwrap().populated);
        let t0 = Instant::now();
        std::fs::write(cg.path().join("cgroup.kill"), "1").unwrap();
        let exits = paddock_cgroup::ExitWatch::for_pids(&pids);
        assert!(
            w.wait_unpopulated_tracking(&exits, Duration::from_secs(1))
                .await
                .unwrap()
        );
        times.push(t0.elapsed());
        let _ = reap(child, Duration::from_secs(3));
        cg.remove(&RemoveOptions::default()).await.unwrap();
    }
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(5),
        "median {median:?} of {times:?}"
    );
}

/// A parent that forks without pause ([`paddock_testutil::FORKER`]): a child whose fork
/// was in progress when `cgroup.procs` was read must get the signal too, or it outlives
/// the stop signal (the wrapper-chain test's `sleep` left behind by a trapping shell). Any
/// survivor is a child that the stop signal never reached. Without the freeze (repeated
/// passes only) this failed in about half of the runs; with the freeze but without the
/// follow-up of processes that had the signal blocked (perl blocks every signal around
/// `fork`), in about 1 run in 20: a parent frozen inside that window forked once more
/// after the thaw. `signal_all_frozen_reaches_a_child_forked_after_the_thaw` reproduces
/// that case deterministically.
#[tokio::test]
async fn signal_all_frozen_reaches_children_forked_while_it_signals() {
    let test = "signal_all_frozen_reaches_children_forked_while_it_signals";
    let Some((_t, root)) = root(test) else {
        return;
    };
    for round in 0..5 {
        let cg = root.create(&name(&format!("sbx-forker-{round}"))).unwrap();
        let child = spawn_in(&cg, paddock_testutil::FORKER);
        wait_procs(&cg, 40, Duration::from_secs(10));
        let mut sent = cg
            .signal_all_frozen(rustix::process::Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();
        let rep = sent.report();
        let n = rep.delivered;
        assert!(rep.exact, "round {round}: the freeze did not complete");
        assert!(n >= 40, "round {round}: signalled only {n}");
        assert!(!cg.events().unwrap().frozen, "round {round}: left frozen");
        let w = cg.watch().unwrap();
        let empty = cg
            .wait_signalled(&w, &mut sent, Duration::from_secs(10))
            .await
            .unwrap();
        let left = cg.procs_recursive().unwrap();
        let status: Vec<String> = left
            .iter()
            .take(3)
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .collect();
        cg.kill(&KillOptions::default()).await.unwrap();
        let forker = reap(child, Duration::from_secs(5));
        cg.remove(&RemoveOptions::default()).await.unwrap();
        assert!(
            empty,
            "round {round}: {} of {}+ processes never got SIGTERM ({} follow-ups): {left:?}\n{status:#?}",
            left.len(),
            sent.report().delivered,
            sent.report().follow_ups,
        );
        assert_eq!(
            forker.signal(),
            Some(libc::SIGTERM),
            "round {round}: the forker did not die of the signal"
        );
    }
}

/// The hole behind that test's rare failures, made deterministic: a process that has
/// SIGTERM blocked when the frozen stop signal reaches it forks only after the thaw
/// ([`paddock_testutil::BLOCKED_FORKER`]). Pending signals are not inherited, so its child
/// never gets SIGTERM from the frozen round; `wait_signalled` must follow up when the
/// parent exits. Without the follow-up, the child's `sleep 300` keeps the cgroup populated.
#[tokio::test]
async fn signal_all_frozen_reaches_a_child_forked_after_the_thaw() {
    let test = "signal_all_frozen_reaches_a_child_forked_after_the_thaw";
    let Some((_t, root)) = root(test) else {
        return;
    };
    for round in 0..3 {
        let cg = root.create(&name(&format!("sbx-blocked-{round}"))).unwrap();
        let ready = std::env::temp_dir().join(format!("{test}.{}.{round}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let script = format!(
            "READY={} {}",
            ready.display(),
            paddock_testutil::BLOCKED_FORKER
        );
        let child = spawn_in(&cg, &script);
        wait_file(&ready, Duration::from_secs(10));
        let _ = std::fs::remove_file(&ready);
        assert!(paddock_testutil::signal_blocked(
            child.id() as i32,
            libc::SIGTERM
        ));
        let mut sent = cg
            .signal_all_frozen(rustix::process::Signal::TERM, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            sent.report().delivered,
            1,
            "round {round}: {:?}",
            sent.report()
        );
        assert_eq!(
            sent.blocked(),
            1,
            "round {round}: the blocked parent is tracked"
        );
        let w = cg.watch().unwrap();
        let empty = cg
            .wait_signalled(&w, &mut sent, Duration::from_secs(10))
            .await
            .unwrap();
        let left = cg.procs_recursive().unwrap();
        let comms: Vec<String> = left
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .collect();
        cg.kill(&KillOptions::default()).await.unwrap();
        let parent = reap(child, Duration::from_secs(5));
        cg.remove(&RemoveOptions::default()).await.unwrap();
        assert!(
            empty,
            "round {round}: the child forked after the thaw never got SIGTERM: {left:?} {comms:?}"
        );
        let rep = sent.report();
        assert_eq!(rep.delivered, 2, "round {round}: parent and child: {rep:?}");
        assert!(rep.follow_ups >= 1, "round {round}: {rep:?}");
        assert_eq!(parent.signal(), Some(libc::SIGTERM), "round {round}");
    }
}
