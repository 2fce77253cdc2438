//! The check after each stop (`check::after_stop`) finds what a stop left behind — a cgroup
//! directory of the sandbox under the root, with a process in a nested child, and a live
//! process carrying the sandbox's tag outside it — reports both, removes them, and leaves
//! another sandbox's cgroup alone.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use paddock_supervisor::CGROUP_SEPARATOR;
use paddock_torture::check;

/// Kills and reaps the child on drop, whatever the test did.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// Whether it exited within `timeout`.
    fn exits_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.0.try_wait().expect("try_wait").is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn tagged_sleep(tag: &str) -> Reaped {
    Reaped(
        Command::new("/bin/sleep")
            .arg("300")
            .env("TORTURE_TAG", tag)
            .spawn()
            .expect("spawn sleep"),
    )
}

#[test]
fn after_stop_finds_and_removes_a_left_cgroup_and_an_escaped_process() {
    let test = "after_stop_finds_and_removes_a_left_cgroup_and_an_escaped_process";
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let root = t.path();
    let id = "t7-wrapper";
    // As the runner tags a sandbox: `<runner pid>.<run>.<sandbox ID>`.
    let tag = format!("{}.0.{id}", std::process::id());
    let left = root.join(format!("{id}{CGROUP_SEPARATOR}0123"));
    let nested = left.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    let other = root.join(format!("{id}2{CGROUP_SEPARATOR}0123"));
    std::fs::create_dir(&other).unwrap();

    let mut inside = tagged_sleep(&tag);
    std::fs::write(nested.join("cgroup.procs"), inside.0.id().to_string()).unwrap();
    let mut escaped = tagged_sleep(&tag);
    let pidfile =
        std::env::temp_dir().join(format!("paddock-torture-{test}.{}", std::process::id()));
    std::fs::write(&pidfile, format!("{}\n", inside.0.id())).unwrap();

    let found = check::after_stop(root, id, &tag, &pidfile);
    let _ = std::fs::remove_file(&pidfile);

    assert!(
        found
            .iter()
            .any(|(k, d)| *k == "cgroup" && d.contains(&left.display().to_string())),
        "the left cgroup was not reported: {found:?}"
    );
    assert!(
        found.iter().any(|(k, d)| *k == "process"
            && d.contains(&format!("pid {} ", escaped.0.id()))
            && d.contains("found by /proc environ scan")),
        "the escaped process was not reported: {found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(!left.exists(), "{} was not removed", left.display());
    assert!(other.is_dir(), "another sandbox's cgroup was removed");
    assert!(
        inside.exits_within(Duration::from_secs(10)),
        "the process in the left cgroup is still running"
    );
    assert!(
        escaped.exits_within(Duration::from_secs(10)),
        "the escaped process is still running"
    );
    assert!(check::sandbox_cgroups(root, id).is_empty());
}
