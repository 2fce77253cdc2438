//! 1,000 short-lived processes into cgroups leave no zombies and no fds behind.
//! (Its own test binary so that fd counts are not disturbed by other tests.)

mod common;

use std::fs;
use std::os::fd::AsFd;

use paddock_proc::{Command, ExitStatus, SpawnPath, Stdio};

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn thousand_spawns_leave_nothing_behind() {
    let Some(root) = paddock_testutil::test_root("thousand_spawns") else {
        return;
    };
    let (_, a) = common::leaf(root.path(), "a");
    let (_, b) = common::leaf(root.path(), "b");
    // Warm up (reaper thread, lazily opened fds) before counting.
    Command::new("/bin/true")
        .spawn_in(a.as_fd())
        .unwrap()
        .wait_blocking();
    let fds_before = fd_count();
    let reaped_before = paddock_proc::children_reaped();
    for i in 0..1000 {
        let cg = if i % 2 == 0 { a.as_fd() } else { b.as_fd() };
        let path = match i % 10 {
            0 => SpawnPath::LegacyClone,
            1 => SpawnPath::Clone3WithoutIntoCgroup,
            _ => SpawnPath::Auto,
        };
        let mut c = Command::new("/bin/true");
        c.spawn_path(path).keep_pidfd(i % 4 == 0);
        if i % 3 == 0 {
            c.stdout(Stdio::Pipe).stderr(Stdio::Null);
        }
        let p = c.spawn_in(cg).unwrap();
        assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
        if i % 7 == 0 {
            // Exec failures too.
            Command::new("/bin/nosuch")
                .spawn_path(path)
                .spawn_in(cg)
                .unwrap_err();
        }
    }
    assert_eq!(fd_count(), fds_before, "fds leaked");

    // With keep_pidfd, each live child holds exactly one fd (its pidfd), on every path,
    // and it is closed with the `Process`.
    for path in common::PATHS {
        let kids: Vec<_> = (0..50)
            .map(|_| {
                Command::new("/bin/sleep")
                    .arg("30")
                    .spawn_path(path)
                    .keep_pidfd(true)
                    .spawn_in(a.as_fd())
                    .unwrap()
            })
            .collect();
        assert_eq!(fd_count(), fds_before + 50, "{path:?}");
        for k in &kids {
            assert_eq!(k.kill().unwrap(), paddock_proc::Delivery::Delivered);
        }
        for k in &kids {
            assert_eq!(k.wait_blocking().signal(), Some(libc::SIGKILL));
        }
        assert_eq!(fd_count(), fds_before + 50, "{path:?}: held until dropped");
        drop(kids);
        assert_eq!(fd_count(), fds_before, "{path:?}");
    }
    assert!(paddock_proc::children_reaped() - reaped_before >= 1000);
    assert_eq!(paddock_proc::children_running(), 0);
    assert!(
        common::zombie_children().is_empty(),
        "zombies: {:?}",
        common::zombie_children()
    );
}
