//! The run: options, the workers that take lifecycles one after another, one lifecycle
//! from start to the checks after its stop, the final walk, and the clean-up (also the
//! emergency one after a second Ctrl-C).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::{Config, SandboxId, State, Supervisor};

use crate::case::{self, Case, case_unavailable};
use crate::check;
use crate::faults::{self, Fault};
use crate::host::HostResources;
use crate::payloads;
use crate::report::{Leak, Outcome, Summary};

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

/// The run in progress, for [`emergency_cleanup`].
struct Active {
    root: PathBuf,
    made_root: bool,
    host: Arc<HostResources>,
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
    a.host.cleanup();
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

/// What every lifecycle of a run shares.
pub(crate) struct Ctx {
    pub(crate) sup: Supervisor,
    root: Root,
    scratch: PathBuf,
    /// Where the payload scripts are.
    pub(crate) bin: PathBuf,
    /// The cases to mix (those that can run here).
    pub(crate) cases: Vec<Case>,
    seed: u64,
    verbose: bool,
    lifecycle_timeout: Duration,
    /// See [`Options::time_scale`].
    pub(crate) time_scale: u32,
    /// Freezer cgroups and network namespaces to remove at the end.
    pub(crate) host: Arc<HostResources>,
    out: Mutex<Summary>,
    pub(crate) cancelled_start: AtomicU64,
    pub(crate) cancelled_stop: AtomicU64,
    pub(crate) cancelled_pause: AtomicU64,
    /// The sandboxes get the `pids` controller (fork storms run under `pids.max`).
    pub(crate) pids: bool,
    /// `<pid>.<run number>`: unique to this run in this process, so runs at once (two
    /// tests of one binary, two runners) never take each other's processes, freezer
    /// cgroups or network namespaces for their own.
    pub(crate) run: String,
}

impl Ctx {
    /// The `TORTURE_TAG` of a sandbox of this run.
    pub(crate) fn tag(&self, id: &SandboxId) -> String {
        format!("{}.{id}", self.run)
    }

    /// The scratch file `<id>.<ext>` of a sandbox: `pids` (the PIDs its payload recorded),
    /// `ready` (written once its tree is built), `log` (its stdout and stderr).
    pub(crate) fn scratch_file(&self, id: &SandboxId, ext: &str) -> PathBuf {
        self.scratch.join(format!("{id}.{ext}"))
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// `n` milliseconds.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
    let host = Arc::new(HostResources::default());
    *ACTIVE.lock().unwrap() = Some(Active {
        root: root.path().to_path_buf(),
        made_root,
        host: host.clone(),
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
        host: host.clone(),
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
                    run_lifecycle(&ctx, n).await;
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
    host.cleanup();

    // The final walk: nothing below the root, no process in it.
    let hier = root.hierarchy_path().to_owned();
    let (left_dirs, left_procs) = tokio::task::spawn_blocking({
        let p = root.path().to_path_buf();
        move || check::leftovers_under(&p, &hier)
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

/// Runs lifecycle `n`: draws its case and fault, runs [`start_stop_check`] under the
/// lifecycle deadline (past it: an error, and the sandbox is killed and checked anyway),
/// removes its scratch files and adds what it found to the summary.
async fn run_lifecycle(ctx: &Arc<Ctx>, n: u64) {
    let mut rng = Rng::new(ctx.seed, n);
    // The first lifecycles take each case once (so a run of at least that many covers
    // them all); later ones pick at random.
    let pick = rng.range(0, ctx.cases.len() as u64) as usize;
    let case = ctx.cases[if (n as usize) < ctx.cases.len() {
        n as usize
    } else {
        pick
    }];
    let fault = Fault::draw(case, &mut rng);
    let id = SandboxId::new(format!("t{n}-{}", case.name())).expect("valid id");
    let t0 = Instant::now();
    let res = tokio::time::timeout(
        ctx.lifecycle_timeout,
        start_stop_check(ctx, n, &id, case, fault, &mut rng),
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
        let _ = std::fs::remove_file(ctx.scratch_file(&id, ext));
    }
    if ctx.verbose {
        eprintln!(
            "paddock-torture: finished lifecycle={n} sandbox={id} case={} fault={fault:?} \
             elapsed={:?} leaks={} errors={}",
            case.name(),
            t0.elapsed(),
            out.leaks.len(),
            out.errors.len()
        );
    }
    for e in &out.errors {
        eprintln!(
            "paddock-torture: ERROR lifecycle={n} case={} fault={fault:?} error={e:?}",
            case.name()
        );
    }
    for l in &out.leaks {
        eprintln!(
            "paddock-torture: LEAK lifecycle={n} sandbox={} case={} fault={fault:?} kind={} \
             detail={:?}",
            l.sandbox,
            case.name(),
            l.kind,
            l.detail
        );
    }
    ctx.out.lock().unwrap().record(case, fault, out);
}

/// Lifecycle `n` of `case` with `fault` from start to the checks after its stop: makes
/// the network namespace a `wrapper-netns` payload enters, starts the sandbox (as the fault
/// says), lets the payload get going, stops it (as the fault says), checks what the case
/// and fault require of the stop and that nothing of the sandbox is left.
async fn start_stop_check(
    ctx: &Arc<Ctx>,
    n: u64,
    id: &SandboxId,
    case: Case,
    fault: Fault,
    rng: &mut Rng,
) -> Outcome {
    let mut out = Outcome::default();
    let _ = std::fs::write(ctx.scratch_file(id, "pids"), "");
    let ns = if case == Case::WrapperNetns {
        let name = format!("paddock-t-torture-{}-{n}", ctx.run);
        if let Err(e) = ctx.host.add_netns(&name) {
            out.errors.push(e);
            return out;
        }
        Some(name)
    } else {
        None
    };
    let spec = case::spec(ctx, n, id, case, rng, ns.as_deref());

    let Some(info) = faults::start_with_fault(ctx, id, spec, fault, rng, &mut out).await else {
        out.leaks
            .extend(check_after_stop(ctx, n, id, case, fault).await);
        if let Some(ns) = ns {
            ctx.host.delete_netns(&ns);
        }
        return out;
    };
    let lc = info.lifecycle;

    case::wait_before_stop(ctx, id, case, fault, &info, rng, &mut out).await;
    let frozen = if case == Case::Unkillable {
        case::hold_main_in_state_d(ctx, n, id, &info, &mut out).await
    } else {
        None
    };
    case::observe_before_stop(ctx, id, case, &info, &mut out);

    let report = faults::stop_with_fault(ctx, id, lc, fault, rng, &mut out).await;

    if let Some(frozen) = frozen {
        case::expect_quarantine_then_drain(ctx, id, &info, report.as_ref(), frozen, &mut out).await;
    }
    match ctx.sup.get_lifecycle(id, lc).map(|i| i.state) {
        Some(State::Stopped) => {}
        other => out
            .errors
            .push(format!("{id}: ended in state {other:?}, not stopped")),
    }
    out.leaks
        .extend(check_after_stop(ctx, n, id, case, fault).await);
    if let Some(ns) = ns {
        ctx.host.delete_netns(&ns);
    }
    out
}

/// The independent checks after a stop ([`check::after_stop`]), on a blocking thread, as
/// leaks of lifecycle `n`.
async fn check_after_stop(
    ctx: &Ctx,
    n: u64,
    id: &SandboxId,
    case: Case,
    fault: Fault,
) -> Vec<Leak> {
    let root = ctx.root.path().to_path_buf();
    let pidfile = ctx.scratch_file(id, "pids");
    let tag = ctx.tag(id);
    let sandbox = id.to_string();
    let found =
        tokio::task::spawn_blocking(move || check::after_stop(&root, &sandbox, &tag, &pidfile))
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
