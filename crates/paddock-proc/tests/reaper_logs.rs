//! The reaper's log lines reach a `tracing` subscriber that writes to a file on an fd of 3
//! or more. The reaper thread works in a private fd table in which such an fd is closed (or
//! is one of its own pidfds), so it must not run the subscriber itself: it hands its lines
//! to the delivery thread. (Its own test binary: the subscriber and SIGCHLD's disposition
//! are process-global.) Needs no root: the children run in the caller's cgroup.

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use paddock_proc::{Command, ExitStatus};

#[test]
fn reaper_lines_reach_a_log_file_on_a_high_fd() {
    // The log file: a memfd (nothing to clean up), numbered 3 or more like any file a
    // daemon opens for its log.
    let file = std::fs::File::from(
        rustix::fs::memfd_create("paddock-log", rustix::fs::MemfdFlags::CLOEXEC).unwrap(),
    );
    assert!(file.as_raw_fd() >= 3);
    let file = Arc::new(file);
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(file.clone())
            .with_ansi(false)
            .with_thread_names(true)
            .finish(),
    )
    .unwrap();
    // SAFETY: sets SIGCHLD's disposition to SIG_IGN; no handler is involved, and this test
    // binary runs only this test, so nothing else depends on the disposition. The reaper
    // warns about it at its start, and about every child the kernel then reaps by itself:
    // lines of the reaper thread.
    let old = unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR);
    for _ in 0..3 {
        let p = Command::new("/bin/sleep").arg("0.1").spawn().unwrap();
        assert_eq!(p.wait_blocking(), ExitStatus::Unknown);
    }
    // SAFETY: restores the previous disposition (SIG_DFL).
    unsafe { libc::signal(libc::SIGCHLD, old) };

    let mut text = String::new();
    let mut f = &*file;
    f.rewind().unwrap();
    f.read_to_string(&mut text).unwrap();
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        lines("SIGCHLD is SIG_IGN"),
        1,
        "start-up warning missing:\n{text}"
    );
    assert_eq!(
        lines("its exit status is unknown"),
        3,
        "lost-child warnings missing:\n{text}"
    );
    // None of them was logged by the reaper thread itself.
    assert_eq!(lines("paddock-reaper"), 0, "{text}");
}
