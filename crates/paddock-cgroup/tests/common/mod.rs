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
/// to its `cgroup.procs`) before exec, so nothing it runs starts outside.
///
/// This is `std::process`, not paddock-proc (a dev-dependency, used by tests/remove_backstop.rs to
/// spawn through the cgroup fd): paddock-proc's process-global reaper reaps every child of
/// the test binary, so it cannot be mixed with [`reap`]/[`wait_pid`] in one binary.
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

/// Waits (bounded) until `/proc/<pid>/comm` reads `comm` (the process has exec'd it).
pub fn wait_comm(pid: i32, comm: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if now.trim_end() == comm {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} is {now:?}, not {comm:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A file in the temporary directory for a payload to write, removed (with the `.tmp`
/// file a payload renames into it) when dropped, also when a test fails.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    /// `<tmp>/<name>`, removed first if a crashed run left it.
    pub fn new(name: &str) -> TempFile {
        let f = TempFile(std::env::temp_dir().join(name));
        f.remove();
        f
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
        let mut tmp = self.0.clone().into_os_string();
        tmp.push(".tmp");
        let _ = std::fs::remove_file(tmp);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.remove();
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
///
/// One global subscriber (installed once, at DEBUG) writes every event into the capture of
/// the thread that emitted it, if that thread has one. A per-thread default subscriber
/// (`tracing::subscriber::set_default`) is not used: tracing caches each callsite's
/// interest globally, and a test thread without a subscriber that reached a callsite while
/// another thread was installing its subscriber could leave that callsite disabled, so an
/// expected line was missing from the capture now and then.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

/// Stops capturing on this thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// The global subscriber's writer: the emitting thread's capture, or nowhere.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|c| {
            if let Some(cap) = c.borrow().as_ref() {
                cap.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Captures this thread's events until the guard is dropped.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let sub = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("install the test subscriber");
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard(())
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

// ---------------------------------------------------------------------------------------
// Helpers for the limit tests (tests/vm_limits.rs), which do real work only where the v2
// hierarchy offers the controllers (the pure-v2 VM of `vm/run-tests`).

/// Whether this run is inside the pure cgroup v2 VM (`vm/run-tests` sets `PADDOCK_VM=1`).
/// There, missing controllers are a failure, never a skip.
pub fn in_vm() -> bool {
    std::env::var_os("PADDOCK_VM").is_some_and(|v| v == "1")
}

/// Reports that `test` cannot run here because of a missing kernel feature or controller.
/// Inside the VM that is a failure (panic); elsewhere it prints `SKIP <test>: <reason>` and
/// deliberately does *not* go through `paddock_testutil::skip`: CI on the hybrid host sets
/// `PADDOCK_TEST_REQUIRE=1` for the whole suite, and there these controllers are absent by
/// design.
pub fn skip_missing(test: &str, reason: &str) {
    if in_vm() {
        panic!("{test}: cannot run inside the VM ({reason}); PADDOCK_VM=1 forbids skipping");
    }
    paddock_testutil::note_skip(test, reason);
}

/// A managed root whose children get `controllers`: enables them on the test root (the
/// cgroup between the mount and the managed root) and on the managed root. Returns `None`
/// after printing a skip when the hierarchy does not hand them to the test root.
/// The controllers of `wanted` that a `cgroup.controllers` text does not list.
fn not_offered<'a>(offered: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|c| !offered.split_whitespace().any(|o| o == *c))
        .collect()
}

pub fn root_with_controllers(test: &str, controllers: &[&str]) -> Option<(TestRoot, Root)> {
    // Look at the mount first, so a hybrid host skips without creating anything.
    if let Some(mount) = paddock_testutil::cgroup2_mount() {
        let offered = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let missing = not_offered(&offered, controllers);
        if !missing.is_empty() {
            skip_missing(
                test,
                &format!(
                    "the cgroup v2 hierarchy at {} does not offer {} (offered: {:?}); a hybrid \
                     host? run vm/run-tests",
                    mount.display(),
                    missing.join(" "),
                    offered.trim()
                ),
            );
            return None;
        }
    }
    let t = paddock_testutil::test_root(test)?;
    let offered = std::fs::read_to_string(t.path().join("cgroup.controllers")).unwrap();
    let missing = not_offered(&offered, controllers);
    if !missing.is_empty() {
        skip_missing(
            test,
            &format!(
                "the parent of {} does not delegate {} (offered: {:?}); enable them in the \
                 cgroup.subtree_control of {}",
                t.path().display(),
                missing.join(" "),
                offered.trim(),
                t.mount().display()
            ),
        );
        return None;
    }
    let line = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(t.path().join("cgroup.subtree_control"), &line)
        .unwrap_or_else(|e| panic!("enable {line} on {}: {e}", t.path().display()));
    let r = Root::open_or_create(&t.path().join("root")).expect("open managed root");
    r.enable_controllers(controllers)
        .expect("enable controllers on the managed root");
    Some((t, r))
}

/// Whether the cgroup has the interface file `file` (a feature-detection probe: kernel
/// features newer than the oldest covered kernel are detected, never assumed).
pub fn has_file(cg: &Cgroup, file: &str) -> bool {
    cg.path().join(file).exists()
}

/// Forks a child that moves itself into `cg` (writes `0` to its `cgroup.procs`) and then
/// runs `body`, exiting with its return value; returns the child's pid. `body` runs in the
/// child of a fork of a multi-threaded process: it must only do async-signal-safe things
/// (raw syscalls, plain memory writes; no allocation, no locks, no printing).
pub fn fork_in<F: FnOnce() -> i32>(cg: &Cgroup, body: F) -> libc::pid_t {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.path().join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    // SAFETY: fork has no preconditions; the child only calls async-signal-safe functions
    // (write, the caller's body under the same contract, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: write(2) on an fd that is open in the child; _exit never returns.
        unsafe {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(125);
            }
            let code = body();
            libc::_exit(code);
        }
    }
    drop(procs);
    pid
}

/// How a forked child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Waits (bounded, polling) for a child made by [`fork_in`]; `None` if it is still running
/// at the deadline.
pub fn wait_pid(pid: libc::pid_t, timeout: Duration) -> Option<Ended> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        assert!(r >= 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
        if r == pid {
            return Some(if libc::WIFSIGNALED(st) {
                Ended::Signal(libc::WTERMSIG(st))
            } else {
                Ended::Code(libc::WEXITSTATUS(st))
            });
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Touches `bytes` of fresh anonymous memory, one write per page, `chunk` bytes per
/// mapping; returns 0 when all were touched, 2 when mmap failed. Async-signal-safe.
pub fn touch_memory(bytes: usize, chunk: usize) -> i32 {
    let mut done = 0usize;
    while done < bytes {
        // SAFETY: anonymous private mapping; the pointer is only used within its length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                chunk,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return 2;
        }
        let mut off = 0;
        while off < chunk {
            // SAFETY: off < chunk, inside the mapping just made.
            unsafe { std::ptr::write_volatile((p as *mut u8).add(off), 1) };
            off += 4096;
        }
        done += chunk;
    }
    0
}

/// Reads `key value` lines of a flat-keyed cgroup file into a value for `key`.
pub fn flat_key(cg: &Cgroup, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(cg.path().join(file)).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

// ---------------------------------------------------------------------------------------
// A cgroup v1 freezer, to hold processes that SIGKILL cannot end until it is thawed (a
// frozen v1 task sleeps uninterruptibly, state D). The hybrid CI host has one at
// /sys/fs/cgroup/freezer; a pure cgroup v2 machine has none.

/// A cgroup of the v1 freezer hierarchy; dropping it thaws it, SIGKILLs what is left in
/// it, waits (bounded) until it is empty and removes it, also when a test fails.
pub struct V1Freezer {
    path: std::path::PathBuf,
}

impl V1Freezer {
    /// Creates `paddock-test.<pid>.<test>` in the v1 freezer hierarchy, or returns why
    /// there is none.
    pub fn create(test: &str) -> Result<V1Freezer, String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let entries = paddock_cgroup::mount::parse_mountinfo(&text).map_err(|e| e.to_string())?;
        let mount = paddock_cgroup::mount::v1_location(&entries, "freezer")
            .ok_or("no cgroup v1 freezer hierarchy is mounted (a pure cgroup v2 machine)")?;
        let path = mount.join(format!(
            "{}{}.{test}",
            paddock_testutil::TEST_ROOT_PREFIX,
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(V1Freezer { path })
    }

    /// Moves `pid` into this freezer cgroup (its v2 cgroup stays what it was).
    pub fn add(&self, pid: i32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }

    fn set_state(&self, state: &str) {
        let file = self.path.join("freezer.state");
        std::fs::write(&file, state)
            .unwrap_or_else(|e| panic!("write {state} to {}: {e}", file.display()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = std::fs::read_to_string(&file).unwrap_or_default();
            if now.trim() == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} stays {now:?}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Freezes and waits (bounded) until `freezer.state` reads `FROZEN`.
    pub fn freeze(&self) {
        self.set_state("FROZEN");
    }

    /// Thaws and waits (bounded) until `freezer.state` reads `THAWED`.
    pub fn thaw(&self) {
        self.set_state("THAWED");
    }
}

impl Drop for V1Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("freezer.state"), "THAWED");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions; these are this test's
                // own processes, moved here by `add`.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if Instant::now() >= deadline {
                eprintln!("{} still has processes: {procs:?}", self.path.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("rmdir {}: {e}", self.path.display());
        }
    }
}
