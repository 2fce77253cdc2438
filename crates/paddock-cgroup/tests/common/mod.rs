//! Shared helpers for the cgroup crate's root tests.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_cgroup::{Cgroup, CgroupName, Root};
use paddock_testutil::TestRoot;

/// A managed root inside a per-test cgroup.
pub fn root(test: &str) -> Option<(TestRoot, Root)> {
    let t = paddock_testutil::test_root(test)?;
    let r = Root::open_or_create(&t.path().join("root")).expect("open managed root");
    Some((t, r))
}

pub fn name(s: &str) -> CgroupName {
    CgroupName::new(s).unwrap()
}

/// Starts `sh -c script` inside `cg`: the child moves itself into the cgroup (writes `0`
/// to its `cgroup.procs`) before exec, so nothing it runs starts outside. The cgroup crate
/// cannot use paddock-proc (that crate depends on this one), hence this test-only helper.
pub fn spawn_in(cg: &Cgroup, script: &str) -> Child {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.path().join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .env("CG", cg.path())
        .stdin(Stdio::null());
    // SAFETY: the closure only calls write(2) on an fd that stays open (procs lives until
    // spawn returns), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::write(fd, b"0".as_ptr().cast(), 1);
            if r == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().expect("spawn into cgroup");
    drop(procs);
    child
}

/// Waits (bounded) until the cgroup subtree holds at least `n` processes.
pub fn wait_procs(cg: &Cgroup, n: usize, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = cg.procs_recursive().unwrap();
        if p.len() >= n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} processes appeared in {:?}",
            p.len(),
            cg.path()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until a file exists (a payload's "I am ready" marker).
pub fn wait_file(path: &std::path::Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Captures tracing output of the current thread.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Installs a subscriber for this thread; keep the guard alive.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reaps `child` (a direct child of the test) and returns its exit status.
pub fn reap(mut child: Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "child {} did not exit in {timeout:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn cgroup_kill_supported(root: &Root) -> bool {
    root.path().join("cgroup.kill").exists()
}
