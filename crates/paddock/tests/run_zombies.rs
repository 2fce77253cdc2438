//! `paddock run` reaps what its sandbox leaves: a payload that makes thousands of
//! short-lived double-forked daemons, and daemon chains (each daemon forks the next and
//! exits, like `stress-ng --daemon`) still forking when the main process exits and the stop
//! kills them. paddock is a child subreaper, so all of them are reparented to it; when
//! `paddock run` returns, none of them may be left — zombie or running — to be handed on
//! to init.
//!
//! This binary has one test: the test process makes itself a child subreaper, so whatever
//! `paddock run` leaves when it exits is handed to it, where the test sees it.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

/// 2,000 double-forked daemons that exit at once (each orphaned grandchild is reparented
/// to paddock and becomes its zombie), then 4 daemon chains that keep forking, running
/// when the main process exits. Perl: Debian always has it.
const STORM: &str = r#"exec perl -e '
    for (1..2000) {
        my $p = fork();
        if (defined $p && $p == 0) { my $q = fork(); exit 0 }
        waitpid($p, 0) if $p;
    }
    for (1..4) {
        my $p = fork();
        if (defined $p && $p == 0) {
            while (1) { my $c = fork(); exit 0 if $c; }
        }
    }
    select(undef, undef, undef, 0.5);
    exit 0'"#;

fn set_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
}

/// Children of this process (all threads), zombies included.
fn own_children() -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

#[test]
fn run_leaves_no_orphan_zombie_or_running() {
    let Some(w) = world("run_zombies_run_leaves_no_orphan") else {
        return;
    };
    set_subreaper();
    for round in 0..2 {
        let t0 = Instant::now();
        let mut child = Command::new(BIN)
            .args(["run", "--cgroup-root"])
            .arg(&w.cgroot)
            .args(["--summary", "--", "sh", "-c", STORM])
            .env_remove("PADDOCK_CGROUP_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "round {round}: {err}");
        // Right after `paddock run` is reaped: anything it left is this process's child now.
        let left = own_children();
        let mut zombies = 0;
        let mut running = Vec::new();
        for pid in &left {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(s)
                    if s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
                {
                    zombies += 1
                }
                Ok(s) => running.push(s),
                Err(_) => {}
            }
        }
        // Reap them, so a failure leaves nothing for init either.
        loop {
            let mut s = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut s, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
        }
        eprintln!(
            "run_zombies: round {round}: {:?}; children left to the test: {} ({zombies} zombies); {}",
            t0.elapsed(),
            left.len(),
            err.lines().last().unwrap_or_default()
        );
        assert!(
            left.is_empty(),
            "round {round}: paddock run left {} children ({zombies} zombies, running: {running:?})",
            left.len()
        );
        w.assert_no_leaks();
    }
}
