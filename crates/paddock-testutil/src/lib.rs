//! Test support shared by paddock's crates.
//!
//! * [`test_root`] gives a test its own cgroup under the cgroup2 mount, named
//!   `paddock-test.<pid>.<n>`, or prints why the test is skipped (not root, no writable
//!   cgroup2) and returns `None`. With `PADDOCK_TEST_REQUIRE=1` (set by CI) a skip is a panic
//!   instead, so a CI run can never pass by skipping.
//! * [`TestRoot`] kills every process under it and removes its whole subtree when dropped,
//!   also while a test is unwinding from a failed assertion.
//! * [`sweep_stale`] removes test roots left by test processes that no longer exist (a test
//!   binary that was SIGKILLed cannot run its destructors); it runs before every new root is
//!   made and from `.ci/run` after the suite.
//!
//! This crate deliberately does not use `paddock-cgroup`: the code that cleans up after a
//! test must not share the bugs of the code under test.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every cgroup a test creates directly under the cgroup2 mount.
pub const TEST_ROOT_PREFIX: &str = "paddock-test.";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The mount point of the cgroup2 hierarchy, read from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            let mount = left.split_whitespace().nth(4)?;
            return Some(PathBuf::from(unescape(mount)));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether skips must fail (CI sets `PADDOCK_TEST_REQUIRE=1`).
pub fn skips_forbidden() -> bool {
    std::env::var_os("PADDOCK_TEST_REQUIRE").is_some_and(|v| v == "1")
}

/// Report a skipped test on stderr (or panic when skips are forbidden).
pub fn skip(test: &str, reason: &str) {
    if skips_forbidden() {
        panic!("{test}: cannot run ({reason}) and PADDOCK_TEST_REQUIRE=1 forbids skipping");
    }
    note_skip(test, reason);
}

/// Skips recorded in this test binary, by reason.
static SKIPS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
static SUMMARY: std::sync::Once = std::sync::Once::new();

/// Prints `SKIP <test>: <reason>` and records the skip, for tests that may skip even when
/// skips are forbidden (a kernel feature that is absent, a test meant for the VM).
///
/// When the test binary exits, one line sums up its skips by reason (the harness
/// captures each test's own output, so without it a run without root would pass while
/// testing almost nothing, and say nothing).
pub fn note_skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
    SKIPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((test.to_owned(), reason.to_owned()));
    SUMMARY.call_once(|| {
        // SAFETY: `print_skip_summary` is an `extern "C" fn()` that never unwinds (it
        // catches panics itself), as `atexit` requires.
        unsafe { libc::atexit(print_skip_summary) };
    });
}

/// One line summing up the recorded skips; empty when there were none.
pub fn skip_summary() -> String {
    let skips = SKIPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if skips.is_empty() {
        return String::new();
    }
    let mut by_reason: Vec<(String, usize)> = Vec::new();
    for (_, reason) in skips.iter() {
        match by_reason.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => by_reason.push((reason.clone(), 1)),
        }
    }
    let reasons: Vec<String> = by_reason
        .iter()
        .map(|(r, n)| format!("{n} × {r}"))
        .collect();
    format!(
        "SKIPPED {} test(s) of this binary, which passed without testing what they test: {}",
        skips.len(),
        reasons.join("; ")
    )
}

extern "C" fn print_skip_summary() {
    let _ = std::panic::catch_unwind(|| {
        let line = skip_summary();
        if !line.is_empty() {
            eprintln!("{line}");
        }
    });
}

/// Why root tests cannot run here, or `None` when they can.
pub fn root_tests_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    let Some(mount) = cgroup2_mount() else {
        return Some("no cgroup2 hierarchy is mounted".into());
    };
    if !mount.join("cgroup.kill").exists() && !mount.join("cgroup.procs").exists() {
        return Some(format!(
            "{} does not look like a cgroup2 mount",
            mount.display()
        ));
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let probe = mount.join(format!("{TEST_ROOT_PREFIX}{}.probe{n}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let _ = fs::remove_dir(&probe);
            None
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
        Err(e) => Some(format!(
            "cgroup2 at {} is not writable: {e}",
            mount.display()
        )),
    }
}

/// A per-test cgroup under the cgroup2 mount; everything under it is killed and removed
/// when it is dropped.
#[derive(Debug)]
pub struct TestRoot {
    path: PathBuf,
    mount: PathBuf,
}

/// Make a [`TestRoot`] for `test`, or print why the test is skipped and return `None`.
pub fn test_root(test: &str) -> Option<TestRoot> {
    if let Some(reason) = root_tests_unavailable() {
        skip(test, &reason);
        return None;
    }
    let mount = cgroup2_mount()?;
    sweep_stale(&mount);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = mount.join(format!("{TEST_ROOT_PREFIX}{}.{n}", std::process::id()));
    fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    Some(TestRoot { path, mount })
}

impl TestRoot {
    /// The absolute path of this test root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Enables, for the root's children, every controller the root itself has (its
    /// `cgroup.controllers`), so managed roots made below it can use them. Returns them.
    pub fn enable_all_controllers(&self) -> Vec<String> {
        let ctrls: Vec<String> = fs::read_to_string(self.path.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for c in &ctrls {
            let _ = fs::write(self.path.join("cgroup.subtree_control"), format!("+{c}"));
        }
        ctrls
    }

    /// The cgroup2 mount this root is under.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The root's path relative to the cgroup2 mount (for example `paddock-test.12.0`).
    pub fn relative(&self) -> PathBuf {
        self.path.strip_prefix(&self.mount).unwrap().to_path_buf()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Err(e) = destroy_tree(&self.path, Duration::from_secs(10)) {
            let msg = format!(
                "test root {} could not be removed: {e}",
                self.path.display()
            );
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Remove test roots whose creating process no longer exists.
pub fn sweep_stale(mount: &Path) {
    let Ok(entries) = fs::read_dir(mount) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TEST_ROOT_PREFIX) else {
            continue;
        };
        let pid = rest.split('.').find_map(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive && let Err(err) = destroy_tree(&e.path(), Duration::from_secs(10)) {
            eprintln!("sweep: {}: {err}", e.path().display());
        }
    }
}

/// Kill every process in the subtree at `path` and remove it bottom-up.
pub fn destroy_tree(path: &Path, budget: Duration) -> io::Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        thaw_all(path);
        if path.join("cgroup.kill").exists() {
            let _ = fs::write(path.join("cgroup.kill"), "1");
        } else {
            kill_listed(path);
        }
        wait_unpopulated(path, Duration::from_millis(200));
        match remove_bottom_up(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
    }
}

fn thaw_all(path: &Path) {
    let _ = fs::write(path.join("cgroup.freeze"), "0");
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                thaw_all(&e.path());
            }
        }
    }
}

fn kill_listed(path: &Path) {
    if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from cgroup.procs; at worst ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_listed(&e.path());
            }
        }
    }
}

fn remove_bottom_up(path: &Path) -> io::Result<()> {
    for e in fs::read_dir(path)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_bottom_up(&e.path())?;
        }
    }
    fs::remove_dir(path)
}

/// Whether `cgroup.events` of the cgroup at `path` says `populated 1`.
pub fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Wait (by `poll(POLLPRI)` on `cgroup.events`) until the cgroup at `path` is unpopulated
/// or `timeout` passes; returns whether it is unpopulated.
pub fn wait_unpopulated(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Ok(mut f) = fs::File::open(path.join("cgroup.events")) else {
        return true;
    };
    loop {
        let mut s = String::new();
        use std::io::Seek;
        let _ = f.seek(io::SeekFrom::Start(0));
        if f.read_to_string(&mut s).is_err() || !s.lines().any(|l| l == "populated 1") {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        let ms = left.as_millis().min(50) as libc::c_int;
        // SAFETY: pfd is a valid pollfd for the duration of the call; nfds is 1.
        unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
    }
}

/// PIDs listed in `cgroup.procs` of `path` and all its descendants.
pub fn procs_recursive(path: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(procs_recursive(&e.path()));
            }
        }
    }
    out
}

/// A `sh -c` script: a parent that forks `sleep 60` children without pause, up to 3,000.
/// It is perl (Debian always has it; the VM image carries the binary; no modules are used)
/// and keeps SIGTERM's default action, so the kernel ends a process at the delivery of
/// the signal, before it runs another instruction: the parent never forks after it, and a
/// child hit between its `fork` and its `exec` dies too. So after a SIGTERM to every
/// process of its cgroup, any survivor is a child that was never signalled.
///
/// (An earlier version caught SIGTERM in perl and SIGKILLed `$$` in the handler. A child
/// frozen right after its `fork`, before perl updated its `$$`, ran that inherited handler
/// at thaw with the parent's PID, so it killed the parent and lived on: the test blamed
/// the stop for a hole in its own payload, about once per VM run under TCG.)
pub const FORKER: &str = r#"exec perl -e '
    for (1..3000) {
        my $p = fork();
        if (defined $p && $p == 0) { exec "sleep", "60"; exit 1 }
    }
    sleep 60'"#;

/// A payload that blocks SIGTERM, waits until SIGTERM is pending (so it was signalled, and
/// under a frozen stop signal, thawed again), and only then forks a `sleep 300` child,
/// unblocking SIGTERM in the child before its `exec` and in itself after the fork (so it
/// dies). The child is forked after every pass of a one-shot frozen signalling, and pending
/// signals are not inherited: only a stop that follows up on processes that had the signal
/// blocked reaches it. Perl does the same around every `fork()`, by chance rather than by
/// design. Needs `python3`. With `READY` in its environment, it writes `ready` and a newline to that
/// file once SIGTERM is blocked.
pub const BLOCKED_FORKER: &str = r#"exec python3 -c '
import os, signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
if os.environ.get("READY"):
    open(os.environ["READY"], "w").write("ready\n")
while signal.SIGTERM not in signal.sigpending():
    time.sleep(0.001)
if os.fork() == 0:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.execvp("sleep", ["sleep", "300"])
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
time.sleep(300)'"#;

/// Whether process `pid` has signal `signo` blocked (its `SigBlk` mask in
/// `/proc/<pid>/status`); false when the process or the line is gone.
pub fn signal_blocked(pid: i32, signo: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|m| (1..=64).contains(&signo) && m & (1 << (signo - 1)) != 0)
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }

    #[test]
    fn test_root_is_created_and_removed() {
        let Some(root) = test_root("test_root_is_created_and_removed") else {
            return;
        };
        let p = root.path().to_path_buf();
        fs::create_dir(p.join("child")).unwrap();
        assert!(p.is_dir());
        drop(root);
        assert!(!p.exists());
    }
}
