//! The CLI as a client of a daemon on a temporary socket and state dir.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn cli_against_a_daemon() {
    let Some(w) = world("cli_against_a_daemon") else {
        return;
    };
    let _d = w.daemon(&[]);
    let id = w.cli_ok(&[
        "run",
        "-d",
        "--name",
        "job-1",
        "--stop-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "echo hello from $PADDOCK_SANDBOX_ID; exec sleep 300",
    ]);
    assert_eq!(id.trim(), "job-1");
    let ps = w.cli_ok(&["ps"]);
    assert!(ps.starts_with("ID "), "{ps}");
    assert!(
        ps.lines()
            .any(|l| l.starts_with("job-1 ") && l.contains("running")),
        "{ps}"
    );
    let js: Value = serde_json::from_str(&w.cli_ok(&["ps", "--json"])).unwrap();
    assert_eq!(js[0]["id"], "job-1");
    let insp: Value = serde_json::from_str(&w.cli_ok(&["inspect", "job-1"])).unwrap();
    assert_eq!(insp["state"], "running");
    let logs = wait_for(Duration::from_secs(5), "logs", || {
        let l = w.cli_ok(&["logs", "job-1"]);
        l.contains("hello from job-1").then_some(l)
    });
    assert_eq!(logs, "hello from job-1\n");
    assert!(w.cli_ok(&["stats", "job-1"]).contains("processes:"));
    let st: Value = serde_json::from_str(&w.cli_ok(&["stats", "job-1", "--json"])).unwrap();
    assert!(st["processes"].as_u64().unwrap() >= 1);
    let top = w.cli_ok(&["top", "--once"]);
    assert!(top.contains("CPU%") && top.contains("job-1"), "{top}");
    assert!(w.cli_ok(&["pause", "job-1"]).contains("paused"));
    assert!(w.cli_ok(&["ps"]).contains("(paused)"));
    assert!(w.cli_ok(&["resume", "job-1"]).contains("resumed"));

    // Errors are the daemon's message, with a non-zero exit.
    let o = w.cli(&["run", "-d", "--name", "job-1", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sandbox job-1 already exists"), "{err}");
    let o = w.cli(&["rm", "job-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stop it first"));
    let o = w.cli(&["inspect", "nope", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["status"], 404);

    // Events: follow in the background, stop, and see the stop.
    let sock = w.socket.clone();
    let ev = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .args(["events", "--id", "job-1", "--count", "2", "--json"])
            .env("PADDOCK_SOCKET", sock)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = w.cli_ok(&["stop", "job-1", "--timeout", "1s"]);
    assert!(out.contains("job-1: stopped in"), "{out}");
    let ev = ev.join().unwrap();
    let evs = String::from_utf8_lossy(&ev.stdout);
    let types: Vec<String> = evs
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types[0], "stopping", "{evs}");
    assert_eq!(w.cli_ok(&["rm", "job-1"]).trim(), "job-1");

    // rm -f kills a running one.
    w.cli_ok(&["run", "-d", "--name", "job-2", "--", "sleep", "300"]);
    let k: Value = serde_json::from_str(&w.cli_ok(&["kill", "job-2", "--json"])).unwrap();
    assert!(k["stuck"].as_array().unwrap().is_empty());
    w.cli_ok(&["run", "-d", "--name", "job-3", "--", "sleep", "300"]);
    w.cli_ok(&["rm", "-f", "job-3"]);
    w.cli_ok(&["rm", "job-2"]);

    // wait: the main process's exit code; 124 when the timeout passes first.
    w.cli_ok(&["run", "-d", "--name", "job-4", "--", "sh", "-c", "exit 3"]);
    let o = w.cli(&["wait", "job-4"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "job-4: exited with code 3\n"
    );
    w.cli_ok(&["rm", "job-4"]);
    w.cli_ok(&["run", "-d", "--name", "job-5", "--", "sleep", "300"]);
    let o = w.cli(&["wait", "job-5", "--timeout", "100ms"]);
    assert_eq!(o.status.code(), Some(124), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("job-5 is still running"));
    let o = w.cli(&["wait", "job-5", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--timeout \"soon\""));
    w.cli_ok(&["rm", "-f", "job-5"]);
    assert_eq!(w.cli_ok(&["ps", "--json"]).trim(), "[]");
    w.assert_no_leaks();
}

#[test]
fn no_daemon_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["ps"])
        .env("PADDOCK_SOCKET", tmp.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to the paddock daemon"));
    assert!(o.stdout.is_empty());
    // With --json the client-side error is an {"error": ...} object on stdout too.
    for args in [
        &["ps", "--json"][..],
        &["stop", "x", "--json"],
        &["logs", "x", "--json"],
    ] {
        let o = std::process::Command::new(BIN)
            .args(args)
            .env("PADDOCK_SOCKET", tmp.path().join("none.sock"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let e: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {o:?}"));
        let msg = e["error"].as_str().unwrap();
        assert!(
            msg.contains("cannot connect to the paddock daemon"),
            "{msg}"
        );
        assert_eq!(e.as_object().unwrap().len(), 1, "{e}");
    }
}

/// `--json` on every client command: machine-readable output, asserted field by field.
#[test]
fn json_output_of_every_command() {
    let Some(w) = world("cli_json_output_of_every_command") else {
        return;
    };
    let _d = w.daemon(&[]);
    let json = |args: &[&str]| -> Value {
        let out = w.cli_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    };
    let created = json(&[
        "run",
        "-d",
        "--json",
        "--name",
        "js-1",
        "--stop-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "echo hi; exec sleep 300",
    ]);
    assert_eq!(created["id"], "js-1", "{created}");
    assert_eq!(created["state"], "running", "{created}");
    let lc = created["lifecycle"].as_str().unwrap().to_owned();
    assert!(created["pid"].as_i64().unwrap() > 0, "{created}");

    let logs = wait_for(Duration::from_secs(5), "log output", || {
        let v = json(&["logs", "js-1", "--json"]);
        (v["log"] == "hi\n").then_some(v)
    });
    assert_eq!(logs["id"], "js-1", "{logs}");
    assert_eq!(logs["lifecycle"], lc.as_str(), "{logs}");
    assert_eq!(logs.as_object().unwrap().len(), 3, "{logs}");
    let logs = json(&["logs", "js-1", "--lifecycle", &lc, "--json"]);
    assert_eq!(logs["lifecycle"], lc.as_str(), "{logs}");

    let p = json(&["pause", "js-1", "--json"]);
    assert_eq!(p["id"], "js-1", "{p}");
    assert_eq!(p["paused"], true, "{p}");
    let r = json(&["resume", "js-1", "--json"]);
    assert_eq!(r["paused"], false, "{r}");
    assert_eq!(r["state"], "running", "{r}");

    let o = w.cli(&["wait", "js-1", "--timeout", "100ms", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(124),
        "still running after the timeout"
    );
    let t: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["state"], "running", "{t}");
    let stop = json(&["stop", "js-1", "--timeout", "1s", "--json"]);
    assert_eq!(stop["reason"], "requested", "{stop}");
    assert!(stop["stuck"].as_array().unwrap().is_empty(), "{stop}");
    assert!(stop["total_ms"].as_f64().unwrap() > 0.0, "{stop}");
    let o = w.cli(&["wait", "js-1", "--json"]);
    assert_eq!(o.status.code(), Some(143), "128 + SIGTERM");
    let done: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["state"], "stopped", "{done}");
    assert_eq!(done["main_exit"]["signal"], 15, "{done}");
    assert_eq!(done["lifecycle"], lc.as_str(), "{done}");
    let rm = json(&["rm", "js-1", "--json"]);
    assert_eq!(rm, serde_json::json!({ "deleted": "js-1" }));

    // A daemon error with --json: {"error", "status"} and exit 1.
    let o = w.cli(&["pause", "js-1", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["status"], 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("js-1"), "{e}");
    assert_eq!(json(&["ps", "--json"]), serde_json::json!([]));
    w.assert_no_leaks();
}

#[test]
fn completions_and_help() {
    let o = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("paddock"));
    let o = std::process::Command::new(BIN)
        .args(["--help"])
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        h.contains("Examples:") && h.contains("serve") && h.contains("top"),
        "{h}"
    );
    // Every subcommand listed in the help has examples in its own --help.
    let commands: Vec<&str> = h
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for c in [
        "run",
        "serve",
        "ps",
        "inspect",
        "stop",
        "kill",
        "wait",
        "pause",
        "resume",
        "rm",
        "stats",
        "events",
        "logs",
        "top",
        "completions",
    ] {
        assert!(commands.contains(&c), "{c} not listed: {commands:?}\n{h}");
    }
    for c in &commands {
        let o = std::process::Command::new(BIN)
            .args([c, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{c} --help");
        let help = String::from_utf8_lossy(&o.stdout);
        let ex = help
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("`paddock {c} --help` has no Examples: section:\n{help}"))
            .1;
        let first = ex.lines().next().unwrap_or_default();
        assert!(
            first.trim_start().starts_with("paddock "),
            "`paddock {c} --help`: examples are commands, kept verbatim: {first:?}\n{help}"
        );
    }
}
