//! Each paddock instance owns exactly the cgroups it made: a `paddock run` beside a daemon
//! on one root is never reclaimed by it; a second daemon on a root refuses to start and
//! touches nothing; a killed run's sandbox (its guardian killed too) is cleaned by the next
//! run or daemon once the run is provably dead; other daemons' and legacy-tagged cgroups are
//! left alone; a recorded sandbox with the legacy tag is adopted and re-tagged.

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const OWNER_XATTR: &str = "user.paddock.owner";

fn set_tag(cg: &Path, v: &str) {
    let path = CString::new(cg.to_str().unwrap()).unwrap();
    let k = CString::new(OWNER_XATTR).unwrap();
    // SAFETY: valid C strings and buffer for the duration of the call.
    let rc = unsafe { libc::setxattr(path.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_tag(cg: &Path) -> Option<String> {
    let path = CString::new(cg.to_str().unwrap()).unwrap();
    let k = CString::new(OWNER_XATTR).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings; the buffer is writable for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            k.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// Starts a `sleep 300` in the cgroup at `cg` (reaped in a thread once killed).
fn spawn_into(cg: &Path) -> i32 {
    let script = format!("echo $$ > {}/cgroup.procs && exec sleep 300", cg.display());
    let child = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for(
        Duration::from_secs(5),
        "the process to join its cgroup",
        || {
            paddock_testutil::procs_recursive(cg)
                .contains(&pid)
                .then_some(())
        },
    );
    std::thread::spawn(move || {
        let mut c = child;
        let _ = c.wait();
    });
    pid
}

/// Kills and removes a cgroup the test made itself.
fn remove_cgroup(cg: &Path) {
    paddock_testutil::destroy_tree(cg, Duration::from_secs(10)).unwrap();
}

/// `paddock run` on this world's root, in the foreground.
fn run_cmd(w: &World, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("run")
        .arg("--cgroup-root")
        .arg(&w.cgroot)
        .args(args)
        .env_remove("PADDOCK_CGROUP_ROOT")
        .stdin(Stdio::null());
    c
}

fn wait_child(c: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{what}: still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroups under the world's root whose name starts with `id@`.
fn cgroups_of(w: &World, id: &str) -> Vec<PathBuf> {
    w.cgroups()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{id}@")))
        .map(|n| w.cgroot.join(n))
        .collect()
}

fn reconcile_runs(w: &World) -> f64 {
    metric(
        &w.http("GET", "/metrics", None).text(),
        "paddock_reconcile_runs_total",
    )
    .unwrap()
}

/// A `paddock run` beside a daemon on the same root: the daemon's reconciliations (every
/// second here) never reclaim it, and it ends normally.
#[test]
fn a_run_beside_a_daemon_is_left_alone() {
    let Some(w) = world("ownership_run_beside_daemon") else {
        return;
    };
    let d = w.daemon(&["--reconcile-interval", "1"]);
    let ready = w.tmp.path().join("ready");
    let script = format!("echo $$ > {}; exec sleep 300", ready.display());
    let mut run = run_cmd(&w, &["--name", "beside", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let main_pid: i32 = wait_for(Duration::from_secs(20), "the run's payload", || {
        std::fs::read_to_string(&ready).ok()?.trim().parse().ok()
    });
    let cg = cgroups_of(&w, "beside");
    assert_eq!(cg.len(), 1, "{cg:?}");
    let runs0 = reconcile_runs(&w);
    wait_for(
        Duration::from_secs(20),
        "two reconciliations of the daemon",
        || (reconcile_runs(&w) >= runs0 + 2.0).then_some(()),
    );
    assert!(
        paddock_testutil::pid_alive(main_pid),
        "the daemon killed the run's payload; daemon log:\n{}",
        d.log_text()
    );
    assert!(cg[0].exists(), "the daemon removed the run's cgroup");
    assert!(
        !d.log_text().contains("reclaimed"),
        "daemon log:\n{}",
        d.log_text()
    );
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    let st = wait_child(&mut run, Duration::from_secs(20), "paddock run");
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(143), "stderr: {err}");
    w.assert_no_leaks();
}

/// A second daemon on a managed root that a daemon runs on (another state directory,
/// another socket or the same one) refuses to start before it reconciles anything: the
/// first daemon's sandbox lives on, untouched.
#[test]
fn a_second_daemon_on_the_same_root_refuses_and_touches_nothing() {
    let Some(w) = world("ownership_second_daemon") else {
        return;
    };
    let d1 = w.daemon(&[]);
    assert_eq!(
        w.http(
            "POST",
            "/v1/sandboxes",
            Some(&spec("keep", "exec sleep 300"))
        )
        .status,
        201
    );
    let keep = w.http("GET", "/v1/sandboxes/keep", None).json();
    let keep_pid = keep["pid"].as_i64().unwrap() as i32;
    let keep_cg = cgroups_of(&w, "keep");
    assert_eq!(keep_cg.len(), 1);
    let other_socket = w.tmp.path().join("second.sock");
    for (n, socket) in [(2, &other_socket), (3, &w.socket)] {
        let state = w.tmp.path().join(format!("state-{n}"));
        let log = w.tmp.path().join(format!("daemon-{n}.log"));
        let mut second = Command::new(BIN)
            .args(["serve", "--socket"])
            .arg(socket)
            .arg("--state-dir")
            .arg(&state)
            .arg("--cgroup-root")
            .arg(&w.cgroot)
            .env("PADDOCK_LOG", "info")
            .env_remove("PADDOCK_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // It must refuse at once; one still running after 10 s started beside the first.
        let st = wait_child(&mut second, Duration::from_secs(10), &format!("daemon {n}"));
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(!st.success(), "daemon {n} started beside the first: {err}");
        assert!(
            err.contains(&format!(
                "is locked by another paddock daemon (pid {})",
                d1.pid()
            )),
            "daemon {n}: {err}"
        );
        assert!(
            !err.contains("reconcile") && !err.contains("reclaim"),
            "daemon {n} reconciled: {err}"
        );
        assert!(
            !state.join("owner-id").exists(),
            "daemon {n} made an identity"
        );
    }
    assert!(!other_socket.exists(), "the refused daemon left a socket");
    assert!(
        paddock_testutil::pid_alive(keep_pid),
        "the sandbox was killed"
    );
    assert_eq!(cgroups_of(&w, "keep"), keep_cg);
    assert_eq!(
        w.http("GET", "/v1/sandboxes/keep", None).json()["state"],
        "running"
    );
    assert_eq!(w.http("POST", "/v1/sandboxes/keep/kill", None).status, 200);
    w.assert_no_leaks();
}

/// Starts a run whose payload leaves a setsid'd process, then SIGKILLs its guardian and then
/// the run: the sandbox is left behind, owned by a dead process. Returns its cgroup and the
/// payload's processes.
fn orphaned_sandbox(w: &World, id: &str) -> (PathBuf, Vec<i32>) {
    let ready = w.tmp.path().join(format!("{id}.ready"));
    let script = format!(
        "setsid sh -c 'sleep 300' & echo > {}; exec sleep 300",
        ready.display()
    );
    let mut run = run_cmd(w, &["--name", id, "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the run's payload", || {
        ready.exists().then_some(())
    });
    let run_pid = run.id() as i32;
    let guardian = wait_for(Duration::from_secs(5), "the run's guardian", || {
        let kids = std::fs::read_dir(format!("/proc/{run_pid}/task"))
            .ok()?
            .flatten()
            .flat_map(|t| {
                std::fs::read_to_string(t.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        kids.into_iter().find(|k| {
            std::fs::read_to_string(format!("/proc/{k}/comm"))
                .is_ok_and(|c| c.trim() == "paddock-guard")
        })
    });
    // The guardian first, so it cannot act on the run's death.
    // SAFETY: kill(2) of the run's child, which lives until the run reaps it.
    assert_eq!(unsafe { libc::kill(guardian, libc::SIGKILL) }, 0);
    wait_for(Duration::from_secs(5), "the guardian to die", || {
        (!paddock_testutil::pid_alive(guardian)).then_some(())
    });
    run.kill().unwrap();
    run.wait().unwrap();
    let cg = cgroups_of(w, id);
    assert_eq!(cg.len(), 1, "the sandbox is left: {cg:?}");
    let procs = paddock_testutil::procs_recursive(&cg[0]);
    assert_eq!(
        procs.len(),
        3,
        "sh, its setsid'd sleep and the main sleep: {procs:?}"
    );
    let tag = get_tag(&cg[0]).unwrap();
    assert!(
        tag.starts_with(&format!("pid:{run_pid}:")),
        "owned by the dead run: {tag}"
    );
    (cg[0].clone(), procs)
}

/// A run and its guardian killed together leave the sandbox; the next `paddock run` on the
/// root removes it (the owner is provably dead), with a WARN naming it. The same for a
/// daemon's start-up reconciliation, which counts it.
#[test]
fn a_dead_runs_sandbox_is_cleaned_by_the_next_run_or_daemon() {
    let Some(w) = world("ownership_dead_run") else {
        return;
    };
    let (cg, procs) = orphaned_sandbox(&w, "dead-1");
    let o = run_cmd(&w, &["--", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let name = cg.file_name().unwrap().to_str().unwrap();
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("owner is dead") && l.contains(name)),
        "a WARN names the reclaimed cgroup: {err}"
    );
    assert!(!cg.exists(), "{} is left", cg.display());
    for p in procs {
        assert!(!paddock_testutil::pid_alive(p), "{p} survived");
    }

    let (cg, procs) = orphaned_sandbox(&w, "dead-2");
    let d = w.daemon(&[]);
    assert!(!cg.exists(), "{} is left", cg.display());
    for p in procs {
        assert!(!paddock_testutil::pid_alive(p), "{p} survived");
    }
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_reconcile_reclaimed_dead_owner_total"),
        Some(1.0),
        "{m}"
    );
    let name = cg.file_name().unwrap().to_str().unwrap();
    assert!(
        d.log_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("owner is dead") && l.contains(name)),
        "{}",
        d.log_text()
    );
    w.assert_no_leaks();
}

/// Cgroups of another daemon (`daemon:` with another identity) and with the legacy tag
/// `paddock` but no record: a daemon and a run leave them alone (the daemon says so).
#[test]
fn other_daemons_and_legacy_cgroups_are_left_alone() {
    let Some(w) = world("ownership_foreign_left_alone") else {
        return;
    };
    std::fs::create_dir_all(&w.cgroot).unwrap();
    let other = w.cgroot.join("theirs@0000000000000001");
    let legacy = w.cgroot.join("old@0000000000000002");
    std::fs::create_dir(&other).unwrap();
    std::fs::create_dir(&legacy).unwrap();
    set_tag(&other, "daemon:0123456789abcdef0123456789abcdef");
    set_tag(&legacy, "paddock");
    let other_pid = spawn_into(&other);
    let legacy_pid = spawn_into(&legacy);
    let d = w.daemon(&["--reconcile-interval", "1"]);
    let runs0 = reconcile_runs(&w);
    let o = run_cmd(&w, &["--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("reclaim"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_for(Duration::from_secs(20), "a periodic reconciliation", || {
        (reconcile_runs(&w) > runs0).then_some(())
    });
    assert!(other.exists() && legacy.exists());
    assert!(paddock_testutil::pid_alive(other_pid) && paddock_testutil::pid_alive(legacy_pid));
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("another paddock daemon")
            && l.contains("theirs@0000000000000001")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("legacy owner tag")
            && l.contains("old@0000000000000002")),
        "{log}"
    );
    assert!(!log.contains("reclaimed"), "{log}");
    remove_cgroup(&other);
    remove_cgroup(&legacy);
    w.assert_no_leaks();
}

/// A sandbox recorded by this daemon whose cgroup has the legacy tag `paddock` (made by an
/// older paddock) is adopted after a restart, and re-tagged with the daemon's identity.
#[test]
fn a_recorded_sandbox_with_the_legacy_tag_is_adopted_and_retagged() {
    let Some(w) = world("ownership_legacy_adopted") else {
        return;
    };
    let mut d = w.daemon(&[]);
    assert_eq!(
        w.http(
            "POST",
            "/v1/sandboxes",
            Some(&spec("older", "exec sleep 300"))
        )
        .status,
        201
    );
    let pid = w.http("GET", "/v1/sandboxes/older", None).json()["pid"].clone();
    let cg = cgroups_of(&w, "older");
    assert_eq!(cg.len(), 1);
    let id = std::fs::read_to_string(w.state.join("owner-id")).unwrap();
    let own = format!("daemon:{}", id.trim());
    assert_eq!(get_tag(&cg[0]).as_deref(), Some(own.as_str()));
    d.sigkill();
    set_tag(&cg[0], "paddock");
    let _d = w.daemon(&[]);
    let now = w.http("GET", "/v1/sandboxes/older", None).json();
    assert_eq!(now["state"], "running", "{now}");
    assert_eq!(now["pid"], pid, "{now}");
    assert_eq!(get_tag(&cg[0]).as_deref(), Some(own.as_str()), "re-tagged");
    assert_eq!(w.http("POST", "/v1/sandboxes/older/kill", None).status, 200);
    w.assert_no_leaks();
}
