//! `jailed-lifecycle`: the shared rootfs, the once-per-run check that a payload really ran
//! jailed, and the jails run as processes (`bwrap`, `hakoniwa`).
//!
//! Every implementation runs `/bin/true` as a non-root user, in new pid, mount, ipc and
//! uts namespaces, with the same rootfs as `/`: a temporary directory holding the static
//! busybox of Debian's `busybox-static` and its applet links (`busybox --install -s`, run
//! in a `chroot` of the rootfs so the links point at `/bin/busybox`). Before the timed
//! loop, each runs [`CHECK_SCRIPT`] once in the same jail and [`verify`] reads what it
//! printed: the uid, the pid in its pid namespace, the four namespaces against the
//! bench's own, the rootfs's marker, and the seccomp and `no_new_privs` state (reported,
//! not required: bubblewrap sets no seccomp filter without `--seccomp FD`).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_proc::{Command, Stdio};

use crate::cleanup::BenchRoot;
use crate::implementation::{Fut, Implementation};
use crate::paddock_api::tail_of;
use crate::runtime::which;

/// Where a static busybox is found (Debian's busybox-static installs /bin/busybox).
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
/// The rootfs's marker file (its content is the run's token).
const MARKER: &str = "paddock-bench-rootfs";
/// The uid the process implementations and `paddock run` use (`nobody`).
pub const NOBODY: u32 = 65534;
/// The namespaces every implementation unshares (besides its choice of the user one).
pub const NAMESPACES: [&str; 4] = ["pid", "mnt", "ipc", "uts"];

/// The smoke check's payload (busybox `sh`): one `key value` line per fact.
pub const CHECK_SCRIPT: &str = "echo uid $(id -u); echo pid $$; \
     for n in pid mnt ipc uts; do echo ns_$n $(readlink /proc/self/ns/$n); done; \
     echo root $(cat /paddock-bench-rootfs); \
     grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d ':'";

/// The rootfs shared by every implementation of `jailed-lifecycle`, in
/// `$TMPDIR/paddock-bench.<pid>.jail/rootfs` (removed by the bench root's cleanup).
#[derive(Debug)]
pub struct JailEnv {
    /// The temporary directory (rootfs, check outputs).
    pub dir: PathBuf,
    /// The rootfs.
    pub rootfs: PathBuf,
    /// The content of the rootfs's marker file.
    pub token: String,
}

impl JailEnv {
    /// Builds the rootfs; fails with what to install when busybox is missing.
    pub fn create(bench: &BenchRoot) -> io::Result<JailEnv> {
        let busybox = BUSYBOX
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                io::Error::other("no static busybox (apt-get install -y busybox-static)")
            })?;
        let dir = std::env::temp_dir().join(format!("{}.jail", bench.name()));
        bench
            .temp_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d))
                .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", d)))?;
        }
        std::fs::copy(busybox, rootfs.join("bin/busybox"))
            .map_err(|e| io::Error::new(e.kind(), format!("copy {}: {e}", busybox.display())))?;
        let chroot = which("chroot").unwrap_or_else(|| PathBuf::from("/usr/sbin/chroot"));
        let out = Command::new(&chroot)
            .arg(&rootfs)
            .args(["/bin/busybox", "--install", "-s", "/bin"])
            .output()
            .map_err(|e| io::Error::other(format!("chroot busybox --install -s: {e}")))?;
        if !out.status.success() || !rootfs.join("bin/true").exists() {
            return Err(io::Error::other(format!(
                "chroot {} /bin/busybox --install -s /bin: {}: {}",
                rootfs.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let token = format!("{}-{}", bench.name(), std::process::id());
        std::fs::write(rootfs.join(MARKER), format!("{token}\n"))?;
        Ok(JailEnv { dir, rootfs, token })
    }
}

/// `/proc/self/ns/<n>` of the bench itself.
fn host_ns(n: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{n}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks what [`CHECK_SCRIPT`] printed: the uid is `uid` (or in `uid_range`), the pid is
/// at most 2 (the payload is pid 1, or pid 2 under the jail's init), each of the four
/// namespaces differs from the bench's own, and `/` is the rootfs. Returns a one-line
/// summary (with the seccomp mode and `no_new_privs`, reported but not required).
pub fn verify(
    out: &str,
    env: &JailEnv,
    uid: std::ops::RangeInclusive<u32>,
) -> Result<String, String> {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(k)?;
                rest.starts_with(char::is_whitespace).then(|| rest.trim())
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the payload printed no {k}: {:?}", out.trim()))
    };
    let got_uid: u32 = get("uid")?.parse().map_err(|e| format!("uid: {e}"))?;
    if !uid.contains(&got_uid) {
        return Err(format!("ran as uid {got_uid}, expected {uid:?}"));
    }
    let pid: u32 = get("pid")?.parse().map_err(|e| format!("pid: {e}"))?;
    if pid > 2 {
        return Err(format!("its pid is {pid}: not in a new pid namespace"));
    }
    for n in NAMESPACES {
        let inside = get(&format!("ns_{n}"))?;
        if inside == host_ns(n) {
            return Err(format!("it shares the bench's {n} namespace ({inside})"));
        }
    }
    let root = get("root")?;
    if root != env.token {
        return Err(format!("/ is not the bench's rootfs (marker {root:?})"));
    }
    let seccomp = get("Seccomp").unwrap_or("?");
    let nnp = get("NoNewPrivs").unwrap_or("?");
    Ok(format!(
        "uid {got_uid}, pid {pid}, own pid/mnt/ipc/uts ns, rootfs; seccomp mode {seccomp}, no_new_privs {nnp}"
    ))
}

/// `usage_usec` of `<cg>/cpu.stat`.
pub fn cpu_usage_us(cg: &Path) -> Option<u64> {
    std::fs::read_to_string(cg.join("cpu.stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (up to 2 s, polling every 100 µs) until `cg` holds no process.
fn wait_empty(cg: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let ev = std::fs::read_to_string(cg.join("cgroup.events"))?;
        if ev.lines().any(|l| l.trim() == "populated 0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "processes still in {} 2 s after the jail exited",
                cg.display()
            )));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// CPU time over timed operations (user + system of every process involved, read from
/// cgroups' `cpu.stat` outside the timed interval).
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuTally {
    total_us: u64,
    ops: u64,
}

impl CpuTally {
    /// Adds one operation's CPU time.
    pub fn add(&mut self, us: u64) {
        self.total_us += us;
        self.ops += 1;
    }
    /// Mean per operation, µs.
    pub fn per_op(&self) -> Option<f64> {
        (self.ops > 0).then(|| self.total_us as f64 / self.ops as f64)
    }
}

/// A jail run as a process: `bwrap` or `hakoniwa`. Each run is spawned into the cgroup
/// `<bench root>/<name>` (for the leak check and its CPU time) and timed from the spawn to
/// its exit, as `paddock-cli` is.
pub struct JailProc {
    name: &'static str,
    env: Option<Arc<JailEnv>>,
    bin: PathBuf,
    cgroup: PathBuf,
    cgroup_fd: Option<File>,
    errfile: PathBuf,
    cpu: CpuTally,
    unavailable: Option<String>,
}

impl JailProc {
    /// `bwrap` (`bubblewrap`) or `hakoniwa` (`cargo install hakoniwa-cli`); unavailable,
    /// with the reason, when its binary or the rootfs is missing.
    pub fn new(
        name: &'static str,
        bench: &BenchRoot,
        env: &Result<Arc<JailEnv>, String>,
    ) -> JailProc {
        let mut p = JailProc {
            name,
            env: None,
            bin: PathBuf::new(),
            cgroup: bench.path.join(name),
            cgroup_fd: None,
            errfile: PathBuf::new(),
            cpu: CpuTally::default(),
            unavailable: None,
        };
        if let Err(e) = p.setup(env) {
            p.unavailable = Some(format!("not available: {e}"));
        }
        p
    }

    fn setup(&mut self, env: &Result<Arc<JailEnv>, String>) -> Result<(), String> {
        let env = env.as_ref().map_err(|e| format!("no rootfs: {e}"))?;
        let (bin, install) = match self.name {
            "bwrap" => ("bwrap", "apt-get install -y bubblewrap"),
            _ => ("hakoniwa", "cargo install hakoniwa-cli"),
        };
        self.bin = which(bin)
            .or_else(|| {
                let home = std::env::var_os("HOME")?;
                let p = PathBuf::from(home).join(".cargo/bin").join(bin);
                p.is_file().then_some(p)
            })
            .ok_or_else(|| format!("{bin} is not installed ({install})"))?;
        std::fs::create_dir_all(&self.cgroup)
            .map_err(|e| format!("mkdir {}: {e}", self.cgroup.display()))?;
        self.cgroup_fd = Some(
            File::open(&self.cgroup).map_err(|e| format!("open {}: {e}", self.cgroup.display()))?,
        );
        self.errfile = env.dir.join(format!("{}.stderr", self.name));
        self.env = Some(env.clone());
        Ok(())
    }

    /// The jail's command line around `cmd`.
    fn command(&self, cmd: &[&str]) -> Command {
        let env = self.env.as_ref().expect("set up");
        let rootfs = env.rootfs.as_os_str();
        let uid = NOBODY.to_string();
        let mut c = Command::new(&self.bin);
        match self.name {
            // As root, bwrap can run the payload as another uid only in a user namespace
            // of its own (`--uid` needs `--unshare-user`): uid 65534 inside, mapped onto
            // the caller. `--dev`/`--proc` as paddock's minimal /dev and fresh /proc.
            "bwrap" => {
                c.args(["--unshare-user", "--uid", &uid, "--gid", &uid])
                    .args(["--unshare-pid", "--unshare-ipc", "--unshare-uts"])
                    .arg("--bind")
                    .arg(rootfs)
                    .arg("/")
                    .args(["--proc", "/proc", "--dev", "/dev", "--"]);
            }
            // hakoniwa always makes user, mount and pid namespaces; `--unshare-ipc/uts`
            // add the others. `--rootdir` makes the rootfs `/` (with /proc and a minimal
            // /dev); the uid inside is mapped onto the caller as bwrap's is (hakoniwa
            // 1.8 refuses to map 65534 onto 65534 as root: EPERM on `uid_map`). Its
            // default seccomp is podman's profile.
            _ => {
                let map = format!("{NOBODY}:0:1");
                c.arg("run")
                    .arg("--rootdir")
                    .arg(rootfs)
                    .args(["--unshare-ipc", "--unshare-uts"])
                    .args(["--uidmap", &map, "--gidmap", &map, "--"]);
            }
        }
        c.args(cmd);
        c
    }

    /// Spawns the jail around `cmd` with stdout to `stdout`, waits for it; the time from
    /// the spawn to its exit.
    async fn run(&mut self, cmd: &[&str], stdout: Stdio) -> io::Result<Duration> {
        let err = File::create(&self.errfile)?;
        let mut c = self.command(cmd);
        c.stdin(Stdio::Null)
            .stdout(stdout)
            .stderr(Stdio::Fd(err.into()));
        let cg = self.cgroup_fd.as_ref().expect("set up");
        let cpu0 = cpu_usage_us(&self.cgroup);
        let t0 = Instant::now();
        let p = c
            .spawn_in(cg.as_fd())
            .map_err(|e| io::Error::other(format!("spawn {}: {e}", self.bin.display())))?;
        // Through paddock-proc's reaper, which reaps every child of this process.
        let st = p.wait().await;
        let dt = t0.elapsed();
        // Untimed: the jail's own init (bwrap's pid 1) can still be exiting when the
        // jail's main process has; wait until the cgroup is empty, so no run overlaps the
        // next, its CPU time counts, and the leak check sees only real leftovers.
        let settled = tokio::task::block_in_place(|| wait_empty(&self.cgroup));
        if let (Some(a), Some(b)) = (cpu0, cpu_usage_us(&self.cgroup)) {
            self.cpu.add(b.saturating_sub(a));
        }
        settled?;
        if !st.success() {
            return Err(io::Error::other(format!(
                "{}: {st}: {}",
                self.name,
                tail_of(&self.errfile, 500)
            )));
        }
        Ok(dt)
    }
}

impl Implementation for JailProc {
    fn name(&self) -> &'static str {
        self.name
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
    fn supports(&self, scenario: &str) -> bool {
        scenario == "jailed-lifecycle"
    }
    fn leak_dir(&self) -> &'static str {
        self.name
    }
    fn jail_check(&mut self) -> Fut<'_, String> {
        Box::pin(async move {
            let env = self.env.clone().expect("set up");
            let path = env.dir.join(format!("{}.check", self.name));
            let out = File::create(&path)?;
            self.run(&["/bin/sh", "-c", CHECK_SCRIPT], Stdio::Fd(out.into()))
                .await?;
            // The check is not a timed operation: its CPU time is not counted.
            self.cpu = CpuTally::default();
            let text = std::fs::read_to_string(&path)?;
            verify(&text, &env, NOBODY..=NOBODY).map_err(io::Error::other)
        })
    }
    fn jailed_lifecycle(&mut self) -> Fut<'_, Duration> {
        Box::pin(async move {
            let d = self.run(&["/bin/true"], Stdio::Null).await?;
            Ok(d)
        })
    }
    fn cpu_per_op_us(&self) -> Option<f64> {
        self.cpu.per_op()
    }
}
