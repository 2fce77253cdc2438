//! Shared helpers for paddock-proc's integration tests.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use paddock_proc::{Command, SpawnPath};

/// Every spawn path; tests loop over all of them.
pub const PATHS: [SpawnPath; 3] = [
    SpawnPath::Auto,
    SpawnPath::Clone3WithoutIntoCgroup,
    SpawnPath::LegacyClone,
];

/// Make `root/name` and open it `O_DIRECTORY | O_CLOEXEC`.
pub fn leaf(root: &Path, name: &str) -> (PathBuf, OwnedFd) {
    let p = root.join(name);
    fs::create_dir(&p).unwrap();
    (p.clone(), open_dir(&p))
}

/// Open a directory `O_DIRECTORY | O_CLOEXEC`.
pub fn open_dir(p: &Path) -> OwnedFd {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
        .unwrap()
        .into()
}

/// Read a pipe end to EOF.
pub fn read_to_string(fd: OwnedFd) -> String {
    let mut s = String::new();
    File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// Whether `/proc/<pid>` exists at all (a zombie still has one).
pub fn proc_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Zombie children of this process.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] == "Z" && f[1].parse::<i32>().ok() == Some(me) {
            out.push(pid);
        }
    }
    out
}

/// A named network namespace made with `ip netns add`, removed on drop (also when the
/// test fails).
pub struct Netns {
    pub name: String,
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "paddock-t-{}-{}",
            std::process::id(),
            NS_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            other => eprintln!("ip netns del {}: {other:?}", self.name),
        }
    }
}

/// Log lines captured by [`capture_logs`].
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a process-global `tracing` subscriber that records every event at `debug` and
/// above (from every thread, the reaper's included) without colours; also echoed to stderr
/// by the caller on failure. Call once per test binary, before the first spawn.
pub fn capture_logs() -> Logs {
    let logs = Logs::default();
    let w = logs.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::set_global_default(sub).expect("a subscriber was already installed");
    logs
}

/// What the seccomp filter of [`deny_clone3`] makes `clone3` fail with.
#[derive(Debug, Clone, Copy)]
pub enum Clone3Denial {
    /// Every `clone3` fails with this errno (`ENOSYS`, `EPERM`).
    Always(i32),
    /// `clone3` with the Linux 5.7 `clone_args` size (88 bytes, the one that carries
    /// `cgroup`) fails with `E2BIG`, as on a 5.3–5.6 kernel; smaller sizes work.
    LargeArgs,
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Installs, for every thread of this process (`SECCOMP_FILTER_FLAG_TSYNC`) and everything
/// it spawns later, a seccomp filter that makes `clone3` fail as `how` says and allows
/// everything else. Irreversible: use it only in a test binary of its own. Returns `false`
/// (nothing installed) on architectures the filter does not know.
pub fn deny_clone3(how: Clone3Denial) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq_skip1 = |k: u32| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 1,
            jf: 0,
            k,
        };
        let ld = |off: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off);
        let ret = |k: u32| stmt(libc::BPF_RET | libc::BPF_K, k);
        let allow = ret(libc::SECCOMP_RET_ALLOW);
        // struct seccomp_data: nr at 0, arch at 4, args[] at 16 (8 bytes each; the low
        // half of args[1] at 24 on these little-endian architectures).
        let mut prog = vec![
            ld(4),
            jeq_skip1(AUDIT_ARCH),
            allow,
            ld(0),
            jeq_skip1(libc::SYS_clone3 as u32),
            allow,
        ];
        match how {
            Clone3Denial::Always(errno) => {
                prog.push(ret(libc::SECCOMP_RET_ERRNO | errno as u32));
            }
            Clone3Denial::LargeArgs => {
                prog.extend([
                    ld(24),
                    jeq_skip1(88),
                    allow,
                    ret(libc::SECCOMP_RET_ERRNO | libc::E2BIG as u32),
                ]);
            }
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with a valid, fully initialised
        // sock_fprog pointing at `prog`, which outlives the call (the kernel copies the
        // program). The filter only makes clone3 fail with an errno.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &fprog as *const libc::sock_fprog,
            )
        };
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = how;
        false
    }
}

/// The fallback-detection test shared by the `fallback_*` test binaries: with `clone3`
/// denied as `how` says before the first spawn, two spawns both put the child into the
/// target cgroup, the fallback is logged at WARN exactly once with a line containing every
/// one of `reason`, and the cached capabilities say what was detected.
pub fn fallback_is_detected_once(
    test: &str,
    how: Clone3Denial,
    reason: &[&str],
    want: impl Fn(&paddock_proc::SpawnCapabilities) -> bool,
) {
    use std::os::fd::AsFd;
    let Some(root) = paddock_testutil::test_root(test) else {
        return;
    };
    let logs = capture_logs();
    let (_, cg) = leaf(root.path(), "leaf");
    if !matches!(how, Clone3Denial::Always(libc::ENOSYS)) {
        // glibc's pthread_create uses clone3 and falls back to clone only on ENOSYS: start
        // the reaper's threads (which do not touch the detection) before the filter.
        paddock_proc::request_orphan_sweep();
    }
    if !deny_clone3(how) {
        paddock_testutil::skip(test, "no seccomp filter for this architecture");
        return;
    }
    assert_eq!(paddock_proc::spawn_capabilities().clone3, None);
    let want_line = format!("0::/{}/leaf", root.relative().display());
    for round in 0..2 {
        let mut p = Command::new("/bin/cat")
            .arg("/proc/self/cgroup")
            .stdout(paddock_proc::Stdio::Pipe)
            .spawn_in(cg.as_fd())
            .unwrap_or_else(|e| panic!("spawn {round}: {e}"));
        let out = read_to_string(p.take_stdout().unwrap());
        assert!(p.wait_blocking().success());
        assert!(
            out.lines().any(|l| l == want_line),
            "spawn {round}: {out:?} lacks {want_line}"
        );
    }
    let caps = paddock_proc::spawn_capabilities();
    assert!(want(&caps), "{caps:?}");
    let mut needles = vec!["WARN"];
    needles.extend_from_slice(reason);
    let hits = logs.lines_with(&needles);
    assert_eq!(
        hits.len(),
        1,
        "want one WARN with {reason:?}; log:\n{}",
        logs.text()
    );
}
