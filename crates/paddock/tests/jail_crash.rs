//! Jailed sandboxes survive a crash of the daemon: SIGKILL it with a jailed sandbox running
//! (a dynamic user, pid, mount, ipc and uts namespaces with an init, the default seccomp
//! profile); the next daemon adopts it — same lifecycle, same pid, same dynamic uid, still
//! jailed — stops it gracefully, and leaves nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn uid_of(pid: i64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned()
}

#[test]
fn a_jailed_sandbox_is_adopted_after_a_crash() {
    let Some(w) = world("jail_crash_adopted") else {
        return;
    };
    let range = ["--uid-range", "320000-320009"];
    let mut d1 = w.daemon(&range);
    let body = serde_json::to_vec(&json!({
        "id": "jailed",
        "command": "/bin/sh",
        "args": ["-c", "trap 'exit 0' TERM; sleep 300 & wait"],
        "stop": {"grace_period_ms": 5000},
        "jail": {
            "user": {"dynamic": true},
            "namespaces": ["pid", "mount", "ipc", "uts"],
            "seccomp": "default"
        }
    }))
    .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    let before = r.json();
    let pid = before["pid"].as_i64().unwrap();
    let uid = before["jail"]["dynamic_uid"].as_u64().unwrap();
    assert!((320_000..=320_009).contains(&uid), "{before}");
    // The main process is the init (uid 0 of the jail's own making is not asked for: it
    // runs as the dynamic user too); the payload below it runs as the dynamic uid.
    let cg = w
        .cgroot
        .join(format!("jailed@{}", before["lifecycle"].as_str().unwrap()));
    let procs = wait_for(Duration::from_secs(5), "the payload's processes", || {
        let p = paddock_testutil::procs_recursive(&cg);
        (p.len() >= 3).then_some(p)
    });
    for p in &procs {
        assert_eq!(uid_of(i64::from(*p)), uid.to_string(), "pid {p}");
    }

    d1.sigkill();
    for p in &procs {
        assert!(
            paddock_testutil::pid_alive(*p),
            "the sandbox outlives the crash"
        );
    }

    let _d2 = w.daemon(&range);
    let now: Value = w.http("GET", "/v1/sandboxes/jailed", None).json();
    assert_eq!(now["state"], "running", "{now}");
    assert_eq!(now["lifecycle"], before["lifecycle"]);
    assert_eq!(now["pid"], before["pid"]);
    assert_eq!(
        now["jail"]["dynamic_uid"], before["jail"]["dynamic_uid"],
        "{now}"
    );
    assert_eq!(uid_of(pid), uid.to_string());

    // A new jailed sandbox gets another uid while the adopted one holds its own.
    let other = serde_json::to_vec(&json!({
        "id": "other", "command": "/bin/sh", "args": ["-c", "exec sleep 300"],
        "jail": {"user": {"dynamic": true}, "seccomp": "default"}
    }))
    .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&other));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json()["jail"]["dynamic_uid"].as_u64(), Some(uid));
    assert_eq!(w.http("POST", "/v1/sandboxes/other/kill", None).status, 200);

    let stop = w.http("POST", "/v1/sandboxes/jailed/stop", None);
    assert_eq!(stop.status, 200, "{}", stop.text());
    let report = stop.json();
    assert_eq!(report["killed_after_grace"], 0, "{report}");
    assert!(report["stuck"].as_array().unwrap().is_empty(), "{report}");
    w.assert_no_leaks();
}
