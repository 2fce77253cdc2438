//! The reaper's failure policy, for real: a start-up failure (no fd left for its eventfd)
//! is a `SpawnError`, not a panic that poisons every later spawn, and the next attempt
//! starts it; a reaper thread that dies (here: a `tracing` subscriber that panics on the
//! delivery thread) is reported by `reaper_health`, and spawns fail instead of starting
//! children that nobody would reap. (Its own test binary: the reaper, the fd limit and the
//! subscriber are process-global.) Needs no root: everything runs in the caller's cgroup.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use paddock_proc::{Command, ExitStatus, ReaperHealth, SpawnError, Stdio, reaper_health};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A layer that panics on the first event logged by the reaper's delivery thread once
/// armed.
struct PanicOnDelivery(Arc<AtomicBool>);

impl<S: tracing::Subscriber> Layer<S> for PanicOnDelivery {
    fn on_event(&self, _event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        if std::thread::current().name() == Some("paddock-deliver")
            && self.0.swap(false, Ordering::SeqCst)
        {
            panic!("test subscriber panics on the delivery thread");
        }
    }
}

/// Restores the fd limit on drop (also when an assertion fails while it is lowered).
struct Nofile(Rlimit);

impl Nofile {
    fn set(current: u64) -> Nofile {
        let old = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(current),
                maximum: old.maximum,
            },
        )
        .unwrap();
        Nofile(old)
    }
}

impl Drop for Nofile {
    fn drop(&mut self) {
        setrlimit(Resource::Nofile, self.0).unwrap();
    }
}

#[test]
fn start_failure_is_an_error_and_a_dead_reaper_is_reported() {
    let armed = Arc::new(AtomicBool::new(false));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(PanicOnDelivery(armed.clone())),
    )
    .unwrap();
    assert_eq!(reaper_health(), ReaperHealth::NotStarted);
    assert!(reaper_health().is_healthy());

    // 1. No fd can be opened: the start-up fails at its first step, with the errno.
    let limit = Nofile::set(0);
    let e = paddock_proc::start_reaper().unwrap_err();
    assert!(
        matches!(
            e,
            SpawnError::ReaperStart {
                op: "eventfd",
                errno: libc::EMFILE
            }
        ),
        "{e:?}"
    );
    // A spawn fails the same way (it starts the reaper first), and panics nowhere.
    let e = Command::new("/bin/true").spawn().unwrap_err();
    assert_eq!(e.errno(), Some(libc::EMFILE), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("eventfd") && msg.contains("EMFILE") && msg.contains("ulimit -n"),
        "{msg}"
    );
    drop(limit);
    let health = reaper_health();
    assert_eq!(
        health,
        ReaperHealth::StartFailed {
            op: "eventfd",
            errno: libc::EMFILE
        }
    );
    assert!(!health.is_healthy());
    assert!(health.to_string().contains("EMFILE"), "{health}");

    // 2. With fds again, the next spawn starts it.
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(reaper_health(), ReaperHealth::Running);

    // 3. The delivery thread dies: the first line it logs (an orphan's exit) panics in the
    //    subscriber. The orphan exits once we close the pipe on its fd 3, after its parent
    //    has exited (so it is reparented to us, the subreaper, and reaped by the reaper).
    paddock_proc::set_child_subreaper().unwrap();
    let mut p = Command::new("/bin/sh")
        .args(["-c", "sh -c 'read x <&3; exit 5' >/dev/null & exit 0"])
        .fd(3, Stdio::PipeToChild)
        .spawn()
        .unwrap();
    let release = p.take_pipe(3).unwrap();
    assert_eq!(p.wait_blocking(), ExitStatus::Exited(0));
    armed.store(true, Ordering::SeqCst);
    drop(release);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The sweep must be the reaper's own (`reap_orphans` reaps an orphan on the calling
    // thread when it can, and would log the exit here): ask for it until the reaper reports
    // the death.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while reaper_health().is_healthy() {
                paddock_proc::request_orphan_sweep();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    })
    .expect("the delivery thread's death was not reported within 10 s");
    let health = reaper_health();
    match &health {
        ReaperHealth::Dead { thread, reason } => {
            assert_eq!(*thread, "paddock-deliver");
            assert!(reason.contains("test subscriber panics"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!health.is_healthy());
    assert!(health.to_string().starts_with("dead"), "{health}");

    // 4. Spawns now fail (nothing would report their exit), and keep failing.
    for _ in 0..2 {
        let e = Command::new("/bin/true").spawn().unwrap_err();
        assert!(
            matches!(
                &e,
                SpawnError::ReaperDead {
                    thread: "paddock-deliver",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("restart the process"), "{e}");
    }
    assert!(paddock_proc::start_reaper().is_err());
    // reap_orphans does not wait for a sweep that will never be reported.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), paddock_proc::reap_orphans()).await
    })
    .expect("reap_orphans waits on a dead reaper");
    assert!(common::zombie_children().is_empty());
}
