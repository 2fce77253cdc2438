//! The daemon's limits under hostile clients, end to end, on 127.0.0.1 only: connection
//! timeouts and caps, `EMFILE` at the accept, the `RLIMIT_NOFILE` raise. Every loop here
//! is bounded by a count and a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "limits-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token_file(w: &World) -> String {
    let tok = w.tmp.path().join("token");
    std::fs::write(&tok, TOKEN).unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    tok.display().to_string()
}

/// Starts a daemon under `sh -c 'ulimit <ulimit>; exec paddock serve …'` (so its
/// `RLIMIT_NOFILE` is what the test says) and waits until it is ready.
fn daemon_with_ulimit(w: &World, ulimit: &str, extra: &[&str]) -> Daemon {
    let n = std::fs::read_dir(w.tmp.path()).unwrap().count();
    let log = w.tmp.path().join(format!("daemon.{n}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut args = w.serve_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(&args)
        .env("PADDOCK_LOG", "info")
        .env_remove("PADDOCK_SOCKET")
        .env_remove("PADDOCK_TEST_PAUSE_AT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn paddock serve");
    let d = Daemon {
        child: Some(child),
        log,
        socket: w.socket.clone(),
    };
    d.wait_ready();
    d
}

/// One request over the unix socket with a deadline on the answer (an unanswered
/// connection is an error, not a hang).
fn unix_get(socket: &Path, path: &str, within: Duration) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(within))?;
    s.set_write_timeout(Some(within))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: paddock\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    Ok((status, text))
}

/// Whether the peer has closed `s` (EOF or reset), without blocking.
fn closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Opens `n` TCP connections to `addr`, non-blocking.
fn connect_many(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// Waits until every stream in `conns` is closed by the daemon; returns how long that took.
fn wait_all_closed(conns: &[TcpStream], timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let mut open: Vec<usize> = (0..conns.len()).collect();
    while !open.is_empty() {
        open.retain(|&i| !closed(&conns[i]));
        if t0.elapsed() > timeout {
            panic!(
                "{} of {} connections still open after {timeout:?}",
                open.len(),
                conns.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn metrics(w: &World) -> String {
    let (st, text) = unix_get(&w.socket, "/metrics", Duration::from_secs(10)).unwrap();
    assert_eq!(st, 200);
    text
}

/// 200 silent TCP connections and 20 that send half a request head are all closed once
/// the header timeout passes (and not before); a kept-alive connection is closed by the
/// idle timeout instead, and a request whose body stalls by the idle timeout as well.
#[test]
fn idle_and_slow_tcp_connections_are_closed_by_the_timeouts() {
    let Some(w) = world("limits_idle_and_slow_tcp_connections") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let tok = token_file(&w);
    let _d = w.daemon(&[
        "--listen",
        &addr,
        "--token-file",
        &tok,
        "--header-timeout",
        "1s",
        "--idle-timeout",
        "3s",
    ]);
    let t0 = Instant::now();
    let silent = connect_many(&addr, 200);
    let mut slow = connect_many(&addr, 20);
    for s in &mut slow {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
    }
    // A kept-alive connection after one full request.
    let mut kept = TcpStream::connect(&addr).unwrap();
    write!(
        kept,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    kept.set_nonblocking(true).unwrap();
    // A request whose body never comes: its head is in, 10 of 100 bytes of body.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":\"a\""
    )
    .unwrap();
    stalled.set_nonblocking(true).unwrap();

    // Nothing is closed early (the slowest connect above finished well before 0.5 s on
    // this machine; if not, this check is merely weaker).
    std::thread::sleep(Duration::from_millis(500).saturating_sub(t0.elapsed()));
    if t0.elapsed() < Duration::from_millis(900) {
        let early = silent
            .iter()
            .chain(slow.iter())
            .filter(|s| closed(s))
            .count();
        assert_eq!(early, 0, "connections closed before the header timeout");
    }
    let took = wait_all_closed(&silent, Duration::from_secs(10));
    wait_all_closed(&slow, Duration::from_secs(10));
    eprintln!("220 connections closed {took:?} after the check");
    let m = metrics(&w);
    let header = metric(
        &m,
        r#"paddock_connection_timeouts_total{listener="tcp",reason="header"}"#,
    )
    .unwrap();
    assert!(header >= 220.0, "header timeouts {header}\n{m}");

    // The kept-alive and stalled connections outlive the header timeout: the idle timeout
    // (3 s) is theirs.
    let since = t0.elapsed();
    if since < Duration::from_millis(2500) {
        assert!(
            !closed(&kept),
            "kept-alive connection closed by the header timeout"
        );
        assert!(
            !closed(&stalled),
            "stalled request closed by the header timeout"
        );
    }
    wait_all_closed(std::slice::from_ref(&kept), Duration::from_secs(10));
    wait_all_closed(std::slice::from_ref(&stalled), Duration::from_secs(10));
    let m = metrics(&w);
    for reason in ["idle", "stall"] {
        let v = metric(
            &m,
            &format!(r#"paddock_connection_timeouts_total{{listener="tcp",reason="{reason}"}}"#),
        )
        .unwrap();
        assert!(v >= 1.0, "{reason} timeouts {v}\n{m}");
    }
    assert_eq!(
        metric(&m, r#"paddock_connections{listener="tcp"}"#),
        Some(0.0),
        "{m}"
    );
    assert!(w.cgroups().is_empty(), "the stalled create created nothing");
}

/// Under a descriptor limit a TCP flood would exhaust (256, with the default cap of 1,024
/// TCP connections), the TCP cap is lowered so that the flood never takes the unix
/// socket's room: the unix socket answers `/healthz` at once while 300 TCP connections
/// are open, and those beyond the cap wait unaccepted.
#[test]
fn the_unix_socket_answers_beyond_the_tcp_cap() {
    let Some(w) = world("limits_unix_socket_beyond_the_tcp_cap") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let tok = token_file(&w);
    let d = daemon_with_ulimit(
        &w,
        "-n 256",
        &[
            "--listen",
            &addr,
            "--token-file",
            &tok,
            "--header-timeout",
            "60s",
        ],
    );
    // 256 descriptors: 32 kept for the daemon, 64 for the unix socket, 160 for TCP.
    d.wait_log("--max-connections lowered", Duration::from_secs(5));
    let t0 = Instant::now();
    let flood = connect_many(&addr, 300);
    eprintln!("connected 300 in {:?}", t0.elapsed());
    wait_for(
        Duration::from_secs(10),
        "160 TCP connections accepted",
        || {
            let m = metrics(&w);
            (metric(&m, r#"paddock_connections{listener="tcp"}"#) == Some(160.0)).then_some(())
        },
    );
    // 20 unix connections at once, then requests on each.
    let mut held: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&w.socket).unwrap())
        .collect();
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut b = [0u8; 256];
        let n = s
            .read(&mut b)
            .expect("the unix socket must answer while TCP is at its cap");
        assert!(
            b[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&b[..n])
        );
    }
    let m = metrics(&w);
    assert_eq!(
        metric(&m, r#"paddock_connections_accepted_total{listener="tcp"}"#),
        Some(160.0),
        "{m}"
    );
    for l in ["tcp", "unix"] {
        assert_eq!(
            metric(
                &m,
                &format!(r#"paddock_accept_errors_total{{listener="{l}"}}"#)
            ),
            Some(0.0),
            "{m}"
        );
    }
    drop(flood);
}

/// A flood of unix-socket connections beyond `RLIMIT_NOFILE` (64; the unix cap is the
/// operator's to set, 1,024 by default) makes `accept` fail with EMFILE: the daemon logs it
/// once (not once per failure), backs off, stays alive, and once the flood's connections
/// close it accepts again, on the unix socket and on TCP.
#[test]
fn accept_survives_emfile() {
    let Some(w) = world("limits_accept_survives_emfile") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let tok = token_file(&w);
    let d = daemon_with_ulimit(
        &w,
        "-n 64",
        &[
            "--listen",
            &addr,
            "--token-file",
            &tok,
            "--header-timeout",
            "60s",
        ],
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    eprintln!("the idle daemon has {fds} descriptors open");
    let flood: Vec<UnixStream> = (0..100)
        .map(|i| UnixStream::connect(&w.socket).unwrap_or_else(|e| panic!("connect #{i}: {e}")))
        .collect();
    d.wait_log("accept failed", Duration::from_secs(10));
    // Hold the flood for 2.5 s of backoff: still one line.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        common_alive(&d),
        "daemon died at EMFILE; log:\n{}",
        d.log_text()
    );
    drop(flood);
    let (st, body) = wait_for(
        Duration::from_secs(10),
        "/healthz on the unix socket",
        || unix_get(&w.socket, "/healthz", Duration::from_secs(2)).ok(),
    );
    assert_eq!(st, 200, "{body}");
    d.wait_log("accept works again", Duration::from_secs(10));
    let log = d.log_text();
    // Logged once (per listener), not once per failed accept.
    let lines = |l: &str| {
        log.lines()
            .filter(|x| x.contains("accept failed") && x.contains(&format!("listener=\"{l}\"")))
            .count()
    };
    assert_eq!(lines("unix"), 1, "{log}");
    let r = hyper_request(
        Endpoint::Tcp(&addr),
        "GET",
        "/healthz",
        None,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 200);
    let m = metrics(&w);
    assert!(
        metric(&m, r#"paddock_accept_errors_total{listener="unix"}"#).unwrap() >= 1.0,
        "{m}"
    );
}

fn common_alive(d: &Daemon) -> bool {
    paddock_testutil::pid_alive(d.pid())
}

/// `serve` raises its `RLIMIT_NOFILE` soft limit to the hard limit.
#[test]
fn serve_raises_the_nofile_soft_limit() {
    let Some(w) = world("limits_serve_raises_the_nofile_soft_limit") else {
        return;
    };
    let d = daemon_with_ulimit(&w, "-S -n 200", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (v[3], v[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "200", "{line}");
}

/// Checks that `text` is consecutive numbered lines (as `seq` prints them) ending with
/// `last`, the first line possibly cut; returns the first whole number.
fn consecutive_ending_at(text: &[u8], last: u64) -> u64 {
    let s = std::str::from_utf8(text).unwrap();
    assert!(s.ends_with('\n'), "the log does not end with a whole line");
    let nums: Vec<u64> = s
        .lines()
        .skip(1)
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect();
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap or a duplicate in the log");
    }
    assert_eq!(*nums.last().unwrap(), last);
    nums[0]
}

/// The log files of `id` in the state directory: `(name, size)`, sorted. A file the log's
/// rotation removes between the listing and its `stat` is not listed (it is gone).
fn log_files(w: &World, id: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(w.state.join("logs"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{id}@"))
        })
        .filter_map(|e| {
            let len = e.metadata().ok()?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect();
    v.sort();
    v
}

/// With the default cap (10 MiB × 3 files), a payload writing 37 MiB ends with three files
/// of at most 10 MiB; the files hold the newest output without a gap or a duplicate, in
/// order (rotation collapses the head of the file the payload appends to), and `paddock
/// logs` reads its tail across them.
#[test]
fn a_payload_writing_37_mib_ends_within_the_log_cap() {
    let Some(w) = world("limits_payload_writing_37_mib") else {
        return;
    };
    let _d = w.daemon(&[]);
    const LAST: u64 = 5_000_000; // `seq 1 5000000` writes 38,888,897 bytes
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("big", &format!("seq 1 {LAST}"))),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let lc = r.json()["lifecycle"].as_str().unwrap().to_owned();
    // Sizes while it writes (for the record: the cap is enforced by a watcher that looks
    // at a fast-growing file every 10 ms, so it may be exceeded by what is written
    // between two looks).
    let mut biggest = 0;
    let t0 = Instant::now();
    loop {
        let files = log_files(&w, "big");
        biggest = biggest.max(files.iter().map(|f| f.1).max().unwrap_or(0));
        let st = w.http("GET", "/v1/sandboxes/big", None).json()["state"].clone();
        if st == "stopped" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "still {st}");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "seq wrote 38.9 MB in {:?}; the largest log file seen meanwhile: {biggest} bytes",
        t0.elapsed()
    );
    const CAP: u64 = 10 << 20;
    let files = wait_for(Duration::from_secs(10), "the log within its cap", || {
        let f = log_files(&w, "big");
        (f.len() <= 3 && f.iter().all(|(_, s)| *s <= CAP)).then_some(f)
    });
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    let base = format!("big@{lc}.log");
    assert_eq!(
        names,
        [base.clone(), format!("{base}.1"), format!("{base}.2")],
        "{files:?}"
    );
    // Oldest first: .2, .1, the active file.
    let dir = w.state.join("logs");
    let mut all = Vec::new();
    for n in [format!("{base}.2"), format!("{base}.1"), base.clone()] {
        all.extend(std::fs::read(dir.join(n)).unwrap());
    }
    let first = consecutive_ending_at(&all, LAST);
    assert!(first > 1, "the oldest output was dropped");
    assert!(
        all.len() as u64 >= 2 * CAP,
        "two full rotated files: {}",
        all.len()
    );
    // `paddock logs` reads the last 4 MiB across the files.
    let out = w.cli_ok(&["logs", "big"]);
    assert_eq!(out.len(), 4 << 20);
    assert!(all.ends_with(out.as_bytes()));
    consecutive_ending_at(out.as_bytes(), LAST);
    w.assert_no_leaks();
}

/// Stopped sandboxes are deleted, logs included, past `--retain-stopped-count` (the one
/// stopped first) and `--retain-stopped-age`; the log of a lifecycle replaced by a
/// restart of its ID is deleted with it.
#[test]
fn stopped_sandboxes_are_pruned_with_their_logs() {
    let Some(w) = world("limits_stopped_sandboxes_are_pruned") else {
        return;
    };
    let mut d = w.daemon(&["--retain-stopped-count", "2", "--retain-stopped-age", "2s"]);
    let wait_stopped = |id: &str| {
        let r = w.http("GET", &format!("/v1/sandboxes/{id}/wait?timeout=20s"), None);
        assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    };
    // A restart of an ID: the previous lifecycle's log goes, the new one's stays.
    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("re", "echo one")))
            .status,
        201
    );
    wait_stopped("re");
    let old = log_files(&w, "re");
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(
        w.http("POST", "/v1/sandboxes", Some(&spec("re", "echo two")))
            .status,
        201
    );
    wait_stopped("re");
    let now = wait_for(Duration::from_secs(5), "the replaced log deleted", || {
        let f = log_files(&w, "re");
        (f.len() == 1 && f[0].0 != old[0].0).then_some(f)
    });
    assert_eq!(
        std::fs::read(w.state.join("logs").join(&now[0].0)).unwrap(),
        b"two\n"
    );

    let t0 = Instant::now();
    for i in 0..3 {
        let id = format!("p-{i}");
        assert_eq!(
            w.http("POST", "/v1/sandboxes", Some(&spec(&id, "echo bye")))
                .status,
            201
        );
        wait_stopped(&id);
    }
    let listed = || -> Vec<String> {
        let mut v: Vec<String> = w
            .http("GET", "/v1/sandboxes", None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    // Four stopped (re, p-0, p-1, p-2) against a count of 2: re and p-0 went.
    if t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(listed(), ["p-1", "p-2"]);
    }
    wait_for(Duration::from_secs(5), "logs of re and p-0 deleted", || {
        (log_files(&w, "re").is_empty() && log_files(&w, "p-0").is_empty()).then_some(())
    });
    assert_eq!(w.http("GET", "/v1/sandboxes/p-0", None).status, 404);
    // The age: the rest go 2 s after they stopped.
    wait_for(
        Duration::from_secs(10),
        "every stopped sandbox pruned",
        || listed().is_empty().then_some(()),
    );
    wait_for(Duration::from_secs(5), "every log deleted", || {
        (log_files(&w, "p-1").is_empty() && log_files(&w, "p-2").is_empty()).then_some(())
    });
    let m = metrics(&w);
    assert_eq!(metric(&m, "paddock_stopped_pruned_total"), Some(4.0), "{m}");
    // Their store records went too: a restarted daemon finds none to drop.
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));
    let d2 = w.daemon(&[]);
    let m = metrics(&w);
    assert_eq!(
        metric(&m, "paddock_reconcile_records_gone_total"),
        Some(0.0),
        "records left behind:\n{}",
        d2.log_text()
    );
    w.assert_no_leaks();
}

/// The payload writes its log file directly (no pipe through the daemon): a daemon crash
/// costs it nothing — it keeps writing, past the cap, while no daemon runs — and the next
/// daemon adopts it and brings its log back under the cap, with no byte lost or
/// duplicated.
#[test]
fn the_log_cap_survives_a_daemon_crash() {
    let Some(w) = world("limits_log_cap_survives_a_daemon_crash") else {
        return;
    };
    let flags = ["--log-max-size", "64K", "--log-max-files", "2"];
    let mut d = w.daemon(&flags);
    let script =
        "i=0; while :; do i=$((i+1)); echo $i; if [ $((i % 1000)) = 0 ]; then sleep 0.01; fi; done";
    let r = w.http("POST", "/v1/sandboxes", Some(&spec("writer", script)));
    assert_eq!(r.status, 201, "{}", r.text());
    let lc = r.json()["lifecycle"].as_str().unwrap().to_owned();
    let active = w.state.join("logs").join(format!("writer@{lc}.log"));
    wait_for(Duration::from_secs(10), "a first rotation", || {
        (log_files(&w, "writer").len() == 2).then_some(())
    });
    d.sigkill();
    // Nobody enforces the cap now; the payload writes on.
    wait_for(Duration::from_secs(20), "the log past the cap", || {
        (std::fs::metadata(&active).unwrap().len() > 256 * 1024).then_some(())
    });
    let _d = w.daemon(&flags);
    let info = w.http("GET", "/v1/sandboxes/writer", None).json();
    assert_eq!(info["state"], "running", "{info}");
    wait_for(
        Duration::from_secs(10),
        "the log back under the cap",
        || {
            let f = log_files(&w, "writer");
            (f.len() <= 2 && f.iter().all(|(_, s)| *s <= 64 * 1024)).then_some(())
        },
    );
    let r = w.http("POST", "/v1/sandboxes/writer/kill", None);
    assert_eq!(r.status, 200, "{}", r.text());
    // After the kill nothing writes: the log (read through the API, which never sees a
    // rotation half done) holds consecutive numbers.
    let text = w.cli_ok(&["logs", "writer"]);
    assert!(text.len() > 64 * 1024, "{}", text.len());
    // The kill may cut the last line.
    let whole = &text[..text.rfind('\n').unwrap() + 1];
    let last: u64 = whole.lines().last().unwrap().parse().unwrap();
    consecutive_ending_at(whole.as_bytes(), last);
    w.assert_no_leaks();
}

/// An answer the client does not read (a 4 MiB log) stalls the daemon's writes: the
/// connection is closed once it has stalled for the idle timeout, and counted.
#[test]
fn an_answer_the_client_does_not_read_is_dropped_after_the_idle_timeout() {
    let Some(w) = world("limits_unread_answer_dropped") else {
        return;
    };
    let _d = w.daemon(&["--idle-timeout", "2s"]);
    let r = w.http(
        "POST",
        "/v1/sandboxes",
        Some(&spec("chatty", "seq 1 1000000")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w.http("GET", "/v1/sandboxes/chatty/wait?timeout=20s", None);
    assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    let mut s = UnixStream::connect(&w.socket).unwrap();
    s.write_all(b"GET /v1/sandboxes/chatty/logs HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    // Not reading: the socket buffers fill, the daemon's writes stall.
    wait_for(Duration::from_secs(15), "the stall timeout", || {
        let m = metrics(&w);
        (metric(
            &m,
            r#"paddock_connection_timeouts_total{listener="unix",reason="stall"}"#,
        ) == Some(1.0))
        .then_some(())
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got); // EOF, or a reset
    assert!(
        got.len() < 4 << 20,
        "the whole answer arrived: {}",
        got.len()
    );
    let m = metrics(&w);
    assert_eq!(
        metric(&m, r#"paddock_connections{listener="unix"}"#),
        Some(1.0),
        "{m}"
    );
}

/// A bounded connection flood on loopback during sandbox lifecycles (the torture runner is
/// library-level, without a daemon, so this daemon-level case of its list lives here):
/// 300 idle TCP connections (the TCP cap under `ulimit -n 256` is 160, so 140 wait in the
/// backlog) and 40 idle unix connections stay open, none sending a byte, while 12
/// lifecycles of a leaky payload (a SIGTERM-ignoring escapee double-forked out of the main
/// tree) are created, checked and stopped through the unix socket, half by a graceful
/// stop, half by a kill. Every request is answered within 10 s, `/healthz` within 2 s
/// between them, every stop reports `stopped`, and nothing is left: no cgroup, no process
/// in the test's subtree.
#[test]
fn lifecycles_go_on_under_a_connection_flood() {
    let Some(w) = world("limits_lifecycles_go_on_under_a_connection_flood") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let tok = token_file(&w);
    let d = daemon_with_ulimit(
        &w,
        "-n 256",
        &[
            "--listen",
            &addr,
            "--token-file",
            &tok,
            "--header-timeout",
            "60s",
        ],
    );
    let tcp_flood = connect_many(&addr, 300);
    let unix_flood: Vec<UnixStream> = (0..40)
        .map(|i| UnixStream::connect(&w.socket).unwrap_or_else(|e| panic!("unix #{i}: {e}")))
        .collect();
    wait_for(
        Duration::from_secs(10),
        "160 TCP connections accepted",
        || {
            let m = metrics(&w);
            (metric(&m, r#"paddock_connections{listener="tcp"}"#) == Some(160.0)).then_some(())
        },
    );
    let within = Duration::from_secs(10);
    let ask = |method: &str, path: &str, body: Option<&[u8]>| {
        try_http_unix_within(&w.socket, method, path, body, &[], within)
            .unwrap_or_else(|e| panic!("{method} {path} under the flood: {e}"))
    };
    for i in 0..12 {
        let id = format!("flood-{i}");
        let body = serde_json::to_vec(&serde_json::json!({
            "id": id, "command": "/bin/sh", "args": ["-c", LEAKY],
            "stop": { "grace_period_ms": 100, "kill_timeout_ms": 5000 }
        }))
        .unwrap();
        let r = ask("POST", "/v1/sandboxes", Some(&body));
        assert_eq!(r.status, 201, "{}", r.text());
        let t0 = Instant::now();
        let h = try_http_unix_within(&w.socket, "GET", "/healthz", None, &[], within)
            .expect("/healthz under the flood");
        assert_eq!(h.status, 200);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "/healthz took {:?} under the flood",
            t0.elapsed()
        );
        let r = ask("GET", &format!("/v1/sandboxes/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        let op = if i % 2 == 0 { "stop" } else { "kill" };
        let r = ask("POST", &format!("/v1/sandboxes/{id}/{op}"), None);
        assert_eq!(r.status, 200, "{op} {id}: {}", r.text());
        let r = ask("GET", &format!("/v1/sandboxes/{id}"), None);
        assert_eq!(r.json()["state"], "stopped", "{}", r.text());
    }
    // The flood was still held all along: nothing of it was answered or dropped by the
    // daemon before its header timeout.
    let m = metrics(&w);
    assert_eq!(
        metric(&m, r#"paddock_connections{listener="tcp"}"#),
        Some(160.0),
        "{m}"
    );
    drop(tcp_flood);
    drop(unix_flood);
    w.assert_no_leaks();
    drop(d);
}
