//! paddock-torture: runs hostile payloads through full sandbox lifecycles with the
//! supervisor library, injects library-level faults (racing stops, stop against main exit
//! and pause, kill during a graceful stop, futures dropped at await points), and checks
//! after every stop — without trusting paddock's bookkeeping — that no process and no
//! cgroup is left.
//!
//! The leak checks ([`check`]) read `/proc` and the cgroup filesystem directly: after each
//! stop the sandbox's cgroup directory must not exist, no other directory of that sandbox
//! may exist under the root, and no live process may carry the sandbox's
//! `TORTURE_TAG` in its environment (every PID the payload reported is checked, and all of
//! `/proc` is scanned). At the end the whole torture root is walked and `/proc` is scanned
//! for processes whose cgroup is under it.
//!
//! [`run`] is the library entry point; the `paddock-torture` binary wraps it.

pub mod check;
pub mod payloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::{
    Config, Error as SupError, Limits, Network, OnMainExit, SandboxId, SandboxInfo, SandboxSpec,
    State, StdioTarget, StopPolicy, StopReport, Supervisor, cgroup_name,
};
use serde::Serialize;

/// Where the v1 freezer hierarchy is expected (the `unkillable` case needs it).
pub const V1_FREEZER: &str = "/sys/fs/cgroup/freezer";

/// The PATH payloads run with (a fixed system PATH, so `python3` is the system one).
const PAYLOAD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One payload case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// A bash wrapper that does not forward signals, the real work in a child.
    Wrapper,
    /// The incident's chain: `unshare -m` → bash → `ip netns exec` → the child.
    WrapperNetns,
    /// Double-forked `setsid` daemons ignoring SIGTERM.
    DoubleFork,
    /// Processes blocking or ignoring SIGTERM and SIGINT.
    Sigblock,
    /// Processes stopped with SIGSTOP.
    Sigstop,
    /// A bounded fork storm running while the sandbox is stopped.
    ForkStorm,
    /// A process tree still being built when the stop arrives.
    Building,
    /// Many threads.
    Threads,
    /// `posix_spawn` (vfork) chains.
    Vfork,
    /// Main processes that exit at once.
    InstantExit,
    /// Payload-made child cgroups: frozen, threaded, subtree_control, many descendants.
    NestedCgroups,
    /// A process held in state D by a v1 freezer past the kill deadline.
    Unkillable,
}

impl Case {
    /// Every case.
    pub const ALL: [Case; 12] = [
        Case::Wrapper,
        Case::WrapperNetns,
        Case::DoubleFork,
        Case::Sigblock,
        Case::Sigstop,
        Case::ForkStorm,
        Case::Building,
        Case::Threads,
        Case::Vfork,
        Case::InstantExit,
        Case::NestedCgroups,
        Case::Unkillable,
    ];

    /// The case's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Case::Wrapper => "wrapper",
            Case::WrapperNetns => "wrapper-netns",
            Case::DoubleFork => "double-fork",
            Case::Sigblock => "sigblock",
            Case::Sigstop => "sigstop",
            Case::ForkStorm => "fork-storm",
            Case::Building => "building",
            Case::Threads => "threads",
            Case::Vfork => "vfork",
            Case::InstantExit => "instant-exit",
            Case::NestedCgroups => "nested-cgroups",
            Case::Unkillable => "unkillable",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Case, String> {
        Case::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown case {s:?}; cases: {}",
                    Case::ALL.map(Case::name).join(",")
                )
            })
    }
}

/// A library-level fault injected into one lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// One graceful stop.
    Plain,
    /// Several stops (and sometimes a kill) at once; all must see one outcome.
    RacingStops,
    /// A stop issued right after start, racing the main process's exit and its own stop.
    StopVsMainExit,
    /// A pause and a stop at once.
    StopVsPause,
    /// A kill while a graceful stop with a long grace period runs.
    KillDuringStop,
    /// `start` dropped after a short timeout.
    CancelStart,
    /// `stop` dropped after a short timeout, then waited for or re-issued.
    CancelStop,
    /// `pause` dropped after a short timeout, then the sandbox stopped.
    CancelPause,
}

const FAULTS: [Fault; 8] = [
    Fault::Plain,
    Fault::RacingStops,
    Fault::StopVsMainExit,
    Fault::StopVsPause,
    Fault::KillDuringStop,
    Fault::CancelStart,
    Fault::CancelStop,
    Fault::CancelPause,
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of lifecycles (`None` with a duration: until the duration passes).
    pub count: Option<u64>,
    /// How long to keep starting lifecycles.
    pub duration: Option<Duration>,
    /// Lifecycles in flight at once.
    pub concurrency: usize,
    /// Seed of every random choice (case, fault, variant, timings).
    pub seed: u64,
    /// Cases to mix.
    pub cases: Vec<Case>,
    /// The managed root; `None`: a fresh `<cgroup2 mount>/paddock-torture.<pid>`.
    pub cgroup_root: Option<PathBuf>,
    /// Scratch directory; `None`: a fresh one under the temporary directory.
    pub scratch: Option<PathBuf>,
    /// Print one line per lifecycle on stderr.
    pub verbose: bool,
    /// Deadline of one lifecycle; past it the lifecycle counts as hung (an error), its
    /// sandbox is killed and checked.
    pub lifecycle_timeout: Duration,
    /// Multiplies the runner's own waits (a payload becoming ready, a fork storm's run
    /// before the stop, a quarantine draining): 1 on a normal machine, more under
    /// emulation (the test VM's TCG runs payloads 5–20 times slower).
    pub time_scale: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            count: Some(60),
            duration: None,
            concurrency: 4,
            seed: 1,
            cases: Case::ALL.to_vec(),
            cgroup_root: None,
            scratch: None,
            verbose: false,
            lifecycle_timeout: Duration::from_secs(90),
            time_scale: 1,
        }
    }
}

/// A leak: something left after a stop that reported success.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    /// Lifecycle number in this run (`None`: found by the final walk).
    pub lifecycle: Option<u64>,
    /// Sandbox ID.
    pub sandbox: String,
    /// Payload case.
    pub case: Option<Case>,
    /// Injected fault.
    pub fault: Option<Fault>,
    /// `process` or `cgroup`.
    pub kind: &'static str,
    /// What was found.
    pub detail: String,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The seed used.
    pub seed: u64,
    /// Concurrency used.
    pub concurrency: usize,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Lifecycles run to the end and checked.
    pub lifecycles_completed: u64,
    /// Lifecycles per case.
    pub per_case: BTreeMap<String, u64>,
    /// Lifecycles per fault.
    pub per_fault: BTreeMap<String, u64>,
    /// Processes killed after the grace period (supervisor counter `killed_after_grace`).
    pub processes_killed_after_grace: u64,
    /// Removals that found the cgroup busy and fell back to `cgroup.kill` (root counter).
    pub ebusy_fallbacks: u64,
    /// `cgroup.kill` rewrites because the first write left a survivor (root counter).
    pub kill_rewrites: u64,
    /// Stops that ended in quarantine.
    pub quarantines: u64,
    /// Quarantines that drained (sandbox removed after the stuck process went).
    pub quarantines_drained: u64,
    /// Starts that failed (including the deliberately bad ones).
    pub starts_failed: u64,
    /// Stops that ended `failed`.
    pub stops_failed: u64,
    /// Futures actually dropped before completing: start, stop, pause.
    pub cancelled: BTreeMap<String, u64>,
    /// Whether the sandboxes had the `pids` controller, so that fork storms ran under a
    /// `pids.max` of 32..=256 (otherwise only their own loop count bounds them).
    pub pids_controller: bool,
    /// Fork-storm lifecycles that ran.
    pub fork_storms: u64,
    /// Fork storms whose sandbox counted forks refused at `pids.max` before the stop
    /// (`max` in its `pids.events`).
    pub fork_storms_hit_pids_max: u64,
    /// What the `nested-cgroups` payload's write of a controller to its own
    /// `cgroup.subtree_control` (after moving its processes into a leaf) did, as the
    /// payload logged it: `ok +<controller>`, `failed +<controller>`, or `none offered`.
    pub nested_subtree_control: BTreeMap<String, u64>,
    /// The most descendant cgroups one `nested-cgroups` lifecycle (variant 2) created.
    pub nested_max_descendants_made: u64,
    /// Leaks found (after each stop and in the final walk).
    pub leaks_found: u64,
    /// The leaks.
    pub leaks: Vec<Leak>,
    /// Other problems (unexpected states, hangs, inconsistent reports).
    pub errors: Vec<String>,
    /// Cases skipped, with why.
    pub skipped: Vec<String>,
    /// Whether the run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

impl Summary {
    /// Human-readable summary lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let kv = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        s += &format!(
            "paddock-torture: seed {} concurrency {} elapsed {:.1}s{}\n",
            self.seed,
            self.concurrency,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        s += &format!(
            "  lifecycles completed:          {}\n",
            self.lifecycles_completed
        );
        s += &format!("  per case:   {}\n", kv(&self.per_case));
        s += &format!("  per fault:  {}\n", kv(&self.per_fault));
        s += &format!(
            "  processes killed after grace:  {}\n",
            self.processes_killed_after_grace
        );
        s += &format!(
            "  EBUSY fallbacks:               {}\n",
            self.ebusy_fallbacks
        );
        s += &format!("  cgroup.kill rewrites:          {}\n", self.kill_rewrites);
        s += &format!(
            "  quarantines:                   {} (drained {})\n",
            self.quarantines, self.quarantines_drained
        );
        s += &format!("  starts failed:                 {}\n", self.starts_failed);
        s += &format!("  stops failed:                  {}\n", self.stops_failed);
        s += &format!("  futures cancelled:  {}\n", kv(&self.cancelled));
        s += &format!(
            "  fork storms hitting pids.max:  {} of {}{}\n",
            self.fork_storms_hit_pids_max,
            self.fork_storms,
            if self.pids_controller {
                " (pids.max 32..=256)"
            } else {
                " (no pids controller here: bounded by their loop count)"
            }
        );
        s += &format!(
            "  nested subtree_control writes: {}\n",
            kv(&self.nested_subtree_control)
        );
        s += &format!(
            "  nested descendants made (max): {}\n",
            self.nested_max_descendants_made
        );
        for sk in &self.skipped {
            s += &format!("  skipped: {sk}\n");
        }
        for e in &self.errors {
            s += &format!("  ERROR: {e}\n");
        }
        for l in &self.leaks {
            s += &format!(
                "  LEAK: {} {} (lifecycle {:?}, case {:?}, fault {:?}): {}\n",
                l.kind, l.sandbox, l.lifecycle, l.case, l.fault, l.detail
            );
        }
        s += &format!("  leaks found:                   {}\n", self.leaks_found);
        s
    }

    /// The process exit code: 1 on any leak, 2 on other errors, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.leaks_found > 0 {
            1
        } else if !self.errors.is_empty() {
            2
        } else {
            0
        }
    }
}

/// A flag that asks a run to stop starting new lifecycles (Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Raises the flag.
    pub fn raise(&self) {
        self.0.store(true, Relaxed);
    }
    /// Whether it is raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// The splitmix64 generator: small, seedable, good enough for choosing faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for lifecycle `n` of a run seeded with `seed`.
    pub fn new(seed: u64, n: u64) -> Rng {
        let mut r = Rng(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.range(0, 100) < p
    }
}

/// Resources the run created outside the cgroup root (v1 freezer cgroups, network
/// namespaces), tracked so that they are removed at the end, also after Ctrl-C.
#[derive(Debug, Default)]
pub struct Extras {
    freezers: Mutex<Vec<PathBuf>>,
    netns: Mutex<Vec<String>>,
}

impl Extras {
    /// Thaws and removes every freezer cgroup and deletes every network namespace still
    /// tracked.
    pub fn cleanup(&self) {
        for f in std::mem::take(&mut *self.freezers.lock().unwrap()) {
            V1Freezer(f).release();
        }
        for n in std::mem::take(&mut *self.netns.lock().unwrap()) {
            netns_delete(&n);
        }
    }
}

struct V1Freezer(PathBuf);

impl V1Freezer {
    fn create(extras: &Extras, run: &str, n: u64) -> std::io::Result<V1Freezer> {
        let p = Path::new(V1_FREEZER).join(format!("paddock-torture-{run}-{n}"));
        std::fs::create_dir(&p)?;
        extras.freezers.lock().unwrap().push(p.clone());
        Ok(V1Freezer(p))
    }
    fn freeze(&self, pid: i32) -> Result<(), String> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("move {pid} into {}: {e}", self.0.display()))?;
        std::fs::write(self.0.join("freezer.state"), "FROZEN")
            .map_err(|e| format!("freeze {}: {e}", self.0.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = std::fs::read_to_string(self.0.join("freezer.state")).unwrap_or_default();
            if st.trim() == "FROZEN" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} never reached FROZEN ({st:?})",
                    self.0.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    fn thaw(&self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
    /// Thaws, moves any survivor back to the v1 root, removes the directory.
    fn release(self) {
        self.thaw();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
                let parent = Path::new(V1_FREEZER).join("cgroup.procs");
                for p in procs.lines() {
                    let _ = std::fs::write(&parent, p);
                }
            }
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("paddock-torture: could not remove {}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn untrack_freezer(extras: &Extras, f: &V1Freezer) {
    extras.freezers.lock().unwrap().retain(|p| p != &f.0);
}

fn netns_add(name: &str) -> Result<(), String> {
    let out = paddock_proc::Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .map_err(|e| format!("ip netns add {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn netns_delete(name: &str) {
    let _ = paddock_proc::Command::new("ip")
        .args(["netns", "delete", name])
        .output();
}

/// Why the `unkillable` case cannot run here, if it cannot.
pub fn unkillable_unavailable() -> Option<String> {
    let f = Path::new(V1_FREEZER);
    if f.join("cgroup.procs").exists() {
        None
    } else {
        Some(format!(
            "no cgroup v1 freezer hierarchy at {V1_FREEZER} to hold a process in state D"
        ))
    }
}

fn which(cmd: &str) -> bool {
    PAYLOAD_PATH
        .split(':')
        .any(|d| Path::new(d).join(cmd).is_file())
}

/// Why a case cannot run here, if it cannot.
pub fn case_unavailable(c: Case) -> Option<String> {
    let need: &[&str] = match c {
        Case::Wrapper => &["bash"],
        Case::WrapperNetns => &["bash", "unshare", "ip"],
        Case::Sigblock | Case::Threads | Case::Vfork => &["python3"],
        Case::NestedCgroups => &["bash", "awk", "sed"],
        Case::Unkillable => return unkillable_unavailable(),
        _ => &[],
    };
    need.iter()
        .find(|t| !which(t))
        .map(|t| format!("`{t}` is not installed"))
}

struct Active {
    root: PathBuf,
    made_root: bool,
    extras: Arc<Extras>,
    scratch: PathBuf,
}

static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

/// Best-effort clean-up of the run in progress, for an abort (a second Ctrl-C): thaws and
/// removes the v1 freezer cgroups, deletes the network namespaces, kills and removes
/// everything under the root (and the root itself if the run made it), removes the
/// scratch directory.
pub fn emergency_cleanup() {
    let Some(a) = ACTIVE.lock().unwrap().take() else {
        return;
    };
    a.extras.cleanup();
    if a.made_root {
        let _ = check::destroy_tree(&a.root, Duration::from_secs(10));
    } else {
        for d in std::fs::read_dir(&a.root).into_iter().flatten().flatten() {
            if d.path().is_dir() {
                let _ = check::destroy_tree(&d.path(), Duration::from_secs(10));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&a.scratch);
}

struct Ctx {
    sup: Supervisor,
    root: Root,
    scratch: PathBuf,
    bin: PathBuf,
    cases: Vec<Case>,
    seed: u64,
    verbose: bool,
    lifecycle_timeout: Duration,
    time_scale: u32,
    extras: Arc<Extras>,
    out: Mutex<Summary>,
    cancelled_start: AtomicU64,
    cancelled_stop: AtomicU64,
    cancelled_pause: AtomicU64,
    /// The sandboxes get the `pids` controller (fork storms run under `pids.max`).
    pids: bool,
    /// `<pid>.<run number>`: unique to this run in this process, so runs at once (two
    /// tests of one binary, two runners) never take each other's processes, freezer
    /// cgroups or network namespaces for their own.
    run: String,
}

impl Ctx {
    /// The `TORTURE_TAG` of a sandbox of this run.
    fn tag(&self, id: &SandboxId) -> String {
        format!("{}.{id}", self.run)
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// What one lifecycle found.
#[derive(Default)]
struct Outcome {
    leaks: Vec<Leak>,
    errors: Vec<String>,
    /// A fork storm that ran; whether it hit `pids.max` before the stop.
    storm: Option<bool>,
    /// The nested payload's `cgroup.subtree_control` result (variant 0) and the
    /// descendants it made (variant 2).
    nested: Option<(Option<String>, u64)>,
}

/// Runs the torture with `opts` until the count or duration is reached or `stop` is
/// raised; cleans up everything it created (the root if it made it, freezer cgroups,
/// network namespaces, the scratch directory) and returns the summary.
pub async fn run(opts: Options, stop: StopFlag) -> Result<Summary, String> {
    let t0 = Instant::now();
    let mount = paddock_cgroup::mount::discover().map_err(|e| e.to_string())?;
    let (root_path, made_root) = match &opts.cgroup_root {
        Some(p) => (p.clone(), !p.exists()),
        None => (
            mount
                .mount_point
                .join(format!("paddock-torture.{}", std::process::id())),
            true,
        ),
    };
    let root = Root::open_or_create(&root_path).map_err(|e| e.to_string())?;
    let scratch = opts.scratch.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("paddock-torture.{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let bin = scratch.join("bin");
    payloads::install(&bin).map_err(|e| format!("write payloads: {e}"))?;
    let mut cfg = Config::new(root.clone());
    cfg.quarantine_recheck = Duration::from_millis(100);
    // The sandboxes get the default `Config::controllers` the root is offered (`pids`,
    // `memory`, `cpu`, `io`: all four in the pure-v2 VM, none on a hybrid host): `pids`
    // bounds the fork storms, and the nested payload enables one in its own subtree.
    let pids = std::fs::read_to_string(root.path().join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "pids");
    let sup = Supervisor::new(cfg).map_err(|e| e.to_string())?;

    let mut summary = Summary {
        seed: opts.seed,
        concurrency: opts.concurrency,
        pids_controller: pids,
        ..Summary::default()
    };
    let mut cases = Vec::new();
    for c in &opts.cases {
        match case_unavailable(*c) {
            Some(why) => summary.skipped.push(format!("{}: {why}", c.name())),
            None => cases.push(*c),
        }
    }
    let extras = Arc::new(Extras::default());
    *ACTIVE.lock().unwrap() = Some(Active {
        root: root.path().to_path_buf(),
        made_root,
        extras: extras.clone(),
        scratch: scratch.clone(),
    });
    let ctx = Arc::new(Ctx {
        sup: sup.clone(),
        root: root.clone(),
        scratch: scratch.clone(),
        bin,
        cases,
        seed: opts.seed,
        verbose: opts.verbose,
        lifecycle_timeout: opts.lifecycle_timeout,
        time_scale: opts.time_scale.max(1),
        extras: extras.clone(),
        out: Mutex::new(summary),
        cancelled_start: AtomicU64::new(0),
        cancelled_stop: AtomicU64::new(0),
        cancelled_pause: AtomicU64::new(0),
        pids,
        run: format!("{}.{}", std::process::id(), RUNS.fetch_add(1, Relaxed)),
    });
    if !ctx.cases.is_empty() {
        let next = Arc::new(AtomicU64::new(0));
        let deadline = opts.duration.map(|d| Instant::now() + d);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..opts.concurrency.max(1) {
            let ctx = ctx.clone();
            let next = next.clone();
            let stop = stop.clone();
            let count = opts.count;
            set.spawn(async move {
                loop {
                    if stop.is_raised() || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = next.fetch_add(1, Relaxed);
                    if count.is_some_and(|c| n >= c) {
                        break;
                    }
                    lifecycle(&ctx, n).await;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                ctx.out
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("worker panicked: {e}"));
            }
        }
    }

    // Anything the supervisor still knows about (only after an interruption or a bug).
    for (id, r) in sup.stop_all().await {
        if let Err(e) = r {
            ctx.out
                .lock()
                .unwrap()
                .errors
                .push(format!("final stop of {id}: {e}"));
        }
    }
    extras.cleanup();

    // The final walk: nothing below the root, no process in it.
    let hier = root.hierarchy_path().to_owned();
    let (left_dirs, left_procs) = tokio::task::spawn_blocking({
        let p = root.path().to_path_buf();
        move || {
            // A process still exiting gets a moment; one still there afterwards is a leak.
            let mut procs = check::procs_under_hierarchy(&hier);
            if !procs.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
                procs = check::procs_under_hierarchy(&hier);
            }
            (check::subdirs(&p), procs)
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut summary = std::mem::take(&mut *ctx.out.lock().unwrap());
    for d in left_dirs {
        summary.leaks.push(Leak {
            lifecycle: None,
            sandbox: d.display().to_string(),
            case: None,
            fault: None,
            kind: "cgroup",
            detail: "left under the torture root at the end".into(),
        });
    }
    for p in left_procs {
        summary.leaks.push(Leak {
            lifecycle: None,
            sandbox: p.cgroup.clone(),
            case: None,
            fault: None,
            kind: "process",
            detail: format!("{p:?} left under the torture root at the end"),
        });
    }
    let c = sup.counters();
    summary.processes_killed_after_grace = c.killed_after_grace.load(Relaxed);
    summary.quarantines = c.stops_quarantined.load(Relaxed);
    summary.quarantines_drained = c.quarantines_drained.load(Relaxed);
    summary.starts_failed = c.starts_failed.load(Relaxed);
    summary.stops_failed = c.stops_failed.load(Relaxed);
    let rc = root.counters().snapshot();
    summary.ebusy_fallbacks = rc.rmdir_fallback;
    summary.kill_rewrites = rc.kill_rewrites;
    summary.cancelled = BTreeMap::from([
        ("start".to_string(), ctx.cancelled_start.load(Relaxed)),
        ("stop".to_string(), ctx.cancelled_stop.load(Relaxed)),
        ("pause".to_string(), ctx.cancelled_pause.load(Relaxed)),
    ]);
    summary.leaks_found = summary.leaks.len() as u64;
    summary.interrupted = stop.is_raised();
    summary.elapsed_s = t0.elapsed().as_secs_f64();

    // Clean up: the root (if this run made it), the scratch directory.
    drop(sup);
    if made_root && let Err(e) = check::destroy_tree(root.path(), Duration::from_secs(10)) {
        summary
            .errors
            .push(format!("could not remove {}: {e}", root.path().display()));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    ACTIVE.lock().unwrap().take();
    Ok(summary)
}

fn spec_for(
    ctx: &Ctx,
    n: u64,
    id: &SandboxId,
    case: Case,
    rng: &mut Rng,
    ns: Option<&str>,
) -> SandboxSpec {
    // The variant: the first four rounds over the cases take variants 0, 1, 2, 3 in turn
    // (so three lifecycles of one case alone see three variants), later ones at random.
    let drawn = rng.range(0, 4);
    let k = ctx.cases.len().max(1) as u64;
    let tv = if n < 4 * k { n / k } else { drawn };
    let bin = ctx.bin.display().to_string();
    let sh = |script: &str| ("/bin/sh".to_string(), vec![format!("{bin}/{script}")]);
    let (command, args, tn): (String, Vec<String>, u64) = match case {
        Case::Wrapper => (
            "/bin/bash".into(),
            vec![
                "-c".into(),
                r#"echo $$ >> "$TP"; /bin/sh "$TB/worker.sh"; true"#.into(),
            ],
            0,
        ),
        Case::WrapperNetns => (
            "unshare".into(),
            vec![
                "-m".into(),
                "--".into(),
                "/bin/bash".into(),
                "-c".into(),
                r#"echo $$ >> "$TP"; mount --make-rprivate / && ip netns exec "$TNS" /bin/sh "$TB/worker.sh"; true"#.into(),
            ],
            0,
        ),
        Case::DoubleFork => {
            let (c, a) = sh("double-fork.sh");
            (c, a, 0)
        }
        Case::Sigblock => {
            let (c, a) = sh("sigblock.sh");
            (c, a, 0)
        }
        Case::Sigstop => {
            let (c, a) = sh("sigstop.sh");
            (c, a, 0)
        }
        Case::ForkStorm => {
            let (c, a) = sh("fork-storm.sh");
            (c, a, rng.range(500, 3000))
        }
        Case::Building => {
            let (c, a) = sh("tree.sh");
            (c, a, rng.range(3, 7))
        }
        Case::Threads => (
            "python3".into(),
            vec![format!("{bin}/threads.py")],
            rng.range(16, 200),
        ),
        Case::Vfork => (
            "python3".into(),
            vec![format!("{bin}/vfork.py")],
            rng.range(1, 4),
        ),
        Case::InstantExit => {
            if tv == 3 {
                ("/bin/true".into(), vec![], 0)
            } else {
                let (c, a) = sh("instant-exit.sh");
                (c, a, 0)
            }
        }
        Case::NestedCgroups => (
            "/bin/bash".into(),
            vec![format!("{bin}/nested.sh")],
            if tv == 2 {
                rng.range(1000, 5001)
            } else {
                0
            },
        ),
        Case::Unkillable => (
            "/bin/sh".into(),
            vec![
                "-c".into(),
                r#"echo $$ >> "$TP"; echo r > "$TR"; exec sleep 300"#.into(),
            ],
            0,
        ),
    };
    let mut spec = SandboxSpec::new(id.clone(), command, args);
    let file = |ext: &str| ctx.scratch.join(format!("{id}.{ext}"));
    for (k, v) in [
        ("TP", file("pids").display().to_string()),
        ("TR", file("ready").display().to_string()),
        ("TB", bin.clone()),
        ("TV", tv.to_string()),
        ("TN", tn.to_string()),
        ("TORTURE_TAG", ctx.tag(id)),
        ("PATH", PAYLOAD_PATH.to_string()),
    ] {
        spec.env.insert(k.into(), v);
    }
    if let Some(ns) = ns {
        spec.env.insert("TNS".into(), ns.into());
    }
    spec.stdio.stdout = StdioTarget::File(file("log"));
    spec.stdio.stderr = StdioTarget::File(file("log"));
    spec.stop = StopPolicy {
        grace_period_ms: [20, 100, 300, 1000][rng.range(0, 4) as usize],
        ..StopPolicy::default()
    };
    if case == Case::Unkillable {
        spec.stop.grace_period_ms = 50;
        spec.stop.kill_timeout_ms = 300;
    }
    if case == Case::NestedCgroups {
        spec.limits = Limits {
            max_descendants: Some(rng.range(500, 5001)),
            max_depth: Some(rng.range(3, 20)),
            ..Limits::default()
        };
    }
    if case == Case::ForkStorm {
        // Drawn whether or not it applies, so a seed picks the same choices everywhere.
        let max = rng.range(32, 257);
        if ctx.pids {
            spec.limits.pids_max = Some(max);
        }
    }
    if case == Case::InstantExit && rng.chance(30) {
        spec.on_main_exit = OnMainExit::KeepRunning;
    }
    spec
}

async fn wait_ready(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// The `max` count of a `pids.events` file (forks refused at `pids.max`); 0 if unreadable.
fn pids_max_events(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs one lifecycle end to end and records what it found.
async fn lifecycle(ctx: &Arc<Ctx>, n: u64) {
    let mut rng = Rng::new(ctx.seed, n);
    // The first lifecycles take each case once (so a run of at least that many covers
    // them all); later ones pick at random.
    let pick = rng.range(0, ctx.cases.len() as u64) as usize;
    let case = ctx.cases[if (n as usize) < ctx.cases.len() {
        n as usize
    } else {
        pick
    }];
    let mut fault = FAULTS[rng.range(0, FAULTS.len() as u64) as usize];
    if case == Case::Unkillable && !matches!(fault, Fault::Plain | Fault::RacingStops) {
        fault = Fault::Plain;
    }
    let id = SandboxId::new(format!("t{n}-{}", case.name())).expect("valid id");
    let t0 = Instant::now();
    let res = tokio::time::timeout(
        ctx.lifecycle_timeout,
        one(ctx, n, &id, case, fault, &mut rng),
    )
    .await;
    let out = match res {
        Ok(o) => o,
        Err(_) => {
            let states: Vec<String> = ctx
                .sup
                .list()
                .into_iter()
                .filter(|i| i.id == id)
                .map(|i| {
                    format!(
                        "{} {:?} paused={} pid={:?}",
                        i.lifecycle, i.state, i.paused, i.pid
                    )
                })
                .collect();
            let mut o = Outcome::default();
            o.errors.push(format!(
                "lifecycle {n} ({id}, {fault:?}) did not finish within {:?} (supervisor: {states:?})",
                ctx.lifecycle_timeout
            ));
            // Whatever happened, everything of the sandbox goes and the checks run.
            if tokio::time::timeout(Duration::from_secs(10), ctx.sup.kill(&id, None))
                .await
                .is_err()
            {
                o.errors.push(format!(
                    "lifecycle {n} ({id}): kill after the hang did not return in 10 s"
                ));
            }
            o.leaks
                .extend(check_after_stop(ctx, n, &id, case, fault).await);
            o
        }
    };
    let _ = ctx.sup.forget(&id);
    for ext in ["pids", "ready", "log"] {
        let _ = std::fs::remove_file(ctx.scratch.join(format!("{id}.{ext}")));
    }
    if ctx.verbose {
        eprintln!(
            "lifecycle {n} {id} {fault:?}: {:?} leaks {} errors {}",
            t0.elapsed(),
            out.leaks.len(),
            out.errors.len()
        );
    }
    for e in &out.errors {
        eprintln!("paddock-torture: ERROR: {e}");
    }
    for l in &out.leaks {
        eprintln!("paddock-torture: LEAK: {l:?}");
    }
    let mut s = ctx.out.lock().unwrap();
    s.lifecycles_completed += 1;
    *s.per_case.entry(case.name().into()).or_default() += 1;
    *s.per_fault.entry(format!("{fault:?}")).or_default() += 1;
    s.leaks.extend(out.leaks);
    s.errors.extend(out.errors);
    if let Some(hit) = out.storm {
        s.fork_storms += 1;
        s.fork_storms_hit_pids_max += u64::from(hit);
    }
    if let Some((sc, made)) = out.nested {
        if let Some(sc) = sc {
            *s.nested_subtree_control.entry(sc).or_default() += 1;
        }
        s.nested_max_descendants_made = s.nested_max_descendants_made.max(made);
    }
}

async fn one(
    ctx: &Arc<Ctx>,
    n: u64,
    id: &SandboxId,
    case: Case,
    fault: Fault,
    rng: &mut Rng,
) -> Outcome {
    let mut out = Outcome::default();
    let sup = &ctx.sup;
    let pidfile = ctx.scratch.join(format!("{id}.pids"));
    let ready = ctx.scratch.join(format!("{id}.ready"));
    let _ = std::fs::write(&pidfile, "");
    let ns = if case == Case::WrapperNetns {
        let name = format!("paddock-t-torture-{}-{n}", ctx.run);
        if let Err(e) = netns_add(&name) {
            out.errors.push(e);
            return out;
        }
        ctx.extras.netns.lock().unwrap().push(name.clone());
        Some(name)
    } else {
        None
    };
    let spec = spec_for(ctx, n, id, case, rng, ns.as_deref());

    // Start, perhaps dropping the future after a short timeout.
    let info: Option<SandboxInfo> = if fault == Fault::CancelStart {
        let mut spec = spec.clone();
        if rng.chance(30) {
            // A start that fails after the cgroup exists (its clean-up has await points).
            spec.cwd = Some("/nonexistent-paddock-torture".into());
        }
        match tokio::time::timeout(Duration::from_micros(rng.range(0, 3000)), sup.start(spec)).await
        {
            Ok(Ok(s)) => Some(s.info),
            Ok(Err(_)) => None,
            Err(_) => {
                ctx.cancelled_start.fetch_add(1, Relaxed);
                // The dropped start must not leave a half-made sandbox: whatever the
                // registry shows must be a state that ends on its own or can be stopped.
                tokio::time::sleep(ms(50)).await;
                match sup.get(id) {
                    Some(i) if i.state == State::Creating => {
                        out.errors.push(format!(
                            "{id}: start dropped at an await point left the sandbox in `creating`"
                        ));
                        Some(i)
                    }
                    other => other,
                }
            }
        }
    } else {
        match sup.start(spec).await {
            Ok(s) => Some(s.info),
            Err(e) => {
                out.errors.push(format!("{id}: start failed: {e}"));
                None
            }
        }
    };
    let Some(info) = info else {
        out.leaks
            .extend(check_after_stop(ctx, n, id, case, fault).await);
        if let Some(ns) = ns {
            netns_delete(&ns);
            ctx.extras.netns.lock().unwrap().retain(|x| x != &ns);
        }
        return out;
    };
    let lc = info.lifecycle;

    // Let the tree be built (or not: the stop then races the building).
    match (case, fault) {
        (_, Fault::StopVsMainExit) | (Case::InstantExit, _) => {}
        (Case::Building, _) => tokio::time::sleep(ms(rng.range(0, 40))).await,
        (Case::ForkStorm, _) => {
            wait_ready(&ready, Duration::from_secs(5) * ctx.time_scale).await;
            // Under `pids.max`, half the storms are stopped once they have hit the limit
            // (a fork refused), the others mid-storm.
            if ctx.pids && rng.chance(50) {
                let ev = info.cgroup_path.join("pids.events");
                let deadline = Instant::now() + Duration::from_secs(5) * ctx.time_scale;
                while pids_max_events(&ev) == 0 && Instant::now() < deadline {
                    tokio::time::sleep(ms(5)).await;
                }
            }
            tokio::time::sleep(ms(rng.range(5, 150)) * ctx.time_scale).await;
        }
        _ => {
            if !wait_ready(&ready, Duration::from_secs(10) * ctx.time_scale).await
                && sup
                    .get_lifecycle(id, lc)
                    .is_some_and(|i| i.state == State::Running)
            {
                let log = std::fs::read_to_string(ctx.scratch.join(format!("{id}.log")))
                    .unwrap_or_default();
                out.errors.push(format!(
                    "{id}: payload never became ready (log: {})",
                    log.trim()
                ));
            }
        }
    }

    // The unkillable process: the main process frozen by a v1 freezer (state D).
    let mut freezer = None;
    if case == Case::Unkillable {
        match V1Freezer::create(&ctx.extras, &ctx.run, n) {
            Ok(f) => {
                let pid = info.pid.unwrap_or(0);
                let fr = tokio::task::spawn_blocking({
                    let p = f.0.clone();
                    move || V1Freezer(p).freeze(pid)
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                if let Err(e) = fr {
                    out.errors.push(format!("{id}: {e}"));
                }
                freezer = Some((f, pid));
            }
            Err(e) => out.errors.push(format!("{id}: create v1 freezer: {e}")),
        }
    }

    // What the payload did before the stop: a fork storm's refused forks (the stop's own
    // `pids.max = 0` counts too, so read before it); the nested payload's log lines.
    if case == Case::ForkStorm {
        out.storm = Some(pids_max_events(&info.cgroup_path.join("pids.events")) > 0);
    }
    if case == Case::NestedCgroups {
        let log =
            std::fs::read_to_string(ctx.scratch.join(format!("{id}.log"))).unwrap_or_default();
        let sc = log
            .lines()
            .find_map(|l| l.strip_prefix("subtree_control: "))
            .map(str::to_owned);
        let made = log
            .lines()
            .find_map(|l| l.strip_prefix("descendants: "))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        out.nested = Some((sc, made));
    }

    // The stop, with the fault.
    let report = stop_with_fault(ctx, id, lc, fault, rng, &mut out).await;

    if let Some((f, pid)) = freezer {
        match &report {
            Some(r) if r.stuck.iter().any(|s| s.pid == pid) => {
                let q = sup.get_lifecycle(id, lc).map(|i| i.state);
                if q != Some(State::Quarantined) {
                    out.errors
                        .push(format!("{id}: stuck process reported but state is {q:?}"));
                }
                if !info.cgroup_path.exists() {
                    out.errors
                        .push(format!("{id}: quarantined sandbox lost its cgroup"));
                }
            }
            other => out.errors.push(format!(
                "{id}: a frozen (state D) process did not quarantine the sandbox: {other:?}"
            )),
        }
        untrack_freezer(&ctx.extras, &f);
        let _ = tokio::task::spawn_blocking(move || f.release()).await;
        // The quarantine drains once the process can die.
        let deadline = Instant::now() + Duration::from_secs(10) * ctx.time_scale;
        while sup
            .get_lifecycle(id, lc)
            .is_some_and(|i| i.state == State::Quarantined)
        {
            if Instant::now() > deadline {
                out.errors
                    .push(format!("{id}: quarantine did not drain within 10 s"));
                break;
            }
            tokio::time::sleep(ms(20)).await;
        }
    }

    match sup.get_lifecycle(id, lc).map(|i| i.state) {
        Some(State::Stopped) => {}
        other => out
            .errors
            .push(format!("{id}: ended in state {other:?}, not stopped")),
    }
    out.leaks
        .extend(check_after_stop(ctx, n, id, case, fault).await);
    if let Some(ns) = ns {
        netns_delete(&ns);
        ctx.extras.netns.lock().unwrap().retain(|x| x != &ns);
    }
    out
}

/// Stops lifecycle `lc` of `id` the way `fault` says and returns the final report.
async fn stop_with_fault(
    ctx: &Arc<Ctx>,
    id: &SandboxId,
    lc: paddock_supervisor::LifecycleId,
    fault: Fault,
    rng: &mut Rng,
    out: &mut Outcome,
) -> Option<StopReport> {
    let sup = &ctx.sup;
    match fault {
        Fault::Plain | Fault::CancelStart | Fault::StopVsMainExit => {
            match sup.stop(id, Some(lc)).await {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors.push(format!("{id}: stop: {e}"));
                    None
                }
            }
        }
        Fault::RacingStops => {
            let k = rng.range(2, 6);
            let with_kill = rng.chance(50);
            let mut set = tokio::task::JoinSet::new();
            for i in 0..k {
                let sup = sup.clone();
                let id = id.clone();
                let kill = with_kill && i == k - 1;
                set.spawn(async move {
                    if kill {
                        sup.kill(&id, Some(lc)).await
                    } else {
                        sup.stop(&id, Some(lc)).await
                    }
                });
            }
            let mut reports = Vec::new();
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(r)) => reports.push(r),
                    Ok(Err(e)) => out.errors.push(format!("{id}: racing stop: {e}")),
                    Err(e) => out.errors.push(format!("{id}: stop task: {e}")),
                }
            }
            if reports.windows(2).any(|w| w[0] != w[1]) {
                out.errors.push(format!(
                    "{id}: racing stops saw different outcomes: {reports:?}"
                ));
            }
            reports.pop()
        }
        Fault::StopVsPause => {
            let (p, s) = tokio::join!(sup.pause(id, Some(lc)), sup.stop(id, Some(lc)));
            if let Err(e) = p
                && !matches!(e, SupError::InvalidState { .. })
            {
                out.errors.push(format!("{id}: pause racing stop: {e}"));
            }
            match s {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors.push(format!("{id}: stop racing pause: {e}"));
                    None
                }
            }
        }
        Fault::KillDuringStop => {
            let sup2 = sup.clone();
            let id2 = id.clone();
            let t0 = Instant::now();
            let graceful = tokio::spawn(async move {
                sup2.stop_with_grace(&id2, Some(lc), Duration::from_secs(30))
                    .await
            });
            tokio::time::sleep(ms(rng.range(0, 100))).await;
            let k = sup.kill(id, Some(lc)).await;
            let g = graceful.await;
            if t0.elapsed() > Duration::from_secs(15) {
                out.errors.push(format!(
                    "{id}: kill did not cut the 30 s grace period short ({:?})",
                    t0.elapsed()
                ));
            }
            match (k, g) {
                (Ok(k), Ok(Ok(g))) => {
                    if k != g {
                        out.errors.push(format!(
                            "{id}: kill and graceful stop saw different outcomes: {k:?} / {g:?}"
                        ));
                    }
                    Some(k)
                }
                (k, g) => {
                    out.errors
                        .push(format!("{id}: kill during stop: {k:?} / {g:?}"));
                    None
                }
            }
        }
        Fault::CancelStop => {
            let d = Duration::from_micros(rng.range(0, 30_000));
            if tokio::time::timeout(d, sup.stop(id, Some(lc)))
                .await
                .is_err()
            {
                ctx.cancelled_stop.fetch_add(1, Relaxed);
            }
            // The stop either began (and finishes in its own task) or never did.
            let st = sup.get_lifecycle(id, lc).map(|i| i.state);
            let r = if st == Some(State::Running) {
                sup.stop(id, Some(lc)).await
            } else {
                sup.wait_stopped(id, Some(lc)).await
            };
            match r {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop after a cancelled stop: {e}"));
                    None
                }
            }
        }
        Fault::CancelPause => {
            let d = Duration::from_micros(rng.range(0, 5_000));
            if tokio::time::timeout(d, sup.pause(id, Some(lc)))
                .await
                .is_err()
            {
                ctx.cancelled_pause.fetch_add(1, Relaxed);
                // Independent check: once the abandoned pause has settled (the supervisor
                // finishes it on its own; its freezer wait is bounded by 10 s), the cgroup's
                // freeze state and the reported one agree.
                let deadline =
                    tokio::time::Instant::now() + Duration::from_secs(12) * ctx.time_scale;
                while let Some(i) = sup.get_lifecycle(id, lc) {
                    let frozen = std::fs::read_to_string(i.cgroup_path.join("cgroup.freeze"))
                        .is_ok_and(|s| s.trim() == "1");
                    if frozen == i.paused || i.state != State::Running {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        out.errors.push(format!(
                            "{id}: a pause dropped at an await point left the cgroup frozen={frozen} \
                             while the sandbox reports paused={}",
                            i.paused
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            match sup.stop(id, Some(lc)).await {
                Ok(r) => Some(r),
                Err(e) => {
                    out.errors
                        .push(format!("{id}: stop after a cancelled pause: {e}"));
                    None
                }
            }
        }
    }
}

/// The independent checks after a stop: no cgroup directory of the sandbox under the root,
/// no live process tagged with the sandbox. Anything found is cleaned up so the run goes on.
async fn check_after_stop(
    ctx: &Arc<Ctx>,
    n: u64,
    id: &SandboxId,
    case: Case,
    fault: Fault,
) -> Vec<Leak> {
    let root = ctx.root.path().to_path_buf();
    let pidfile = ctx.scratch.join(format!("{id}.pids"));
    let tag = ctx.tag(id);
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let prefix = format!("{tag}{}", paddock_supervisor::CGROUP_SEPARATOR);
        if let Ok(d) = std::fs::read_dir(&root) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && e.path().is_dir() {
                    let sub = check::subdirs(&e.path()).len();
                    found.push((
                        "cgroup",
                        format!(
                            "{} exists after the stop ({sub} descendants)",
                            e.path().display()
                        ),
                    ));
                    let _ = check::destroy_tree(&e.path(), Duration::from_secs(10));
                }
            }
        }
        let reported = check::reported_pids(&pidfile);
        for p in check::tagged_survivors(&tag, &reported, Duration::from_millis(100)) {
            found.push((
                "process",
                format!(
                    "pid {} ({}, state {}, cgroup {}) alive after the stop{}",
                    p.pid,
                    p.comm,
                    p.state,
                    p.cgroup,
                    if reported.contains(&p.pid) {
                        " (reported by the payload)"
                    } else {
                        " (found by /proc environ scan)"
                    }
                ),
            ));
            check::kill_tagged(p.pid, &tag);
        }
        found
    })
    .await
    .unwrap_or_default();
    found
        .into_iter()
        .map(|(kind, detail)| Leak {
            lifecycle: Some(n),
            sandbox: id.to_string(),
            case: Some(case),
            fault: Some(fault),
            kind,
            detail,
        })
        .collect()
}

/// The checks the property tests make for one candidate ID: either [`SandboxId::new`]
/// rejects it, or starting a sandbox with it creates its cgroup directly under `root`
/// (the created directory's parent is the root) and stopping it removes it. Returns a
/// description of the violation, if any.
pub async fn check_id_containment(sup: &Supervisor, candidate: &str) -> Result<bool, String> {
    let Ok(id) = SandboxId::new(candidate) else {
        return Ok(false);
    };
    let root = sup.root().path().to_path_buf();
    let before = check::subdirs(&root);
    let mut spec = SandboxSpec::new(id.clone(), "/bin/sleep", ["30"]);
    spec.network = Network::Host;
    let started = sup
        .start(spec)
        .await
        .map_err(|e| format!("start {candidate:?}: {e}"))?;
    let path = started.info.cgroup_path.clone();
    let made: Vec<PathBuf> = check::subdirs(&root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let mut problem = None;
    if path.parent() != Some(root.as_path()) {
        problem = Some(format!(
            "{candidate:?}: cgroup path {} is not directly under the root {}",
            path.display(),
            root.display()
        ));
    } else if made != vec![path.clone()] {
        problem = Some(format!(
            "{candidate:?}: start created {made:?}, expected exactly {}",
            path.display()
        ));
    } else if !path.is_dir() {
        problem = Some(format!("{candidate:?}: {} does not exist", path.display()));
    } else if check::proc_cgroup(started.info.pid.unwrap_or(0)).is_none_or(|c| {
        !c.ends_with(&format!(
            "/{}",
            cgroup_name(id.as_str(), started.info.lifecycle)
        ))
    }) {
        problem = Some(format!(
            "{candidate:?}: the main process is not in its own cgroup"
        ));
    }
    let stop = sup.kill(&id, Some(started.info.lifecycle)).await;
    let _ = sup.forget(&id);
    if let Some(p) = problem {
        return Err(p);
    }
    stop.map_err(|e| format!("kill {candidate:?}: {e}"))?;
    if path.exists() {
        return Err(format!(
            "{candidate:?}: {} left after the stop",
            path.display()
        ));
    }
    Ok(true)
}
