//! The reaper as a child subreaper: an orphaned grandchild is reaped and reported.
//! (Its own test binary: the reaper and the subreaper flag are process-global.)

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use paddock_proc::{Command, ExitStatus, OrphanExit};

#[test]
fn orphaned_grandchild_is_reaped() {
    let Some(root) = paddock_testutil::test_root("orphaned_grandchild_is_reaped") else {
        return;
    };
    paddock_proc::set_child_subreaper().unwrap();
    let (_, cg) = common::leaf(root.path(), "leaf");
    let mut rx = paddock_proc::subscribe_orphans();
    let before = paddock_proc::orphans_reaped();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in common::PATHS {
        let p = Command::new("/bin/sh")
            .args([
                "-c",
                "sh -c 'sleep 0.2; exit 3' >/dev/null & echo $! ; exit 0",
            ])
            .stdout(paddock_proc::Stdio::Pipe)
            .spawn_path(path)
            .spawn_in(cg.as_fd())
            .unwrap();
        let mut p = p;
        let grandchild: i32 = common::read_to_string(p.take_stdout().unwrap())
            .trim()
            .parse()
            .unwrap();
        assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
        let ev: OrphanExit = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await })
            .expect("no orphan exit within 10s")
            .unwrap();
        assert_eq!(
            ev,
            OrphanExit {
                pid: grandchild,
                status: ExitStatus::Exited(3)
            },
            "{path:?}"
        );
        assert!(!common::proc_exists(grandchild));
    }
    assert_eq!(paddock_proc::orphans_reaped() - before, 3);
    assert!(common::zombie_children().is_empty());

    // On demand: an orphan that has died is a zombie until the periodic sweep
    // (`ORPHAN_SWEEP`), unless `reap_orphans` is called: each call returns after a sweep
    // that started after it, so the loop ends as soon as the orphan has exited and been
    // reparented, well before the periodic sweep would come.
    // The orphan exits only when the test closes the pipe on its fd 3, after its parent
    // has exited: an orphan that exited first could be reaped by that parent shell.
    let mut p = Command::new("/bin/sh")
        .args([
            "-c",
            "sh -c 'read x <&3; exit 5' >/dev/null & echo $! ; exit 0",
        ])
        .fd(3, paddock_proc::Stdio::PipeToChild)
        .stdout(paddock_proc::Stdio::Pipe)
        .spawn_in(cg.as_fd())
        .unwrap();
    let release = p.take_pipe(3).unwrap();
    let orphan: i32 = common::read_to_string(p.take_stdout().unwrap())
        .trim()
        .parse()
        .unwrap();
    let reaped = paddock_proc::orphans_reaped();
    assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
    drop(release);
    let t0 = std::time::Instant::now();
    rt.block_on(async {
        while common::proc_exists(orphan) {
            paddock_proc::reap_orphans().await;
            assert!(
                t0.elapsed() < paddock_proc::ORPHAN_SWEEP,
                "orphan {orphan} not reaped on demand"
            );
        }
    });
    assert_eq!(paddock_proc::orphans_reaped(), reaped + 1);
}
