//! Cancellation at every await point: each async operation of the
//! supervisor — `start` (one that succeeds and one that fails after its cgroup exists),
//! `stop`, `kill`, `pause`, `resume`, `wait_stopped` — is polled by hand and dropped at its
//! N-th `Pending`, for N = 0, 1, 2, … until the operation completes without being dropped.
//!
//! Each `Pending` is a real await point: the operation is only polled again when its waker
//! fires (the driver hands its own task's context down, see [`drive`]), so N counts the
//! times the operation actually waited — on the hooks' record writes, on the op lock, on
//! the stop's outcome, on a spawned task, on the removal's cgroup events. The supervisor
//! runs with hooks whose record writes each wait once (like the daemon's group-committing
//! store), so the start and the graceful stop have the await points a daemon gives them.
//!
//! After every drop, checked against the cgroup filesystem and `/proc` (not the
//! supervisor's word): the sandbox's state settles to one that agrees with its cgroup (no
//! lifecycle left in `creating`; the cgroup exists exactly while the sandbox is running or
//! stopping; `cgroup.freeze` is 1 exactly when it says paused), a retry of the operation or
//! a stop succeeds, and afterwards nothing is left: no cgroup under the root, no process in
//! the root's hierarchy, no process carrying the sandbox's tag.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::{
    Config, Error as SupError, Hooks, LifecycleId, Network, Persisting, Record, SandboxId,
    SandboxSpec, State, StopPolicy, Supervisor,
};
use paddock_torture::check;

/// The whole file must stay well below this.
const BUDGET: Duration = Duration::from_secs(30);
/// A sweep giving up: an operation that still has not completed after this many drops.
const MAX_AWAIT_POINTS: usize = 64;

/// Record writes that each wait once before they are done (a store committing in another
/// task), so `start` and a graceful `stop` have the await points the daemon gives them.
struct YieldingHooks;

impl Hooks for YieldingHooks {
    fn before_create(&self, _rec: &Record) -> Persisting {
        Box::pin(async {
            tokio::task::yield_now().await;
            Ok(())
        })
    }
    fn on_change(&self, _rec: &Record) -> Persisting {
        Box::pin(async {
            tokio::task::yield_now().await;
            Ok(())
        })
    }
}

/// How a driven operation ended.
enum Driven<T> {
    /// It completed.
    Done(T),
    /// It was dropped at its `drop_at`-th `Pending` (counting from 0).
    Dropped,
}

/// Polls `fut` inside the calling task and drops it when it returns `Pending` for the
/// `drop_at`-th time (0: the first). The driver passes its own context down, so between
/// two polls the operation's waker must have fired (or the runtime polled spuriously):
/// every counted `Pending` is the operation waiting on something, and the other tasks of
/// the runtime (the supervisor's stop and pause tasks, its monitors) run meanwhile.
async fn drive<F: Future>(fut: F, drop_at: usize) -> Driven<F::Output> {
    let mut fut = pin!(fut);
    let mut pendings = 0;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Driven::Done(v)),
        Poll::Pending if pendings == drop_at => Poll::Ready(Driven::Dropped),
        Poll::Pending => {
            pendings += 1;
            Poll::Pending
        }
    })
    .await
    // `fut` is dropped here, at its `drop_at`-th await point.
}

struct Env {
    sup: Supervisor,
    root: PathBuf,
    hier: String,
    scratch: PathBuf,
    t0: Instant,
}

impl Env {
    fn new(t: &paddock_testutil::TestRoot, name: &str) -> Env {
        let root = Root::open_or_create(&t.path().join(name)).expect("managed root");
        let mut cfg = Config::new(root.clone());
        cfg.hooks = Arc::new(YieldingHooks);
        cfg.remove_timeout = Duration::from_secs(5);
        let scratch =
            std::env::temp_dir().join(format!("paddock-cancel-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        Env {
            sup: Supervisor::new(cfg).expect("supervisor"),
            root: root.path().to_path_buf(),
            hier: root.hierarchy_path().to_owned(),
            scratch,
            t0: Instant::now(),
        }
    }

    /// A payload whose two processes ignore SIGTERM, so a graceful stop has to wait out its
    /// grace period (100 ms) and kill.
    fn spec(&self, id: &SandboxId) -> SandboxSpec {
        let mut spec = SandboxSpec::new(
            id.clone(),
            "/bin/sh",
            ["-c", "trap '' TERM; sleep 300 & exec sleep 300"],
        );
        spec.network = Network::Host;
        spec.env.insert("TORTURE_TAG".into(), id.to_string());
        spec.stop = StopPolicy {
            grace_period_ms: 100,
            ..StopPolicy::default()
        };
        spec
    }

    /// The cgroup directories of `id` under the root (any lifecycle).
    fn dirs_of(&self, id: &SandboxId) -> Vec<PathBuf> {
        let prefix = format!("{id}{}", paddock_supervisor::CGROUP_SEPARATOR);
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// Whether the supervisor's view of `id` agrees with the cgroup filesystem, or why not.
    fn agrees(&self, id: &SandboxId) -> Result<(), String> {
        let dirs = self.dirs_of(id);
        let Some(i) = self.sup.get(id) else {
            return if dirs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "unknown to the supervisor but its cgroups exist: {dirs:?}"
                ))
            };
        };
        let exists = i.cgroup_path.is_dir();
        let others: Vec<_> = dirs.iter().filter(|d| **d != i.cgroup_path).collect();
        if !others.is_empty() {
            return Err(format!("cgroups of other lifecycles exist: {others:?}"));
        }
        match i.state {
            State::Creating => Err(format!("lifecycle {} is stuck in `creating`", i.lifecycle)),
            State::Running => {
                if !exists {
                    return Err(format!(
                        "running, but its cgroup {} does not exist",
                        i.cgroup_path.display()
                    ));
                }
                let frozen = read(&i.cgroup_path.join("cgroup.freeze")) == "1";
                if frozen != i.paused {
                    return Err(format!(
                        "reports paused={} but cgroup.freeze is {}",
                        i.paused,
                        u8::from(frozen)
                    ));
                }
                if let Some(pid) = i.pid
                    && i.main_exit.is_none()
                    && check::alive(pid)
                    && check::proc_cgroup(pid)
                        .is_some_and(|c| !i.cgroup_path.ends_with(c.trim_start_matches('/')))
                {
                    return Err(format!(
                        "main process {pid} is outside the sandbox's cgroup"
                    ));
                }
                Ok(())
            }
            State::Stopping | State::Quarantined => Ok(()),
            State::Stopped | State::Failed => {
                if exists {
                    Err(format!(
                        "{:?}, but its cgroup {} still exists",
                        i.state,
                        i.cgroup_path.display()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Waits (the runtime's other tasks run meanwhile) until [`Env::agrees`] holds; a
    /// dropped operation may have left work that finishes in its own task (a stop, a
    /// pause). Fails the test when it does not settle within 12 s (the freeze wait of an
    /// abandoned pause is bounded by 10 s).
    async fn settle(&self, what: &str, id: &SandboxId) {
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            match self.agrees(id) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("{what}: {id}: the supervisor and the cgroup disagree: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Nothing of `id` is left: no cgroup of it, no process in the root's hierarchy, no
    /// process carrying its tag; then the supervisor forgets it.
    async fn assert_clean(&self, what: &str, id: &SandboxId) {
        let dirs = self.dirs_of(id);
        assert!(dirs.is_empty(), "{what}: {id}: cgroups left: {dirs:?}");
        let sub = check::subdirs(&self.root);
        assert!(
            sub.is_empty(),
            "{what}: {id}: cgroups left under the root: {sub:?}"
        );
        let hier = self.hier.clone();
        let tag = id.to_string();
        let (procs, tagged) = tokio::task::spawn_blocking(move || {
            (
                check::procs_under_hierarchy(&hier),
                check::tagged_survivors(&tag, &[], Duration::from_millis(100)),
            )
        })
        .await
        .unwrap();
        assert!(
            procs.is_empty(),
            "{what}: {id}: processes in the root: {procs:?}"
        );
        assert!(
            tagged.is_empty(),
            "{what}: {id}: tagged survivors: {tagged:?}"
        );
        let _ = self.sup.forget(id);
    }

    async fn start(&self, id: &SandboxId) -> LifecycleId {
        self.sup
            .start(self.spec(id))
            .await
            .unwrap_or_else(|e| panic!("start {id}: {e}"))
            .info
            .lifecycle
    }

    /// Stops `lc` of `id` (retrying is allowed at any point) and checks it stopped.
    async fn stop_ok(&self, what: &str, id: &SandboxId, lc: LifecycleId) {
        let r = self.sup.stop(id, Some(lc)).await;
        let r = r.unwrap_or_else(|e| panic!("{what}: {id}: stop after the drop: {e}"));
        assert!(r.stuck.is_empty(), "{what}: {id}: stuck: {:?}", r.stuck);
        let st = self.sup.get_lifecycle(id, lc).map(|i| i.state);
        assert_eq!(st, Some(State::Stopped), "{what}: {id}");
        self.settle(what, id).await;
    }

    fn check_budget(&self, what: &str) {
        assert!(
            self.t0.elapsed() < BUDGET,
            "{what}: the sweep took {:?}, over its {BUDGET:?} budget",
            self.t0.elapsed()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn id(op: &str, n: usize) -> SandboxId {
    SandboxId::new(format!("cancel-{op}-{n}")).unwrap()
}

/// Runs `case(n)` for n = 0, 1, 2, … until it reports that the operation completed
/// without being dropped; returns the number of await points it was dropped at.
async fn sweep<F, Fut>(env: &Env, op: &str, mut case: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    for n in 0..MAX_AWAIT_POINTS {
        if case(n).await {
            eprintln!(
                "{op}: dropped at each of {n} await points, completed at the next ({:?})",
                env.t0.elapsed()
            );
            return n;
        }
        env.check_budget(op);
    }
    panic!("{op}: still not complete after being dropped at {MAX_AWAIT_POINTS} await points");
}

// `Supervisor::start` runs in the caller's future, which can be dropped at any await point
// (the record write `before_create`, the clean-up `remove` of a failed spawn; the daemon's
// `POST /v1/sandboxes` handler is dropped that way when the client disconnects). Such a
// drop must fail the start and remove its cgroup, never leave the lifecycle in `creating`
// holding the ID.
#[tokio::test(flavor = "current_thread")]
async fn start_dropped_at_every_await_point() {
    let test = "start_dropped_at_every_await_point";
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let env = Env::new(&t, "start");
    let points = sweep(&env, "start", |n| {
        let env = &env;
        async move {
            let id = id("start", n);
            match drive(env.sup.start(env.spec(&id)), n).await {
                Driven::Done(r) => {
                    let lc = r
                        .unwrap_or_else(|e| panic!("start {id}: {e}"))
                        .info
                        .lifecycle;
                    env.settle("start", &id).await;
                    env.stop_ok("start", &id, lc).await;
                    env.assert_clean("start", &id).await;
                    true
                }
                Driven::Dropped => {
                    env.settle("start dropped", &id).await;
                    // Whatever the drop left is either running (and stops) or gone (and a
                    // retry starts it).
                    let lc = match env.sup.get(&id) {
                        Some(i) if i.state == State::Running => i.lifecycle,
                        _ => env.start(&id).await,
                    };
                    env.stop_ok("start dropped", &id, lc).await;
                    env.assert_clean("start dropped", &id).await;
                    false
                }
            }
        }
    })
    .await;
    assert!(
        points >= 1,
        "start never waited: the hooks' record writes are await points"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn failing_start_dropped_at_every_await_point() {
    let test = "failing_start_dropped_at_every_await_point";
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let env = Env::new(&t, "badcwd");
    // The spawn fails (no such working directory) after the cgroup was created; the
    // clean-up that removes it has await points of its own when the cgroup is busy.
    let bad = |id: &SandboxId| {
        let mut s = env.spec(id);
        s.cwd = Some("/nonexistent-paddock-cancellation".into());
        s
    };
    sweep(&env, "failing start", |n| {
        let env = &env;
        async move {
            let id = id("badcwd", n);
            let done = match drive(env.sup.start(bad(&id)), n).await {
                Driven::Done(r) => {
                    let e = r
                        .err()
                        .unwrap_or_else(|| panic!("{id}: started in a bad cwd"));
                    assert!(
                        e.to_string().contains("nonexistent-paddock-cancellation"),
                        "{id}: the error does not name the cwd: {e}"
                    );
                    true
                }
                Driven::Dropped => false,
            };
            env.settle("failing start", &id).await;
            if let Some(i) = env.sup.get(&id) {
                assert_eq!(i.state, State::Failed, "{id}: {i:?}");
            }
            // A retry is not refused as a duplicate (no lifecycle left holding the ID) and
            // fails the same clear way.
            match env.sup.start(bad(&id)).await {
                Err(SupError::AlreadyExists(_)) => {
                    panic!("{id}: the dropped start still holds the ID")
                }
                Err(_) => {}
                Ok(_) => panic!("{id}: retry started in a bad cwd"),
            }
            env.settle("failing start retried", &id).await;
            env.assert_clean("failing start", &id).await;
            done
        }
    })
    .await;
}

/// `stop` (graceful, 100 ms grace against a payload that ignores SIGTERM) or `kill`.
async fn stop_sweep(test: &str, op: &'static str) {
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let env = Env::new(&t, op);
    let points = sweep(&env, op, |n| {
        let env = &env;
        async move {
            let id = id(op, n);
            let lc = env.start(&id).await;
            let fut = async {
                if op == "kill" {
                    env.sup.kill(&id, Some(lc)).await
                } else {
                    env.sup.stop(&id, Some(lc)).await
                }
            };
            let done = match drive(fut, n).await {
                Driven::Done(r) => {
                    r.unwrap_or_else(|e| panic!("{op} {id}: {e}"));
                    true
                }
                Driven::Dropped => {
                    env.settle(op, &id).await;
                    false
                }
            };
            // A stop after the drop (joining a stop in progress or starting one) succeeds.
            env.stop_ok(op, &id, lc).await;
            env.assert_clean(op, &id).await;
            done
        }
    })
    .await;
    assert!(points >= 1, "{op} never waited for its outcome");
}

#[tokio::test(flavor = "current_thread")]
async fn stop_dropped_at_every_await_point() {
    stop_sweep("stop_dropped_at_every_await_point", "stop").await;
}

#[tokio::test(flavor = "current_thread")]
async fn kill_dropped_at_every_await_point() {
    stop_sweep("kill_dropped_at_every_await_point", "kill").await;
}

/// `pause`, or `resume` of a paused sandbox.
async fn pause_sweep(test: &str, op: &'static str) {
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let env = Env::new(&t, op);
    let pause = op == "pause";
    let points = sweep(&env, op, |n| {
        let env = &env;
        async move {
            let id = id(op, n);
            let lc = env.start(&id).await;
            if !pause {
                env.sup.pause(&id, Some(lc)).await.expect("pause");
            }
            let done = match drive(env.sup.set_paused_for_test(&id, lc, pause), n).await {
                Driven::Done(r) => {
                    let i = r.unwrap_or_else(|e| panic!("{op} {id}: {e}"));
                    assert_eq!(i.paused, pause, "{op} {id}");
                    true
                }
                Driven::Dropped => false,
            };
            env.settle(op, &id).await;
            // A retry succeeds (after the abandoned one, which finishes in its own task)
            // and leaves the cgroup's freeze state as reported.
            let i = if pause {
                env.sup.pause(&id, Some(lc)).await
            } else {
                env.sup.resume(&id, Some(lc)).await
            }
            .unwrap_or_else(|e| panic!("{op} {id}: retry after the drop: {e}"));
            assert_eq!(i.paused, pause, "{op} {id}: retry");
            let frozen = read(&i.cgroup_path.join("cgroup.freeze")) == "1";
            assert_eq!(frozen, pause, "{op} {id}: cgroup.freeze after the retry");
            env.settle(op, &id).await;
            env.stop_ok(op, &id, lc).await;
            env.assert_clean(op, &id).await;
            done
        }
    })
    .await;
    assert!(points >= 1, "{op} never waited");
}

/// Pause and resume through one name, so the sweep can pick either.
trait SetPaused {
    fn set_paused_for_test(
        &self,
        id: &SandboxId,
        lc: LifecycleId,
        pause: bool,
    ) -> impl Future<Output = Result<paddock_supervisor::SandboxInfo, SupError>>;
}

impl SetPaused for Supervisor {
    async fn set_paused_for_test(
        &self,
        id: &SandboxId,
        lc: LifecycleId,
        pause: bool,
    ) -> Result<paddock_supervisor::SandboxInfo, SupError> {
        if pause {
            self.pause(id, Some(lc)).await
        } else {
            self.resume(id, Some(lc)).await
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pause_dropped_at_every_await_point() {
    pause_sweep("pause_dropped_at_every_await_point", "pause").await;
}

#[tokio::test(flavor = "current_thread")]
async fn resume_dropped_at_every_await_point() {
    pause_sweep("resume_dropped_at_every_await_point", "resume").await;
}

#[tokio::test(flavor = "current_thread")]
async fn wait_stopped_dropped_at_every_await_point() {
    let test = "wait_stopped_dropped_at_every_await_point";
    let Some(t) = paddock_testutil::test_root(test) else {
        return;
    };
    let env = Arc::new(Env::new(&t, "wait"));
    let points = sweep(&env.clone(), "wait_stopped", |n| {
        let env = env.clone();
        async move {
            let id = id("wait", n);
            let lc = env.start(&id).await;
            // A stop in a task of its own; the waiter is dropped while it runs.
            let stopper = tokio::spawn({
                let env = env.clone();
                let id = id.clone();
                async move { env.sup.stop(&id, Some(lc)).await }
            });
            let done = match drive(env.sup.wait_stopped(&id, Some(lc)), n).await {
                Driven::Done(r) => {
                    r.unwrap_or_else(|e| panic!("wait_stopped {id}: {e}"));
                    true
                }
                Driven::Dropped => false,
            };
            env.settle("wait_stopped", &id).await;
            // A new waiter gets the stop's own report.
            let again = env
                .sup
                .wait_stopped(&id, Some(lc))
                .await
                .unwrap_or_else(|e| panic!("wait_stopped {id} after the drop: {e}"));
            let stopped = stopper.await.unwrap().expect("the stop");
            assert_eq!(again, stopped, "{id}: the waiter and the stop disagree");
            env.stop_ok("wait_stopped", &id, lc).await;
            env.assert_clean("wait_stopped", &id).await;
            done
        }
    })
    .await;
    assert!(points >= 1, "wait_stopped never waited");
}
