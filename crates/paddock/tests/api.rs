//! The daemon's HTTP API end to end: a real daemon, a real HTTP client (hyper's) over its
//! unix socket and over TCP with a bearer token; a raw one for input hyper would not send.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn lifecycle_over_the_unix_socket() {
    let Some(w) = world("api_lifecycle_over_the_unix_socket") else {
        return;
    };
    let d = w.daemon(&[]);
    let mode = std::fs::metadata(&w.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    assert_eq!(w.hyper("GET", "/healthz", None).status, 200);

    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("web-1", "echo out; echo err >&2; exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    assert_eq!(info["state"], "running");
    let lc = info["lifecycle"].as_str().unwrap().to_owned();
    assert_eq!(w.cgroups(), vec![format!("web-1@{lc}")]);

    let list = w.hyper("GET", "/v1/sandboxes", None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        w.hyper("GET", "/v1/sandboxes/web-1", None).json()["lifecycle"],
        lc.as_str()
    );
    assert_eq!(
        w.hyper("GET", &format!("/v1/sandboxes/web-1?lifecycle={lc}"), None)
            .status,
        200
    );
    let st = w.hyper("GET", "/v1/sandboxes/web-1/stats", None);
    assert_eq!(st.status, 200, "{}", st.text());
    assert!(st.json()["processes"].as_u64().unwrap() >= 1);

    let logs = wait_for(Duration::from_secs(5), "log output", || {
        let t = w.hyper("GET", "/v1/sandboxes/web-1/logs", None).text();
        (t.contains("out") && t.contains("err")).then_some(t)
    });
    assert!(logs.contains("out\n"), "{logs}");

    let p = w.hyper("POST", "/v1/sandboxes/web-1/pause", None);
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(p.json()["paused"], true);
    assert_eq!(
        w.hyper("POST", "/v1/sandboxes/web-1/resume", None).json()["paused"],
        false
    );

    // Delete of a live sandbox is refused.
    let del = w.hyper("DELETE", "/v1/sandboxes/web-1", None);
    assert_eq!(del.status, 409, "{}", del.text());

    let stop = w.hyper("POST", "/v1/sandboxes/web-1/stop?timeout=2s", None);
    assert_eq!(stop.status, 200, "{}", stop.text());
    assert!(stop.json()["stuck"].as_array().unwrap().is_empty());
    assert_eq!(
        w.hyper("GET", "/v1/sandboxes/web-1", None).json()["state"],
        "stopped"
    );
    assert_eq!(w.hyper("DELETE", "/v1/sandboxes/web-1", None).status, 204);
    // The log file is gone: emptied and kept as a spare, which the next log is made from.
    let logs = w.state.join("logs");
    let log_files = || -> Vec<String> {
        std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect()
    };
    assert!(log_files().is_empty(), "{:?}", log_files());
    let spare: Vec<_> = std::fs::read_dir(logs.join(".spare")).unwrap().collect();
    assert_eq!(spare.len(), 1);
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("web-2", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(std::fs::read_dir(logs.join(".spare")).unwrap().count(), 0);
    assert_eq!(
        w.hyper("GET", "/v1/sandboxes/web-2/logs", None).text(),
        "",
        "a recycled log must start empty"
    );
    assert_eq!(
        w.hyper("POST", "/v1/sandboxes/web-2/kill", None).status,
        200
    );
    assert_eq!(w.hyper("DELETE", "/v1/sandboxes/web-2", None).status, 204);
    // A start that fails deletes the log file it made.
    let bad =
        serde_json::to_vec(&serde_json::json!({"id": "web-3", "command": "/nonexistent"})).unwrap();
    let r = w.hyper("POST", "/v1/sandboxes", Some(&bad));
    assert!(r.status >= 400, "{}", r.text());
    assert!(log_files().is_empty(), "{:?}", log_files());
    let gone = w.hyper("GET", "/v1/sandboxes/web-1", None);
    assert_eq!(gone.status, 404);
    assert!(gone.error().contains("web-1"), "{}", gone.text());

    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("web-4", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let web4_old = r.json()["lifecycle"].as_str().unwrap().to_owned();
    assert_eq!(
        w.hyper("POST", "/v1/sandboxes/web-4/kill", None).status,
        200
    );
    // A stale handle cannot delete a newer lifecycle of the same ID: restart web-4, then
    // DELETE naming the old lifecycle is a 404 and the new one stays.
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("web-4", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let web4_new = r.json()["lifecycle"].as_str().unwrap().to_owned();
    let del = w.hyper(
        "DELETE",
        &format!("/v1/sandboxes/web-4?lifecycle={web4_old}"),
        None,
    );
    assert_eq!(del.status, 404, "{}", del.text());
    let cur = w.hyper("GET", "/v1/sandboxes/web-4", None).json();
    assert_eq!(cur["lifecycle"], web4_new.as_str());
    assert_eq!(cur["state"], "running");
    assert_eq!(
        w.hyper(
            "POST",
            &format!("/v1/sandboxes/web-4/kill?lifecycle={web4_new}"),
            None
        )
        .status,
        200
    );
    assert_eq!(
        w.hyper(
            "DELETE",
            &format!("/v1/sandboxes/web-4?lifecycle={web4_new}"),
            None
        )
        .status,
        204
    );

    let doc = w.hyper("GET", "/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.1.0");
    w.assert_no_leaks();
    // Every line logged for a lifecycle names it once: no span nested in a copy of itself.
    let log = d.log_text();
    assert!(log.contains("sandbox{sandbox=web-1"), "{log}");
    for line in log.lines() {
        assert!(
            line.matches("sandbox{").count() <= 1,
            "a line repeats its sandbox span: {line}"
        );
    }
    drop(d);
}

/// `GET …/wait` returns once the lifecycle has ended (also when that was before the
/// request), or at its timeout with the sandbox still live; bad input is a 400, an unknown
/// ID a 404.
#[test]
fn wait_returns_when_the_lifecycle_ends() {
    let Some(w) = world("api_wait_returns_when_the_lifecycle_ends") else {
        return;
    };
    let d = w.daemon(&[]);
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("wt-1", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let lc = r.json()["lifecycle"].as_str().unwrap().to_owned();

    let t0 = Instant::now();
    let r = w.http("GET", "/v1/sandboxes/wt-1/wait?timeout=200ms", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "running");
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );

    let r = w.http("GET", "/v1/sandboxes/wt-1/wait?timeout=soon", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("timeout"), "{}", r.text());
    assert_eq!(w.http("GET", "/v1/sandboxes/nope/wait", None).status, 404);

    // A waiter without a timeout sees the stop through.
    let sock = w.socket.clone();
    let path = format!("/v1/sandboxes/wt-1/wait?lifecycle={lc}");
    let waiter = std::thread::spawn(move || http_unix(&sock, "GET", &path, None, &[]));
    let stop = w.http("POST", "/v1/sandboxes/wt-1/stop?timeout=2s", None);
    assert_eq!(stop.status, 200, "{}", stop.text());
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let info = r.json();
    assert_eq!(info["state"], "stopped", "{info}");
    assert_eq!(info["lifecycle"], lc.as_str());
    assert_eq!(info["main_exit"]["signal"], 15, "{info}");
    assert!(info["stop_report"].is_object(), "{info}");
    assert_eq!(w.http("DELETE", "/v1/sandboxes/wt-1", None).status, 204);

    // Ended before the request: answered at once, with the exit code.
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("wt-2", "exit 7")));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w.http("GET", "/v1/sandboxes/wt-2/wait?timeout=10s", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    assert_eq!(r.json()["main_exit"]["code"], 7, "{}", r.text());
    assert_eq!(w.http("DELETE", "/v1/sandboxes/wt-2", None).status, 204);
    w.assert_no_leaks();
    drop(d);
}

#[test]
fn events_are_server_sent() {
    let Some(w) = world("api_events_are_server_sent") else {
        return;
    };
    let _d = w.daemon(&[]);
    let sock = w.socket.clone();
    let reader = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /v1/events?id=ev-1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut lines = Vec::new();
        for l in BufReader::new(s).lines() {
            let l = l.unwrap();
            let done = l.starts_with("event: stopped");
            lines.push(l);
            if done {
                break;
            }
        }
        lines
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("ev-other", "exit 0")))
            .status,
        201
    );
    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("ev-1", "sleep 300")))
            .status,
        201
    );
    assert_eq!(w.http("POST", "/v1/sandboxes/ev-1/kill", None).status, 200);
    let lines = reader.join().unwrap();
    let text = lines.join("\n");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    for ev in ["event: started", "event: stopping", "event: stopped"] {
        assert!(text.contains(ev), "missing {ev}:\n{text}");
    }
    assert!(!text.contains("ev-other"), "filter by id:\n{text}");
}

#[test]
fn bad_input_is_400_and_changes_nothing() {
    let Some(w) = world("api_bad_input_is_400_and_changes_nothing") else {
        return;
    };
    let _d = w.daemon(&[]);
    let big = {
        let mut v = br#"{"id":"big","command":"/bin/true","args":[""#.to_vec();
        v.extend(std::iter::repeat_n(b'a', 70 * 1024));
        v.extend(br#""]}"#);
        v
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed JSON"),
        (b"".to_vec(), "malformed JSON"),
        (b"[]".to_vec(), "JSON object"),
        (
            br#"{"id":"a","command":"/bin/true","surprise":1}"#.to_vec(),
            "unknown field `surprise`",
        ),
        (
            br#"{"id":"a","command":"/bin/true","limits":{"memroy_max":1}}"#.to_vec(),
            "unknown field `memroy_max`",
        ),
        (br#"{"command":"/bin/true"}"#.to_vec(), "missing field `id`"),
        (
            br#"{"id":"../etc","command":"/bin/true"}"#.to_vec(),
            "sandbox ID",
        ),
        (
            br#"{"id":"cgroup.procs","command":"/bin/true"}"#.to_vec(),
            "sandbox ID",
        ),
        (
            format!(r#"{{"id":"{}","command":"/bin/true"}}"#, "x".repeat(200)).into_bytes(),
            "at most 128",
        ),
        (br#"{"id":"a","command":""}"#.to_vec(), "command is empty"),
        (
            br#"{"id":"a","command":"/bin/true","limits":{"cpus":-1}}"#.to_vec(),
            "cpus",
        ),
        (
            br#"{"id":"a","command":"/bin/true","limits":{"memory_max":"lots"}}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"id":"a","command":"/bin/true","stop":{"signal":99}}"#.to_vec(),
            "stop signal 99",
        ),
        (
            br#"{"id":"a","command":"/bin/true","start":false}"#.to_vec(),
            "start",
        ),
        (
            br#"{"id":"a","command":"/bin/true","start":"yes"}"#.to_vec(),
            "must be a boolean",
        ),
        (
            br#"{"id":"a","command":"/bin/true","stdio":{"stdout":"pipe"}}"#.to_vec(),
            "stdio.stdout",
        ),
        (big, "larger than 65536 bytes"),
    ];
    for (body, want) in &cases {
        let r = w.http("POST", "/v1/sandboxes", Some(body));
        assert_eq!(r.status, 400, "{want}: {}", r.text());
        assert!(r.error().contains(want), "want {want:?} in {:?}", r.error());
    }
    for (method, path, want) in [
        ("GET", "/v1/sandboxes/a%2Fb", "sandbox ID"),
        ("GET", "/v1/sandboxes/..", "sandbox ID"),
        ("GET", "/v1/sandboxes/x?lifecycle=zz", "lifecycle"),
        ("GET", "/v1/sandboxes/x?bogus=1", "unknown field"),
        ("POST", "/v1/sandboxes/x/stop?timeout=forever", "timeout"),
        ("POST", "/v1/sandboxes/x/stop?timeout=-1s", "timeout"),
        ("GET", "/v1/events?id=a%2Fb", "sandbox ID"),
    ] {
        let r = w.http(method, path, None);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.error().contains(want),
            "{path}: want {want:?} in {:?}",
            r.error()
        );
    }
    // Unknown program: 422, nothing left behind.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(br#"{"id":"nosuch","command":"/nonexistent/prog"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.error().contains("/nonexistent/prog"), "{}", r.error());
    assert_eq!(w.http("GET", "/v1/sandboxes/nope", None).status, 404);
    assert_eq!(w.http("GET", "/v1/nope", None).status, 404);
    // Nothing changed.
    assert_eq!(
        w.http("GET", "/v1/sandboxes", None).json(),
        serde_json::json!([])
    );
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
}

#[test]
fn duplicate_is_409_and_limits_are_429() {
    let Some(w) = world("api_duplicate_is_409_and_limits_are_429") else {
        return;
    };
    let d = w.daemon(&["--max-sandboxes", "2"]);
    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("dup", "sleep 300")))
            .status,
        201
    );
    let pid = w.http("GET", "/v1/sandboxes/dup", None).json()["pid"]
        .as_i64()
        .unwrap();
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("dup", "sleep 300")));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("already exists"), "{}", r.error());
    assert_eq!(w.cgroups().len(), 1, "a duplicate starts nothing");
    assert_eq!(
        w.http("GET", "/v1/sandboxes/dup", None).json()["pid"]
            .as_i64()
            .unwrap(),
        pid
    );

    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("two", "sleep 300")))
            .status,
        201
    );
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("three", "sleep 300")));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("max-sandboxes"), "{}", r.error());
    assert_eq!(w.cgroups().len(), 2);
    let m = w.http("GET", "/metrics", None).text();
    assert_eq!(
        metric(
            &m,
            r#"paddock_admission_rejected_total{limit="max_sandboxes"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_starts_total{result="conflict"}"#),
        Some(1.0),
        "{m}"
    );
    drop(d);
    // --max-starting 0 refuses every start (drain mode), naming the limit.
    let _d = w.daemon(&["--max-starting", "0"]);
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("four", "sleep 300")));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("max-starting"), "{}", r.error());
    // The adopted sandboxes are still controllable.
    assert_eq!(w.http("POST", "/v1/sandboxes/dup/kill", None).status, 200);
    assert_eq!(w.http("POST", "/v1/sandboxes/two/kill", None).status, 200);
    // A kill has no grace period: what it ends is counted apart from the processes that
    // outlived a grace period (the metric the leak alert watches).
    let m = w.http("GET", "/metrics", None).text();
    assert!(
        metric(&m, "paddock_processes_killed_without_grace_total").unwrap() >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "paddock_processes_killed_after_grace_total"),
        Some(0.0),
        "{m}"
    );
    w.assert_no_leaks();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_requires_the_bearer_token() {
    let Some(w) = world("api_tcp_requires_the_bearer_token") else {
        return;
    };
    std::fs::create_dir_all(w.tmp.path()).unwrap();
    let tok = w.tmp.path().join("token");
    std::fs::write(&tok, "s3cret-token-0123456789\n").unwrap();
    // World-readable token file: refuse to start.
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let o = std::process::Command::new(BIN)
        .args(w.serve_args())
        .args(["--listen", &addr, "--token-file", tok.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("must not be readable") && err.contains("644"),
        "{err}"
    );
    assert!(!w.socket.exists());

    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _d = w.daemon(&["--listen", &addr, "--token-file", tok.to_str().unwrap()]);
    let r = hyper_request(Endpoint::Tcp(&addr), "GET", "/v1/sandboxes", None, &[]);
    assert_eq!(r.status, 401);
    assert!(r.error().contains("token"));
    let r = hyper_request(
        Endpoint::Tcp(&addr),
        "GET",
        "/v1/sandboxes",
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(r.status, 401);
    let r = hyper_request(
        Endpoint::Tcp(&addr),
        "GET",
        "/metrics",
        None,
        &[("Authorization", "Bearer s3cret-token-012345678")],
    );
    assert_eq!(r.status, 401, "a prefix of the token is wrong");
    let r = hyper_request(
        Endpoint::Tcp(&addr),
        "POST",
        "/v1/sandboxes",
        Some(&spec("t1", "sleep 1")),
        &[],
    );
    assert_eq!(r.status, 401);
    assert!(w.cgroups().is_empty());
    let ok = [("Authorization", "Bearer s3cret-token-0123456789")];
    assert_eq!(
        hyper_request(Endpoint::Tcp(&addr), "GET", "/v1/sandboxes", None, &ok).status,
        200
    );
    assert_eq!(
        hyper_request(Endpoint::Tcp(&addr), "GET", "/metrics", None, &ok).status,
        200
    );
    // The unix socket needs no token.
    assert_eq!(w.hyper("GET", "/v1/sandboxes", None).status, 200);
}

#[test]
fn one_daemon_per_state_dir_and_graceful_shutdown() {
    let Some(w) = world("api_one_daemon_per_state_dir_and_graceful_shutdown") else {
        return;
    };
    let mut d = w.daemon(&[]);
    let mut args = w.serve_args();
    args[2] = w.tmp.path().join("other.sock").display().to_string();
    let o = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another paddock daemon is already using state directory"),
        "{err}"
    );

    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("keep", "sleep 300")))
            .status,
        201
    );
    let pid = w.http("GET", "/v1/sandboxes/keep", None).json()["pid"]
        .as_i64()
        .unwrap() as i32;
    // SIGTERM: exits cleanly, removes its socket, leaves the sandbox running.
    assert_eq!(d.sigterm(Duration::from_secs(10)), Some(0));
    assert!(!w.socket.exists());
    assert!(paddock_testutil::pid_alive(pid));
    assert!(
        d.log_text().contains("leaving sandboxes running"),
        "{}",
        d.log_text()
    );
    // The next daemon adopts it; with --stop-sandboxes-on-exit a SIGTERM stops it.
    let mut d = w.daemon(&["--stop-sandboxes-on-exit"]);
    let info = w.http("GET", "/v1/sandboxes/keep", None).json();
    assert_eq!(info["state"], "running");
    assert_eq!(info["pid"].as_i64().unwrap() as i32, pid);
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));
    assert!(!paddock_testutil::pid_alive(pid));
    w.assert_no_leaks();
}

/// A duplicate ID is a 409 (and starts nothing) also when an admission limit is full: the
/// duplicate check comes first.
#[test]
fn duplicate_is_409_even_when_admission_is_full() {
    let Some(w) = world("api_duplicate_is_409_even_when_admission_is_full") else {
        return;
    };
    let d = w.daemon(&["--max-sandboxes", "1"]);
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("full", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let pid = r.json()["pid"].as_i64().unwrap();
    // max-sandboxes is reached: another ID is a 429, the same ID a 409.
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("other", "exec sleep 300")),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("full", "exec sleep 300")),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.error().contains("sandbox full already exists"),
        "{}",
        r.error()
    );
    assert_eq!(w.cgroups().len(), 1, "a duplicate starts nothing");
    drop(d);
    // --max-starting 0 refuses every start; a duplicate is still a 409.
    let _d = w.daemon(&["--max-starting", "0"]);
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("full", "exec sleep 300")),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("new", "exec sleep 300")),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("max-starting"), "{}", r.error());
    assert_eq!(
        w.hyper("GET", "/v1/sandboxes/full", None).json()["pid"].as_i64(),
        Some(pid),
        "the running sandbox is untouched"
    );
    assert_eq!(w.cgroups().len(), 1);
    let m = w.hyper("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, r#"paddock_sandbox_starts_total{result="conflict"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"paddock_admission_rejected_total{limit="max_starting"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(w.hyper("POST", "/v1/sandboxes/full/kill", None).status, 200);
    w.assert_no_leaks();
}

/// Every endpoint refuses a query parameter it does not take with a 400 naming it, before
/// doing anything.
#[test]
fn unknown_query_parameters_are_400_everywhere() {
    let Some(w) = world("api_unknown_query_parameters_are_400_everywhere") else {
        return;
    };
    let _d = w.daemon(&[]);
    let body = spec("q-1", "exec sleep 300");
    let endpoints: &[(&str, &str, Option<&[u8]>)] = &[
        ("GET", "/v1/sandboxes", None),
        ("POST", "/v1/sandboxes", Some(&body)),
        ("GET", "/v1/sandboxes/q-1", None),
        ("DELETE", "/v1/sandboxes/q-1", None),
        ("POST", "/v1/sandboxes/q-1/stop", None),
        ("POST", "/v1/sandboxes/q-1/kill", None),
        ("GET", "/v1/sandboxes/q-1/wait", None),
        ("POST", "/v1/sandboxes/q-1/pause", None),
        ("POST", "/v1/sandboxes/q-1/resume", None),
        ("GET", "/v1/sandboxes/q-1/stats", None),
        ("GET", "/v1/sandboxes/q-1/logs", None),
        ("GET", "/v1/events", None),
        ("GET", "/v1/openapi.json", None),
        ("GET", "/metrics", None),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/v1/node", None),
        ("POST", "/v1/node/drain", None),
        ("POST", "/v1/node/undrain", None),
    ];
    for (method, path, body) in endpoints {
        let r = w.hyper(method, &format!("{path}?bogus=1"), *body);
        assert_eq!(r.status, 400, "{method} {path}?bogus=1: {}", r.text());
        let e = r.error();
        assert!(
            e.starts_with("query string: ") && e.contains("unknown field `bogus`"),
            "{method} {path}: {e:?}"
        );
        // A known parameter next to an unknown one does not help.
        let sep = if path.contains("/v1/sandboxes/") {
            "lifecycle=0000000000000001&"
        } else {
            ""
        };
        let r = w.hyper(method, &format!("{path}?{sep}bogus=1"), *body);
        assert_eq!(r.status, 400, "{method} {path}?{sep}bogus=1: {}", r.text());
    }
    // Nothing was created.
    assert_eq!(
        w.hyper("GET", "/v1/sandboxes", None).json(),
        serde_json::json!([])
    );
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
    // Without the parameter the same requests work.
    assert_eq!(w.hyper("GET", "/metrics", None).status, 200);
    assert_eq!(w.hyper("GET", "/healthz", None).status, 200);
    assert_eq!(w.hyper("GET", "/readyz", None).status, 200);
    assert_eq!(w.hyper("GET", "/v1/openapi.json", None).status, 200);
}

/// SIGTERM while a stop is in flight: the daemon stops accepting at once but answers the
/// request (200 with the StopReport) before it exits. The grace period (6 s) is the window
/// in which the test must see the stop in flight; with 2 s it was missed twice in 20 runs
/// of the whole suite on a 2-core machine at a load average of about 10.
#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let Some(w) = world("api_graceful_shutdown_finishes_requests_in_flight") else {
        return;
    };
    let mut d = w.daemon(&[]);
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(&spec("slow", "trap '' TERM; while :; do sleep 1; done")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let sock = w.socket.clone();
    let t0 = Instant::now();
    let stopper = std::thread::spawn(move || {
        hyper_request(
            Endpoint::Unix(&sock),
            "POST",
            "/v1/sandboxes/slow/stop?timeout=6s",
            None,
            &[],
        )
    });
    wait_for(Duration::from_secs(10), "the stop to be in flight", || {
        (w.hyper("GET", "/v1/sandboxes/slow", None).json()["state"] == "stopping").then_some(())
    });
    d.send_sigterm();
    d.wait_log("shutting down", Duration::from_secs(5));
    // No new connections, while the stop's grace period is still running.
    wait_for(
        Duration::from_secs(2),
        "new connections to be refused",
        || match std::os::unix::net::UnixStream::connect(&w.socket) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    || e.kind() == std::io::ErrorKind::NotFound =>
            {
                Some(())
            }
            _ => None,
        },
    );
    assert!(
        !stopper.is_finished(),
        "the stop (6 s grace, TERM ignored) was still in flight when connections were refused ({:?})",
        t0.elapsed()
    );
    let r = stopper.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rep = r.json();
    assert_eq!(rep["reason"], "requested", "{rep}");
    assert!(rep["killed_after_grace"].as_u64().unwrap() >= 1, "{rep}");
    assert!(rep["grace_ms"].as_f64().unwrap() >= 5900.0, "{rep}");
    assert!(rep["stuck"].as_array().unwrap().is_empty(), "{rep}");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!w.socket.exists(), "the socket is removed at exit");
    w.assert_no_leaks();
}

/// The metrics by name, with the values the operations so far imply.
#[test]
fn metrics_by_name() {
    let Some(w) = world("api_metrics_by_name") else {
        return;
    };
    let _d = w.daemon(&[]);
    let m = w.hyper("GET", "/metrics", None).text();
    for st in [
        "creating",
        "running",
        "stopping",
        "stopped",
        "failed",
        "quarantined",
    ] {
        assert_eq!(
            metric(&m, &format!(r#"paddock_sandboxes{{state="{st}"}}"#)),
            Some(0.0),
            "{st}: {m}"
        );
    }
    assert_eq!(
        metric(&m, "paddock_quarantined_sandboxes"),
        Some(0.0),
        "{m}"
    );
    let dying = metric(&m, "paddock_cgroup_root_dying_descendants").expect("dying descendants");
    assert!(dying >= 0.0 && dying.fract() == 0.0, "{dying}");

    for id in ["m-1", "m-2"] {
        let r = w.hyper("POST", "/v1/sandboxes", Some(&spec(id, "exec sleep 300")));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = w.hyper(
        "POST",
        "/v1/sandboxes",
        Some(br#"{"id":"m-bad","command":"/nonexistent/prog"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let m = w.hyper("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, r#"paddock_sandboxes{state="running"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_starts_total{result="ok"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_starts_total{result="failed"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_stops_total{result="ok"}"#),
        Some(0.0),
        "{m}"
    );

    assert_eq!(
        w.hyper("POST", "/v1/sandboxes/m-1/stop?timeout=1s", None)
            .status,
        200
    );
    assert_eq!(w.hyper("POST", "/v1/sandboxes/m-2/kill", None).status, 200);
    let m = w.hyper("GET", "/metrics", None).text();
    assert_eq!(
        metric(&m, r#"paddock_sandboxes{state="running"}"#),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandboxes{state="stopped"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_stops_total{result="ok"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_stops_total{result="quarantined"}"#),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"paddock_sandbox_stops_total{result="failed"}"#),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "paddock_quarantined_sandboxes"),
        Some(0.0),
        "{m}"
    );
    for phase in ["signal", "grace", "kill", "remove", "total"] {
        assert_eq!(
            metric(
                &m,
                &format!(r#"paddock_stop_duration_seconds_count{{phase="{phase}"}}"#)
            ),
            Some(2.0),
            "{phase}: {m}"
        );
        assert!(
            metric(
                &m,
                &format!(r#"paddock_stop_duration_seconds_sum{{phase="{phase}"}}"#)
            )
            .is_some_and(|v| v >= 0.0),
            "{phase}: {m}"
        );
    }
    let dying = metric(&m, "paddock_cgroup_root_dying_descendants").expect("dying descendants");
    assert!(dying >= 0.0 && dying.fract() == 0.0, "{dying}");
    for id in ["m-1", "m-2"] {
        assert_eq!(
            w.hyper("DELETE", &format!("/v1/sandboxes/{id}"), None)
                .status,
            204
        );
    }
    w.assert_no_leaks();
}

/// `serve --delegated`: a daemon started in a delegated cgroup (as systemd's
/// `Delegate=yes` starts it) moves itself into `<cgroup>/supervisor`, manages
/// `<cgroup>/sandboxes`, and its sandboxes land there.
#[test]
fn delegated_daemon_runs_in_a_leaf_beside_its_sandboxes() {
    let Some(w) = world("api_delegated_daemon_runs_in_a_leaf") else {
        return;
    };
    let svc = w.t.path().join("svc");
    std::fs::create_dir(&svc).unwrap();
    let log = w.tmp.path().join("daemon.delegated.log");
    // The shell joins the cgroup, then execs the daemon in it (an internal process).
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {BIN} serve --delegated --socket {} --state-dir {}",
        svc.display(),
        w.socket.display(),
        w.state.display()
    );
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .env("PADDOCK_LOG", "info")
        .env_remove("PADDOCK_CGROUP_ROOT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon {
        child: Some(child),
        log,
        socket: w.socket.clone(),
    };
    d.wait_ready();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(
        read(&svc.join("cgroup.procs")).trim(),
        "",
        "{}",
        d.log_text()
    );
    assert_eq!(
        read(&svc.join("supervisor/cgroup.procs")).trim(),
        d.pid().to_string()
    );
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("dlg-1", "exec sleep 300")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    let lc = info["lifecycle"].as_str().unwrap();
    let pid = info["pid"].as_i64().unwrap();
    let sbx = svc.join("sandboxes").join(format!("dlg-1@{lc}"));
    assert_eq!(read(&sbx.join("cgroup.procs")).trim(), pid.to_string());
    assert!(
        d.log_text().contains("delegated cgroup"),
        "{}",
        d.log_text()
    );
    let r = w.http("POST", "/v1/sandboxes/dlg-1/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!sbx.exists());
}
