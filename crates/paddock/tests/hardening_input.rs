//! Hostile input to the daemon's API (issue 13, items 2, 5 and 9): stdio targets that
//! would block or redirect a root-owned open, `--stdio-dir`, values out of the kernel's
//! range, duplicate JSON keys, undecodable paths, the bearer scheme, the token file.
//! Each answer is a 4xx naming the field, at once, and nothing changes.

mod common;

use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Whether some process has the FIFO open for writing (a reader opened without blocking
/// reads EOF only when there is no writer).
fn fifo_has_writer(p: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .unwrap();
    let mut b = [0u8; 16];
    match f.read(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

fn body(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// A create whose stdout is `target` (a `{"file": ...}` target).
fn file_spec(id: &str, script: &str, stdout: &str) -> Vec<u8> {
    body(json!({
        "id": id, "command": "/bin/sh", "args": ["-c", script],
        "stdio": { "stdin": "null", "stdout": { "file": stdout }, "stderr": "log" },
        "stop": { "grace_period_ms": 1000 }
    }))
}

/// The median of `n` `/healthz` round trips; each must answer within 2 s.
fn healthz_median(socket: &Path, n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let r =
                try_http_unix_within(socket, "GET", "/healthz", None, &[], Duration::from_secs(2))
                    .expect("/healthz did not answer within 2 s");
            assert_eq!(r.status, 200);
            t0.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

/// A create whose stdout or stdin is a FIFO without a peer used to block `open()` on one
/// of the daemon's two async workers: two of them froze the API, `/healthz`, reconciliation
/// and SIGTERM. Now each is a 422 at once naming the field, the FIFO is never opened, no
/// sandbox is made, and `/healthz` answers meanwhile.
#[test]
fn fifo_stdio_targets_are_refused_at_once() {
    let Some(w) = world("hardening_fifo_stdio_targets_are_refused_at_once") else {
        return;
    };
    let _d = w.daemon(&[]);
    let fifo = w.tmp.path().join("fifo");
    mkfifo(&fifo);
    let f = fifo.display().to_string();
    let creates: Vec<_> = (0..4)
        .map(|i| {
            let socket = w.socket.clone();
            let b = if i % 2 == 0 {
                file_spec(&format!("fifo-{i}"), "echo hi", &f)
            } else {
                body(json!({
                    "id": format!("fifo-{i}"), "command": "/bin/cat",
                    "stdio": { "stdin": { "file": f }, "stdout": "log", "stderr": "log" }
                }))
            };
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = try_http_unix_within(
                    &socket,
                    "POST",
                    "/v1/sandboxes",
                    Some(&b),
                    &[],
                    Duration::from_secs(5),
                );
                (i, r, t0.elapsed())
            })
        })
        .collect();
    let median = healthz_median(&w.socket, 5);
    for t in creates {
        let (i, r, took) = t.join().unwrap();
        let r = r.unwrap_or_else(|e| panic!("create fifo-{i}: no answer within 5 s ({e})"));
        assert_eq!(r.status, 422, "fifo-{i}: {}", r.text());
        let field = if i % 2 == 0 {
            "stdio.stdout"
        } else {
            "stdio.stdin"
        };
        let e = r.error();
        assert!(e.contains(field) && e.contains("a FIFO"), "fifo-{i}: {e}");
        assert!(took < Duration::from_secs(2), "fifo-{i} took {took:?}");
    }
    assert!(
        median < Duration::from_millis(100),
        "/healthz median {median:?} while FIFO creates were in flight"
    );
    assert!(!fifo_has_writer(&fifo), "the daemon holds the FIFO open");
    assert_eq!(w.http("GET", "/v1/sandboxes", None).json(), json!([]));
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
}

/// A regular file whose open blocks — here, one another process holds a read lease on:
/// an open for writing waits until the holder lets go or `lease-break-time` (45 s) passes,
/// as an open on a hung file system waits — is refused at once (the open is non-blocking)
/// instead of holding a worker, and the lease holder is left alone.
#[test]
fn a_file_whose_open_would_block_is_refused_at_once() {
    let Some(w) = world("hardening_a_file_whose_open_would_block_is_refused_at_once") else {
        return;
    };
    let _d = w.daemon(&[]);
    let leased = w.tmp.path().join("leased.log");
    std::fs::write(&leased, "").unwrap();
    // F_SETLEASE = 1024, F_RDLCK = 0; the lease break's SIGIO is ignored.
    let mut holder = std::process::Command::new("perl")
        .args([
            "-e",
            r#"$SIG{IO} = "IGNORE"; open(my $f, "<", $ARGV[0]) or die "open: $!"; fcntl($f, 1024, 0) or die "F_SETLEASE: $!"; $| = 1; print "leased\n"; sleep 60"#,
        ])
        .arg(&leased)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 7];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"leased\n");
    let t0 = Instant::now();
    let r = try_http_unix_within(
        &w.socket,
        "POST",
        "/v1/sandboxes",
        Some(&file_spec(
            "leased",
            "echo hi",
            &leased.display().to_string(),
        )),
        &[],
        Duration::from_secs(10),
    );
    let took = t0.elapsed();
    let alive = holder.try_wait().unwrap().is_none();
    let _ = holder.kill();
    let _ = holder.wait();
    let r = r.expect("the create was not answered within 10 s");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.error().contains("stdio.stdout") && r.error().contains("lease"),
        "{}",
        r.error()
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(alive, "the lease holder died");
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
}

/// `/healthz` answers within 100 ms while a create is blocked (by the test hook that parks
/// a create forever after its record), and a FIFO create meanwhile is refused before it
/// records anything, so it is not parked too.
#[test]
fn healthz_answers_while_a_create_is_blocked() {
    let Some(w) = world("hardening_healthz_answers_while_a_create_is_blocked") else {
        return;
    };
    let d = w.spawn_daemon_env(&[], &[("PADDOCK_TEST_PAUSE_AT", "after_record")]);
    d.wait_ready();
    let socket = w.socket.clone();
    let blocked = std::thread::spawn(move || {
        try_http_unix_within(
            &socket,
            "POST",
            "/v1/sandboxes",
            Some(&spec("parked", "sleep 300")),
            &[],
            Duration::from_secs(30),
        )
    });
    d.wait_log("test hook: create paused", Duration::from_secs(10));
    let median = healthz_median(&w.socket, 5);
    assert!(
        median < Duration::from_millis(100),
        "/healthz median {median:?} while a create is blocked"
    );
    let fifo = w.tmp.path().join("fifo");
    mkfifo(&fifo);
    let t0 = Instant::now();
    let r = try_http_unix_within(
        &w.socket,
        "POST",
        "/v1/sandboxes",
        Some(&file_spec("fifo", "echo hi", &fifo.display().to_string())),
        &[],
        Duration::from_secs(5),
    )
    .expect("the FIFO create was not answered within 5 s");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.error().contains("a FIFO"), "{}", r.error());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(
        d.log_text().matches("test hook: create paused").count(),
        1,
        "only the first create reached the hook:\n{}",
        d.log_text()
    );
    drop(d);
    // The parked create's connection ends with the daemon.
    let _ = blocked.join().unwrap();
}

/// `stdio` file targets are opened as root: a symbolic link, a device, a directory or a
/// relative path is refused (a symlink in a world-writable directory redirected output
/// into a root-only file); a regular file works, for output and for input.
#[test]
fn stdio_files_must_be_regular_files_named_directly() {
    let Some(w) = world("hardening_stdio_files_must_be_regular_files_named_directly") else {
        return;
    };
    let _d = w.daemon(&[]);
    let secret = w.tmp.path().join("root-only");
    std::fs::write(&secret, "precious\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pub_dir = w.tmp.path().join("public");
    std::fs::create_dir(&pub_dir).unwrap();
    std::fs::set_permissions(&pub_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = pub_dir.join("out.log");
    symlink(&secret, &link).unwrap();
    let dangling = pub_dir.join("new.log");
    symlink(w.tmp.path().join("created-through-link"), &dangling).unwrap();
    for (id, target, want) in [
        ("link", link.display().to_string(), "a symbolic link"),
        (
            "dangling",
            dangling.display().to_string(),
            "a symbolic link",
        ),
        ("dev", "/dev/null".to_owned(), "a character device"),
        ("dir", pub_dir.display().to_string(), "a directory"),
        ("rel", "out.log".to_owned(), "relative"),
    ] {
        let r = w.http(
            "POST",
            "/v1/sandboxes",
            Some(&file_spec(id, "echo pwned", &target)),
        );
        assert_eq!(r.status, 422, "{id}: {}", r.text());
        let e = r.error();
        assert!(e.contains("stdio.stdout") && e.contains(want), "{id}: {e}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "precious\n");
    assert!(!w.tmp.path().join("created-through-link").exists());
    assert_eq!(w.http("GET", "/v1/sandboxes", None).json(), json!([]));
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());

    // Regular files: stdin read, stdout created and appended to.
    let input = w.tmp.path().join("in.txt");
    std::fs::write(&input, "from stdin\n").unwrap();
    let out = pub_dir.join("real.log");
    std::fs::write(&out, "before\n").unwrap();
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&body(json!({
            "id": "ok", "command": "/bin/cat",
            "stdio": { "stdin": { "file": input }, "stdout": { "file": out }, "stderr": "log" }
        }))),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let done = w
        .http("GET", "/v1/sandboxes/ok/wait?timeout=10s", None)
        .json();
    assert_eq!(done["state"], "stopped", "{done}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "before\nfrom stdin\n"
    );
    w.assert_no_leaks();
}

/// `serve --stdio-dir DIR`: file targets only beneath DIR (relative to it, or absolute
/// under it); `..` out of it, a symbolic link to outside, a symlinked directory on the way
/// and an absolute path elsewhere are refused, and nothing is created outside.
#[test]
fn stdio_dir_confines_file_targets() {
    let Some(w) = world("hardening_stdio_dir_confines_file_targets") else {
        return;
    };
    let dir = w.tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(dir.join("jobs")).unwrap();
    let outside = w.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "precious\n").unwrap();
    symlink(&secret, dir.join("link")).unwrap();
    symlink(&outside, dir.join("updir")).unwrap();
    let _d = w.daemon(&["--stdio-dir", dir.to_str().unwrap()]);
    for (id, target, want) in [
        ("abs-out", secret.display().to_string(), "not beneath"),
        ("dotdot", "../outside/secret".to_owned(), "escapes"),
        ("dotdot-new", "jobs/../../outside/new".to_owned(), "escapes"),
        (
            "abs-dotdot",
            format!("{}/../outside/new", dir.display()),
            "escapes",
        ),
        ("link", "link".to_owned(), "a symbolic link"),
        ("via-link", "updir/new".to_owned(), "symbolic link"),
        (
            "tmp",
            "/tmp/paddock-stdio-dir-test.log".to_owned(),
            "not beneath",
        ),
    ] {
        let r = w.http(
            "POST",
            "/v1/sandboxes",
            Some(&file_spec(id, "echo pwned", &target)),
        );
        assert_eq!(r.status, 422, "{id}: {}", r.text());
        assert!(
            r.error().contains(want),
            "{id}: want {want:?}: {}",
            r.error()
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "precious\n");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    assert!(!Path::new("/tmp/paddock-stdio-dir-test.log").exists());
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
    // Inside: relative, absolute, and `..` that stays inside.
    for (id, target, file) in [
        ("rel", "a.log".to_owned(), dir.join("a.log")),
        (
            "abs",
            dir.join("b.log").display().to_string(),
            dir.join("b.log"),
        ),
        (
            "inner-dotdot",
            "jobs/../jobs/c.log".to_owned(),
            dir.join("jobs/c.log"),
        ),
    ] {
        let r = w.http(
            "POST",
            "/v1/sandboxes",
            Some(&file_spec(id, "echo inside", &target)),
        );
        assert_eq!(r.status, 201, "{id}: {}", r.text());
        let done = w
            .http("GET", &format!("/v1/sandboxes/{id}/wait?timeout=10s"), None)
            .json();
        assert_eq!(done["state"], "stopped", "{done}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "inside\n", "{id}");
    }
    w.assert_no_leaks();
}

/// Item 9 of issue 13: each of these was a 500 (or accepted); now a 400 naming the field,
/// with nothing changed.
#[test]
fn out_of_range_and_ambiguous_input_is_400() {
    let Some(w) = world("hardening_out_of_range_and_ambiguous_input_is_400") else {
        return;
    };
    let _d = w.daemon(&[]);
    let base = |extra: serde_json::Value| {
        let mut v = json!({ "id": "v", "command": "/bin/true" });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        body(v)
    };
    let netns = format!("paddock-no-such-netns-{}", std::process::id());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            base(json!({ "limits": { "max_descendants": 2147483648u64 } })),
            "limits.max_descendants",
        ),
        (
            base(json!({ "limits": { "max_depth": u64::MAX } })),
            "limits.max_depth",
        ),
        (
            base(json!({ "limits": { "pids_max": 4194305 } })),
            "limits.pids_max",
        ),
        (
            base(json!({ "stop": { "grace_period_ms": 31536000001u64 } })),
            "stop.grace_period_ms",
        ),
        (
            base(json!({ "stop": { "kill_timeout_ms": u64::MAX } })),
            "stop.kill_timeout_ms",
        ),
        (
            br#"{"id":"v","command":"/bin/true","id":"w"}"#.to_vec(),
            "duplicate key \"id\"",
        ),
        (
            br#"{"id":"v","command":"/bin/true","env":{"A":"1","A":"2"}}"#.to_vec(),
            "duplicate key \"A\"",
        ),
    ];
    for (b, want) in &cases {
        let r = w.http("POST", "/v1/sandboxes", Some(b));
        assert_eq!(r.status, 400, "{want}: {}", r.text());
        assert!(r.error().contains(want), "want {want:?} in {:?}", r.error());
    }
    // A named network namespace that does not exist: valid, but not on this node (422).
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&base(json!({ "network": { "named": netns } }))),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.error().contains("network") && r.error().contains("ip netns add"),
        "{}",
        r.error()
    );
    // The prefix is said once.
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(br#"{"id":"../x","command":"/bin/true"}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error().matches("invalid sandbox spec").count(),
        1,
        "{}",
        r.error()
    );
    // `?timeout=` has the same bound as grace_period_ms: 365 days.
    let r = w.http("POST", "/v1/sandboxes/v/stop?timeout=8761h", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("timeout") && r.error().contains("365 days"),
        "{}",
        r.error()
    );
    assert!(!r.error().contains("invalid sandbox spec"), "{}", r.error());
    // A path segment that is not UTF-8 once decoded: JSON like every other error.
    for path in ["/v1/sandboxes/%FF", "/v1/sandboxes/%C3%28/stop"] {
        let method = if path.ends_with("stop") {
            "POST"
        } else {
            "GET"
        };
        let r = w.http(method, path, None);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.headers.to_ascii_lowercase().contains("application/json"),
            "{path}: {}",
            r.headers
        );
        assert!(r.error().starts_with("path:"), "{path}: {}", r.error());
    }
    assert_eq!(w.http("GET", "/v1/sandboxes", None).json(), json!([]));
    assert!(w.cgroups().is_empty(), "{:?}", w.cgroups());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The token file must be the daemon user's own regular file, private; the bearer scheme
/// is case-insensitive (RFC 7235).
#[test]
fn token_file_and_bearer_scheme() {
    let Some(w) = world("hardening_token_file_and_bearer_scheme") else {
        return;
    };
    let tok = w.tmp.path().join("token");
    std::fs::write(&tok, "s3cret-token-0123456789\n").unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let serve = |token: &Path| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(w.serve_args())
            .args(["--listen", &addr, "--token-file", token.to_str().unwrap()])
            .env_remove("PADDOCK_TEST_PAUSE_AT");
        output_within(cmd, Duration::from_secs(20))
    };
    // Owned by another user (who could rewrite it): refused.
    std::os::unix::fs::chown(&tok, Some(65534), None).unwrap();
    let o = serve(&tok);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!w.socket.exists());
    std::os::unix::fs::chown(&tok, Some(0), None).unwrap();
    // A FIFO there is refused at once, not read forever.
    let fifo = w.tmp.path().join("token-fifo");
    mkfifo(&fifo);
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t0 = Instant::now();
    let o = serve(&fifo);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(10));

    let _d = w.daemon(&["--listen", &addr, "--token-file", tok.to_str().unwrap()]);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let h = format!("{scheme} s3cret-token-0123456789");
        let r = hyper_request(
            Endpoint::Tcp(&addr),
            "GET",
            "/v1/sandboxes",
            None,
            &[("Authorization", &h)],
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    for h in [
        "Basic s3cret-token-0123456789",
        "bearer wrong",
        "bearers3cret-token-0123456789",
    ] {
        let r = hyper_request(
            Endpoint::Tcp(&addr),
            "GET",
            "/v1/sandboxes",
            None,
            &[("Authorization", h)],
        );
        assert_eq!(r.status, 401, "{h}: {}", r.text());
    }
}

/// A payload that exits before its start time can be read (`/bin/true`) is recorded with a
/// main PID and no start time; once a restart of its ID replaces the finished lifecycle,
/// reconciliation drops its record — without the WARN "record has a main PID but no start
/// time", which is about live lifecycles only.
#[test]
fn finished_lifecycles_do_not_warn_about_start_times() {
    let Some(w) = world("hardening_finished_lifecycles_do_not_warn_about_start_times") else {
        return;
    };
    let d = w.daemon(&["--reconcile-interval", "1"]);
    for _ in 0..6 {
        let r = w.http(
            "POST",
            "/v1/sandboxes",
            Some(br#"{"id":"quick","command":"/bin/true"}"#),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let done = w
            .http("GET", "/v1/sandboxes/quick/wait?timeout=10s", None)
            .json();
        assert_eq!(done["state"], "stopped", "{done}");
    }
    // Five lifecycles were replaced (their records are deleted as they are replaced);
    // two more reconciliations pass over the finished one that is left.
    let runs = |w: &World| {
        let m = w.http("GET", "/metrics", None).text();
        metric(&m, "paddock_reconcile_runs_total").unwrap_or(0.0)
    };
    let before = runs(&w);
    wait_for(Duration::from_secs(20), "two more reconciliations", || {
        (runs(&w) >= before + 2.0).then_some(())
    });
    let log = d.log_text();
    assert!(
        !log.contains("no start time"),
        "spurious WARN:\n{}",
        log.lines()
            .filter(|l| l.contains("no start time"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    w.assert_no_leaks();
}
