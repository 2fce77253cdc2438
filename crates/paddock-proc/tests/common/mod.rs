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
