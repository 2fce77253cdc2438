//! Shared helpers for the supervisor's root tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::{Config, SandboxId, SandboxSpec, StopPolicy, Supervisor};
use paddock_testutil::TestRoot;

/// A supervisor over a managed root inside a per-test cgroup, plus a scratch directory.
pub struct Env {
    pub sup: Supervisor,
    pub scratch: Scratch,
    pub root: Root,
    // Dropped last: kills and removes everything the test created.
    pub t: TestRoot,
}

pub fn env(test: &str) -> Option<Env> {
    env_with(test, |_| {})
}

pub fn env_with(test: &str, f: impl FnOnce(&mut Config)) -> Option<Env> {
    let t = paddock_testutil::test_root(test)?;
    t.enable_all_controllers();
    let root = Root::open_or_create(&t.path().join("sandboxes")).expect("managed root");
    let scratch = Scratch::new(test);
    let mut cfg = Config::new(root.clone());
    cfg.log_dir = Some(scratch.0.join("logs"));
    f(&mut cfg);
    let sup = Supervisor::new(cfg).expect("supervisor");
    Some(Env {
        sup,
        scratch,
        root,
        t,
    })
}

impl Env {
    /// Asserts the managed root is empty and no process is left in the test's subtree.
    pub fn assert_no_leaks(&self) {
        let left = paddock_testutil::procs_recursive(self.t.path());
        assert!(
            left.is_empty(),
            "processes left in {}: {left:?}",
            self.t.path().display()
        );
        let (names, other) = self.root.list().unwrap();
        assert!(
            names.is_empty() && other.is_empty(),
            "cgroups left: {names:?} {other:?}"
        );
    }
}

/// A temporary directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("paddock-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

pub fn sh(id_: &str, script: &str) -> SandboxSpec {
    let mut s = SandboxSpec::new(id(id_), "/bin/sh", ["-c", script]);
    s.stop = StopPolicy {
        grace_period_ms: 2_000,
        ..StopPolicy::default()
    };
    s
}

/// Waits (bounded) for a file written by a payload to say it is ready.
pub async fn wait_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn alive(pid: i32) -> bool {
    paddock_testutil::pid_alive(pid)
}

/// A named network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("paddock-t-{tag}-{}", std::process::id());
        let out = paddock_proc::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = paddock_proc::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// Whether this run is inside the pure cgroup v2 VM (`vm/run-tests` sets `PADDOCK_VM=1`).
/// There, a missing controller is a failure, never a skip.
pub fn in_vm() -> bool {
    std::env::var_os("PADDOCK_VM").is_some_and(|v| v == "1")
}

/// Reports that `test` needs a controller this hierarchy does not offer. Inside the VM that
/// is a failure (panic); elsewhere it prints `SKIP <test>: <reason>` and deliberately does
/// *not* go through `paddock_testutil::skip`: CI on the hybrid host sets
/// `PADDOCK_TEST_REQUIRE=1` for the whole suite, and there these controllers are absent by
/// design (the VM runs these tests).
pub fn skip_missing(test: &str, reason: &str) {
    if in_vm() {
        panic!("{test}: cannot run inside the VM ({reason}); PADDOCK_VM=1 forbids skipping");
    }
    paddock_testutil::note_skip(
        test,
        &format!("{reason} (runs in the pure cgroup v2 VM, vm/run-tests)"),
    );
}

/// The controllers enabled for a sandbox's cgroup (its `cgroup.controllers`).
pub fn controllers_of(cgroup: &Path) -> Vec<String> {
    std::fs::read_to_string(cgroup.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, counted after the command name.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// Waits (bounded) until `/proc/<pid>/stat` shows state `state`.
pub async fn wait_state(pid: i32, state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while stat_field(pid, 3).as_deref() != Some(state) {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not reach state {state} within {timeout:?} (now {:?})",
            stat_field(pid, 3)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
