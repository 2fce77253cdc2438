//! With `SIGCHLD` set to `SIG_IGN` the kernel reaps children itself: the reaper must notice,
//! wake waiters with `ExitStatus::Unknown` instead of leaving them waiting forever, and warn
//! at its start. (Its own test binary: the disposition and the reaper are process-global.)

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use paddock_proc::{Command, Delivery, ExitStatus};

#[test]
fn wait_returns_when_sigchld_is_ignored() {
    let Some(root) = paddock_testutil::test_root("wait_returns_when_sigchld_is_ignored") else {
        return;
    };
    let logs = common::capture_logs();
    // SAFETY: sets SIGCHLD's disposition to SIG_IGN; no handler is involved, and this test
    // binary runs only this test, so nothing else depends on the disposition.
    let old = unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR);
    let (_, cg) = common::leaf(root.path(), "leaf");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bound = Duration::from_secs(10);
    for path in common::PATHS {
        for keep in [false, true] {
            // Exits on its own (after 0.1 s, so the legacy path's pidfd_open, which needs
            // the child not yet reaped, always finds it).
            let p = Command::new("/bin/sleep")
                .arg("0.1")
                .spawn_path(path)
                .keep_pidfd(keep)
                .spawn_in(cg.as_fd())
                .unwrap();
            assert_eq!(
                p.wait_timeout(bound),
                Some(ExitStatus::Unknown),
                "{path:?} keep={keep}: wait hangs"
            );
            assert_eq!(p.signal(libc::SIGTERM).unwrap(), Delivery::AlreadyExited);
            assert!(p.open_pidfd().is_err());

            // Killed; awaited asynchronously.
            let p = Command::new("/bin/sleep")
                .arg("30")
                .spawn_path(path)
                .keep_pidfd(keep)
                .spawn_in(cg.as_fd())
                .unwrap();
            assert_eq!(p.kill().unwrap(), Delivery::Delivered);
            let st = rt
                .block_on(async { tokio::time::timeout(bound, p.wait()).await })
                .unwrap_or_else(|_| panic!("{path:?} keep={keep}: async wait hangs"));
            assert_eq!(st, ExitStatus::Unknown);
            assert_eq!(st.code(), None);
            assert!(!st.success());
            assert_eq!(p.kill().unwrap(), Delivery::AlreadyExited);

            // An exec failure still returns (the spawn waits for the failed child).
            let e = Command::new("/bin/nosuch")
                .spawn_path(path)
                .spawn_in(cg.as_fd())
                .unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        }
    }
    assert_eq!(paddock_proc::children_running(), 0);
    let text = logs.text();
    assert_eq!(
        logs.lines_with(&["WARN", "SIGCHLD is SIG_IGN"]).len(),
        1,
        "reaper start warning missing:\n{text}"
    );
    // One "status unknown" warning per lost child: 3 paths x 2 x 3 children.
    assert_eq!(
        logs.lines_with(&["WARN", "its exit status is unknown"])
            .len(),
        18,
        "{text}"
    );
}
