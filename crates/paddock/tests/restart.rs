//! Restart policies end to end through the real binary: `paddock run -d --restart
//! on-failure:N` restarts a failing payload N times as new lifecycles of the same ID; a
//! restart pending when the daemon is SIGKILLed is made by the restarted daemon; a
//! foreground run refuses `--restart`, and a bad value is refused before anything starts.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::spec as spec_bytes;
use common::*;
use serde_json::json;

/// The current lifecycle of `id` once it is restart number `count` and stopped.
fn stopped_restart(w: &World, id: &str, count: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = wait_for_opt(Duration::from_secs(30), || {
        let v = w.http("GET", &format!("/v1/sandboxes/{id}"), None).json();
        let done = v["restart_count"] == count && v["state"] == "stopped";
        last = v.clone();
        done.then_some(v)
    });
    found.unwrap_or_else(|| panic!("restart {count} of {id} did not stop in time: {last}"))
}

/// Polls `f` every 20 ms until it answers or `timeout` passes.
fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restarts_through_the_cli_and_across_a_daemon_crash() {
    let Some(w) = world("restarts_through_the_cli_and_across_a_daemon_crash") else {
        return;
    };
    let mut d = w.daemon(&[]);
    let out = w.cli_ok(&[
        "run",
        "-d",
        "--name",
        "rs-d",
        "--restart",
        "on-failure:2",
        "--",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert!(out.contains("rs-d"), "{out}");
    let v = stopped_restart(&w, "rs-d", 2);
    assert_eq!(v["main_exit"]["code"], 4, "{v}");
    assert!(v["restart_pending"].is_null(), "the limit is reached: {v}");
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, "paddock_sandbox_restarts_total"),
        Some(2.0),
        "{m}"
    );

    // A restart waiting for its backoff when the daemon dies is made by the next daemon.
    let spec = serde_json::to_vec(&json!({
        "id": "rs-e", "command": "/bin/sh", "args": ["-c", "exit 0"],
        "restart": {"mode": "always", "max_restarts": 1,
                    "initial_backoff_ms": 3000, "max_backoff_ms": 3000}
    }))
    .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&spec));
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json()["lifecycle"].as_str().unwrap().to_owned();
    let pending = wait_for(Duration::from_secs(10), "a pending restart", || {
        let v = w.http("GET", "/v1/sandboxes/rs-e", None).json();
        (!v["restart_pending"].is_null()).then_some(v)
    });
    assert_eq!(pending["restart_pending"]["attempt"], 1, "{pending}");
    // A barrier: the store commits in the order writes were queued, so once this start
    // has returned (it waits for its own record), the stopped record above is on disk.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec_bytes("barrier", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    d.sigkill();
    let _d2 = w.daemon(&[]);
    let v = stopped_restart(&w, "rs-e", 1);
    assert_ne!(v["lifecycle"].as_str().unwrap(), first, "{v}");
    let r = w.http("POST", "/v1/sandboxes/barrier/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    w.assert_no_leaks();
}

#[test]
fn a_foreground_run_refuses_restart_and_bad_values() {
    let Some(w) = world("a_foreground_run_refuses_restart_and_bad_values") else {
        return;
    };
    for (value, detach, needle) in [
        ("always", false, "needs -d"),
        (
            "sometimes",
            true,
            "expected never, on-failure[:N] or always",
        ),
        ("on-failure:x", true, "must be a number"),
    ] {
        let mut c = Command::new(BIN);
        c.arg("run").arg("--cgroup-root").arg(&w.cgroot);
        if detach {
            c.arg("-d").env("PADDOCK_SOCKET", &w.socket);
        }
        let out = c
            .args(["--restart", value, "--", "true"])
            .env_remove("PADDOCK_CGROUP_ROOT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{value}: {err}");
        assert!(err.contains(needle), "{value}: {err}");
    }
    w.assert_no_leaks();
}
