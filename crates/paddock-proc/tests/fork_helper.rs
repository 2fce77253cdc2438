//! `fork_helper` against the real kernel, in a process of one thread (no test harness):
//! the copy runs the closure and exits with its code, a panic is status 101, the copy is a
//! child held by pidfd and reaped by the reaper (no zombie), its inherited pipe carries
//! what it writes, and once a second thread exists the call is refused without forking.
//! Needs no root.

use std::io::{Read, Write};
use std::time::Duration;

use paddock_proc::{ExitStatus, SpawnError, fork_helper};

fn main() {
    // Before any thread: the copy runs the closure, with what it captured.
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    let (mut r, w) = (std::fs::File::from(r), std::fs::File::from(w));
    let message = String::from("from the copy");
    let w = std::cell::RefCell::new(Some(w));
    let p = fork_helper(|| {
        let mut w = w.borrow_mut().take().expect("the write end");
        w.write_all(message.as_bytes()).expect("write");
        7
    })
    .expect("fork_helper in a process of one thread");
    assert!(p.pid() > 0);
    assert!(p.pidfd().is_some(), "the copy is held by pidfd");
    drop(w.into_inner());
    let mut got = String::new();
    r.read_to_string(&mut got).expect("read");
    assert_eq!(got, "from the copy");
    assert_eq!(
        p.wait_timeout(Duration::from_secs(10)),
        Some(ExitStatus::Exited(7))
    );
    println!("fork_helper: the copy ran the closure and exited with its code: ok");

    // The reaper thread exists now (the first helper started it): a second call is
    // refused, naming the threads, and forks nothing.
    let before = children();
    let e = fork_helper(|| 0).expect_err("refused in a process of several threads");
    assert!(
        matches!(&e, SpawnError::Invalid(m) if m.contains("threads")),
        "unexpected error: {e}"
    );
    assert_eq!(children(), before, "nothing was forked");
    println!("fork_helper: refused once a second thread exists: ok");
}

/// This process's children (from `/proc/self/task/*/children`).
fn children() -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let t = t.expect("task entry");
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(c.split_whitespace().map(str::to_owned));
        }
    }
    out.sort();
    out
}
