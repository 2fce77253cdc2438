//! Deadlines end to end through the real binary: `deadline_ms` in a spec stops the sandbox
//! (reason `deadline`), `POST /v1/sandboxes/{id}/deadline?extend=` and `paddock deadline`
//! move it, bad input is a 400 that changes nothing, a deadline survives a SIGKILL of the
//! daemon, and `paddock run --timeout` stops a foreground run gracefully.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn spec_with_deadline(id: &str, script: &str, deadline_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "command": "/bin/sh", "args": ["-c", script],
        "stop": { "grace_period_ms": 1000, "kill_timeout_ms": 5000 },
        "deadline_ms": deadline_ms
    }))
    .unwrap()
}

#[test]
fn deadlines_through_the_api_the_cli_and_a_daemon_crash() {
    let Some(w) = world("deadlines_through_the_api_the_cli_and_a_daemon_crash") else {
        return;
    };
    let mut d = w.daemon(&[]);
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with_deadline("dl-a", "exec sleep 300", 600_000)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json()["deadline_at_ms"].as_u64().expect("deadline shown");
    assert_eq!(r.json()["spec"]["deadline_ms"], 600_000);

    // Moved through the API and the CLI.
    let r = w.http("POST", "/v1/sandboxes/dl-a/deadline?extend=1m", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deadline_at_ms"].as_u64(), Some(first + 60_000));
    let out = w.cli_ok(&["deadline", "dl-a", "--extend", "1s"]);
    assert!(out.contains("deadline in"), "{out}");
    let now = w.http("GET", "/v1/sandboxes/dl-a", None).json()["deadline_at_ms"]
        .as_u64()
        .unwrap();
    assert_eq!(now, first + 61_000);

    // Bad input: a 400 naming the parameter, nothing changed.
    for (q, word) in [
        ("", "extend"),
        ("?extend=soon", "extend"),
        ("?extend=400d", "extend"),
        ("?extend=1s&x=1", "x"),
    ] {
        let r = w.http("POST", &format!("/v1/sandboxes/dl-a/deadline{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.error().contains(word), "{q}: {}", r.text());
    }
    assert_eq!(
        w.http("GET", "/v1/sandboxes/dl-a", None).json()["deadline_at_ms"].as_u64(),
        Some(now)
    );
    // Zero keeps it as it is.
    let r = w.http("POST", "/v1/sandboxes/dl-a/deadline?extend=0s", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deadline_at_ms"].as_u64(), Some(now));
    // Valid on its own, but past 365 days from now: a 422, nothing changed.
    let r = w.http("POST", "/v1/sandboxes/dl-a/deadline?extend=8760h", None);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.error().contains("365 days"), "{}", r.text());
    assert_eq!(
        w.http("GET", "/v1/sandboxes/dl-a", None).json()["deadline_at_ms"].as_u64(),
        Some(now)
    );
    let r = w.http("POST", "/v1/sandboxes/nope/deadline?extend=1s", None);
    assert_eq!(r.status, 404, "{}", r.text());

    // A short deadline: stopped with reason `deadline`; then extending is a 409.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with_deadline("dl-b", "exec sleep 300", 300)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w.http("GET", "/v1/sandboxes/dl-b/wait?timeout=10s", None);
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    assert_eq!(
        r.json()["stop_report"]["reason"],
        "deadline",
        "{}",
        r.text()
    );
    let r = w.http("POST", "/v1/sandboxes/dl-b/deadline?extend=1s", None);
    assert_eq!(r.status, 409, "{}", r.text());

    // The deadline is on record: a daemon killed before it passes, restarted after,
    // stops the sandbox by it (not before).
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_with_deadline("dl-c", "exec sleep 300", 1_500)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let at = r.json()["deadline_at_ms"].as_u64().unwrap();
    d.sigkill();
    let _d2 = w.daemon(&[]);
    let r = w.http("GET", "/v1/sandboxes/dl-c/wait?timeout=20s", None);
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    assert_eq!(
        r.json()["stop_report"]["reason"],
        "deadline",
        "{}",
        r.text()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now >= at, "stopped {} ms before its deadline", at - now);

    let r = w.http("POST", "/v1/sandboxes/dl-a/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    w.assert_no_leaks();
}

/// `paddock run --timeout`: the foreground sandbox is stopped gracefully when it passes
/// (SIGTERM: exit code 143), and nothing is left.
#[test]
fn run_timeout_stops_a_foreground_run() {
    let Some(w) = world("run_timeout_stops_a_foreground_run") else {
        return;
    };
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["run", "--cgroup-root"])
        .arg(&w.cgroot)
        .args(["--timeout", "300ms", "--", "sleep", "100"])
        .env_remove("PADDOCK_CGROUP_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let bad = Command::new(BIN)
        .args(["run", "--cgroup-root"])
        .arg(&w.cgroot)
        .args(["--timeout", "soon", "--", "true"])
        .env_remove("PADDOCK_CGROUP_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--timeout"));
    w.assert_no_leaks();
}
