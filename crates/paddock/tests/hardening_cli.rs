//! The CLI against hostile data and a hung daemon (issue 13, items 4, 6 and 9): `ps` over
//! multi-byte and control characters, the request deadline, clap's errors as JSON.

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One create of a sandbox whose command line would break a terminal or `ps`: a
/// multi-byte character across byte 37 (where `ps` cut, panicking), ESC and CSI
/// sequences that clear the screen and set the window title, a C1 CSI, a bidi override.
/// `ps` prints it, escaped; `inspect` prints the same JSON with the characters as `\u`
/// escapes.
#[test]
fn ps_survives_multibyte_and_control_characters() {
    let Some(w) = world("hardening_cli_ps_survives_multibyte_and_control_characters") else {
        return;
    };
    let _d = w.daemon(&[]);
    let evil = format!(
        "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\u{202e}gnp.exe {}é{}",
        "a".repeat(25),
        "ü".repeat(10)
    );
    let b = serde_json::to_vec(&json!({
        "id": "evil", "command": "/bin/sh", "args": ["-c", "exec sleep 300", evil]
    }))
    .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&b));
    assert_eq!(r.status, 201, "{}", r.text());
    // A second, whose multi-byte character sits exactly across the cut.
    let b = serde_json::to_vec(&json!({
        "id": "cut", "command": "/bin/sh", "args": ["-c", "exec sleep 300", "é".repeat(30)]
    }))
    .unwrap();
    assert_eq!(w.http("POST", "/v1/sandboxes", Some(&b)).status, 201);

    let dangerous = |s: &str| {
        s.chars()
            .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
    };
    let ps = w.cli_ok(&["ps"]);
    assert!(!dangerous(&ps), "{ps:?}");
    assert_eq!(ps.lines().count(), 3, "{ps}");
    assert!(ps.contains("\\u{1b}"), "{ps}");
    for args in [&["inspect", "evil"][..], &["ps", "--json"]] {
        let out = w.cli_ok(args);
        assert!(!dangerous(&out), "{args:?}: {out:?}");
        // The same JSON: the characters are there, as escapes.
        let v: Value = serde_json::from_str(&out).unwrap();
        let info = match v.as_array() {
            Some(list) => list.iter().find(|i| i["id"] == "evil").unwrap().clone(),
            None => v,
        };
        assert_eq!(info["spec"]["args"][2], json!(evil), "{args:?}");
    }
    let top = w.cli_ok(&["top", "--once"]);
    assert!(!dangerous(&top), "{top:?}");
    w.cli_ok(&["kill", "evil"]);
    w.cli_ok(&["kill", "cut"]);
    w.assert_no_leaks();
}

/// A "daemon" that accepts connections and never answers: every connection is kept open
/// for the life of the test.
struct Silent {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    accepted: Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

fn silent_daemon() -> Silent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let l = UnixListener::bind(&socket).unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keep = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    Silent {
        _dir: dir,
        socket,
        accepted,
    }
}

fn paddock(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("PADDOCK_SOCKET", socket)
        .env_remove("PADDOCK_REQUEST_TIMEOUT")
        .envs(env.iter().copied());
    c
}

/// The client's deadline: against a daemon that accepts and never answers, every request
/// command fails after `--request-timeout` (or `PADDOCK_REQUEST_TIMEOUT`) with an error
/// naming the socket and the request; `wait` without `--timeout` has no deadline.
#[test]
fn client_requests_have_a_deadline() {
    let s = silent_daemon();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        (
            &["ps", "--request-timeout", "300ms"],
            &[],
            "GET /v1/sandboxes",
        ),
        (
            &["stats", "x"],
            &[("PADDOCK_REQUEST_TIMEOUT", "300ms")],
            "GET /v1/sandboxes/x/stats",
        ),
        (
            &["stop", "x", "--request-timeout", "300ms"],
            &[],
            "GET /v1/sandboxes/x",
        ),
        (
            &["rm", "x", "--request-timeout", "300ms"],
            &[],
            "DELETE /v1/sandboxes/x",
        ),
        (
            &["events", "--request-timeout", "300ms"],
            &[],
            "GET /v1/events",
        ),
        (
            &["logs", "x", "--request-timeout", "300ms"],
            &[],
            "GET /v1/sandboxes/x/logs",
        ),
        (
            &[
                "wait",
                "x",
                "--timeout",
                "200ms",
                "--request-timeout",
                "300ms",
            ],
            &[],
            "GET /v1/sandboxes/x/wait",
        ),
    ];
    for (args, env, req) in cases {
        let t0 = Instant::now();
        let o = output_within(paddock(&s.socket, args, env), Duration::from_secs(20));
        let took = t0.elapsed();
        assert_eq!(o.status.code(), Some(125), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("did not answer")
                && err.contains(req)
                && err.contains(&s.socket.display().to_string()),
            "{args:?}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    // With --json: the error as JSON.
    let o = output_within(
        paddock(
            &s.socket,
            &["ps", "--json", "--request-timeout", "300ms"],
            &[],
        ),
        Duration::from_secs(20),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("did not answer"),
        "{v}"
    );
    // `wait` without --timeout waits as long as it takes: still waiting well past the
    // request deadline.
    let mut child = paddock(&s.socket, &["wait", "x", "--request-timeout", "200ms"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(
            child.try_wait().unwrap().is_none(),
            "wait gave up although it has no deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(s.accepted.lock().unwrap().len() >= 8);
}

/// Command-line errors with `--json` are JSON on stdout too (exit code 2); without it,
/// clap's text only.
#[test]
fn usage_errors_are_json_with_json() {
    for args in [
        &["ps", "--bogus", "--json"][..],
        &["--json", "stop"],
        &["wait", "x", "--json", "--timeout"],
        &["ps", "--json", "--request-timeout", "soon"],
        &["--json"],
    ] {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {o:?}"));
        assert!(!v["error"].as_str().unwrap().is_empty(), "{args:?}: {v}");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
    let o = Command::new(BIN).args(["ps", "--bogus"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "{o:?}");
    // `--json` after `--` belongs to the command, not to paddock.
    let o = Command::new(BIN)
        .args(["run", "--bogus", "--", "echo", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "{o:?}");
}
