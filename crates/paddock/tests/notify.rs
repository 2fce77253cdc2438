//! sd_notify under a stand-in service manager: the test binds the unix datagram socket
//! `NOTIFY_SOCKET` names, as systemd does for a `Type=notify` unit, and reads what the
//! daemon sends. READY=1 must come only once /readyz answers 200; WATCHDOG=1 must come at
//! half of WATCHDOG_USEC; STOPPING=1 on SIGTERM; and no sandbox inherits NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// The next datagram, or `None` after `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

#[test]
fn ready_after_readyz_then_watchdog_then_stopping() {
    let Some(w) = world("notify_ready") else {
        return;
    };
    let path = w.tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let notify = path.display().to_string();
    // 400 ms: pings every 200 ms.
    let mut d = w.spawn_daemon_env(
        &[],
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );

    // Everything up to READY=1. At the moment it arrives /readyz must already be 200:
    // asked once, not retried.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = recv(&sock, left.max(Duration::from_millis(1))) else {
            panic!(
                "no READY=1 within 20 s; got {before:?}; log:\n{}",
                d.log_text()
            );
        };
        if m.lines().any(|l| l == "READY=1") {
            let r = try_http_unix(&w.socket, "GET", "/readyz", None, &[])
                .expect("/readyz answers at READY=1");
            assert_eq!(r.status, 200, "READY=1 sent before /readyz is 200");
            assert!(m.contains("STATUS=ready"), "{m:?}");
            break;
        }
        assert!(
            !m.contains("WATCHDOG=1"),
            "a watchdog ping before READY=1: {m:?}"
        );
        before.push(m);
    }
    assert!(
        before.iter().any(|m| m.contains("STATUS=recovering")),
        "a status while recovering: {before:?}"
    );

    // Three pings, each well within the 400 ms period.
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv(&sock, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no watchdog ping within 5 s; log:\n{}", d.log_text()));
        if m.trim() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "3 pings took {:?}",
        t0.elapsed()
    );

    // A sandbox does not inherit the daemon's NOTIFY_SOCKET or WATCHDOG_USEC.
    w.cli_ok(&[
        "run",
        "-d",
        "--name",
        "envcheck",
        "--",
        "sh",
        "-c",
        "echo N=${NOTIFY_SOCKET-unset} W=${WATCHDOG_USEC-unset}",
    ]);
    w.cli_ok(&["wait", "envcheck", "--timeout", "20s"]);
    let log = w.cli_ok(&["logs", "envcheck"]);
    assert!(log.contains("N=unset W=unset"), "{log:?}");
    w.cli_ok(&["rm", "envcheck"]);

    d.send_sigterm();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = recv(&sock, left.max(Duration::from_millis(1)))
            .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM; log:\n{}", d.log_text()));
        if m.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    w.assert_no_leaks();
}

/// Without NOTIFY_SOCKET nothing is sent and nothing fails; with a WATCHDOG_PID that is
/// not the daemon's, the watchdog is off (sd_watchdog_enabled(3)).
#[test]
fn watchdog_only_for_this_process() {
    let Some(w) = world("notify_pid") else { return };
    let path = w.tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let notify = path.display().to_string();
    let mut d = w.spawn_daemon_env(
        &[],
        &[
            ("NOTIFY_SOCKET", &notify),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    d.wait_ready();
    assert!(
        !d.log_text().contains("systemd watchdog on"),
        "{}",
        d.log_text()
    );
    // READY=1 came (the daemon is ready), and up to it no ping.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = recv(&sock, left.max(Duration::from_millis(1))).expect("READY=1");
        assert!(!m.contains("WATCHDOG=1"), "{m:?}");
        if m.lines().any(|l| l == "READY=1") {
            break;
        }
    }
    assert_eq!(d.sigterm(Duration::from_secs(20)), Some(0));
    // Everything the daemon sent is queued by now (it has exited): no ping among it.
    while let Some(m) = recv(&sock, Duration::from_millis(1)) {
        assert!(!m.contains("WATCHDOG=1"), "{m:?}");
    }

    let d = w.daemon(&[]);
    // /readyz answers as soon as the listeners are served, just before the daemon logs
    // that it is ready: wait for the line.
    d.wait_log("paddock daemon ready", Duration::from_secs(10));
    assert!(!d.log_text().contains("sd_notify"), "{}", d.log_text());
}
