//! The run: options, the workers that take lifecycles one after another, one lifecycle
//! from start to the checks after its stop, the final walk, and the clean-up (also the
//! emergency one after a second Ctrl-C).
//!
//! Why one file of over 600 lines: the steps of one lifecycle (start with its fault, wait,
//! stop with its fault, check) read top to bottom; the checks themselves are in `check.rs`.

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
    /// Run a second supervisor on the same root beside the lifecycles, with an owner of
    /// its own (`daemon:<hex>`), calling `reclaim()` over and over and running sandboxes
    /// of its own now and then: it must never touch a cgroup of this run's supervisor
    /// (anything its reclaims kill, remove or fail on is an error).
    pub rival: bool,
    /// Run every lifecycle jailed (see [`crate::case::jail_for`]): pid, mount, ipc and uts
    /// namespaces, a minimal init as pid 1, the default seccomp profile, the capabilities
    /// of a jailed root, the cgroup file system hidden. Cases a jail rules out are skipped
    /// with the reason.
    pub jailed: bool,
    /// Give every lifecycle that would run in the host's network a `veth` network of its
    /// own (isolated, with a tap; see `net.rs`), and count every link, pinned namespace,
    /// nftables rule and address lease of the run's supervisors left at the end as a leak.
    pub net: bool,
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
            rival: true,
            jailed: false,
            net: false,
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
    let Some(a) = ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
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
    /// See [`Options::jailed`].
    pub(crate) jailed: bool,
    /// See [`Options::net`].
    pub(crate) net: Option<crate::net::NetRun>,
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

    /// The root's cgroup v2 path (as `/proc/<pid>/cgroup` shows it).
    pub(crate) fn hierarchy(&self) -> &str {
        self.root.hierarchy_path()
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
    let run_id = format!("{}.{}", std::process::id(), RUNS.fetch_add(1, Relaxed));
    let mut net_skip = None;
    let net = match (opts.net, crate::net::NetRun::unavailable()) {
        (true, None) => Some(crate::net::NetRun::new(&run_id)),
        (true, Some(why)) => {
            net_skip = Some(format!("networks: {why}"));
            None
        }
        (false, _) => None,
    };
    if let Some(n) = &net {
        n.configure(&mut cfg);
    }
    let owner = cfg.owner.clone();
    // The sandboxes get the default `Config::controllers` the root is offered (`pids`,
    // `memory`, `cpu`, `io`: all four in the pure-v2 VM, none on a hybrid host): `pids`
    // bounds the fork storms, and the nested payload enables one in its own subtree.
    let pids = std::fs::read_to_string(root.path().join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "pids");
    let sup = Supervisor::new(cfg).map_err(|e| e.to_string())?;

    let mut summary = Summary {
        skipped: net_skip.into_iter().collect(),
        seed: opts.seed,
        concurrency: opts.concurrency,
        pids_controller: pids,
        jailed: opts.jailed,
        ..Summary::default()
    };
    let mut cases = Vec::new();
    for c in &opts.cases {
        let why = case_unavailable(*c)
            .or_else(|| opts.jailed.then(|| case::unavailable_jailed(*c)).flatten());
        match why {
            Some(why) => summary.skipped.push(format!("{}: {why}", c.name())),
            None => cases.push(*c),
        }
    }
    let host = Arc::new(HostResources::default());
    *ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Active {
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
        run: run_id,
        jailed: opts.jailed,
        net,
    });
    let rival_done = StopFlag::default();
    let rival = if opts.rival && !ctx.cases.is_empty() {
        Some(tokio::spawn(run_rival(ctx.clone(), rival_done.clone())))
    } else {
        None
    };
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

    rival_done.raise();
    if let Some(r) = rival {
        let res = r.await.unwrap_or_else(|e| RivalResult {
            errors: vec![format!("the rival supervisor's task panicked: {e}")],
            ..RivalResult::default()
        });
        let mut o = ctx
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        o.rival_reclaims = res.reclaims;
        o.rival_left_alone = res.left_alone;
        o.rival_sandboxes = res.sandboxes;
        o.errors.extend(res.errors);
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
    let mut summary = std::mem::take(
        &mut *ctx
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
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
    if let Some(n) = &ctx.net {
        let owners = vec![owner.clone(), rival_owner(ctx.seed)];
        let found = tokio::task::spawn_blocking({
            let (n, owners) = (n.clone(), owners.clone());
            move || n.leftovers(&owners)
        })
        .await
        .unwrap_or_default();
        for (kind, detail) in found {
            summary.leaks.push(Leak {
                lifecycle: None,
                sandbox: "(network)".into(),
                case: None,
                fault: None,
                kind,
                detail,
            });
        }
        n.delete_tables(&owners).await;
        n.cleanup();
    }
    let c = sup.counters();
    summary.processes_killed_after_grace = c.killed_after_grace.load(Relaxed);
    summary.processes_killed_without_grace = c.killed_without_grace.load(Relaxed);
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
    ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
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
    ctx.out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(case, fault, out);
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
    if case.start_refused() {
        case::expect_refused_start(ctx, id, case, spec, &mut out).await;
        out.leaks
            .extend(check_after_stop(ctx, n, id, case, fault).await);
        return out;
    }

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
    // A restart loop's first lifecycle may have left the registry for its restarts: its
    // current lifecycle is the one that must have stopped.
    let last = if fault == Fault::RestartLoop {
        ctx.sup.get(id)
    } else {
        ctx.sup.get_lifecycle(id, lc)
    };
    match last.map(|i| i.state) {
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

/// The independent checks after a stop ([`check::after_stop`], and no child of this
/// process — zombie or not — left in the sandbox's cgroups:
/// [`check::own_children_of_sandbox`]), on a blocking thread, as leaks of lifecycle `n`.
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
    let hier = ctx.hierarchy().to_owned();
    let found = tokio::task::spawn_blocking(move || {
        let mut f = check::after_stop(&root, &sandbox, &tag, &pidfile);
        for p in check::own_children_of_sandbox(&hier, &sandbox) {
            f.push((
                "zombie",
                format!(
                    "pid {} ({}, state {}, cgroup {}) is still a child of the supervisor's process after the stop",
                    p.pid, p.comm, p.state, p.cgroup
                ),
            ));
        }
        f
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

/// The owner of the rival supervisor of a run with `seed`.
fn rival_owner(seed: u64) -> String {
    let mut rng = Rng::new(seed, u64::MAX);
    format!("daemon:{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// What the rival supervisor did.
#[derive(Debug, Default)]
struct RivalResult {
    reclaims: u64,
    left_alone: u64,
    sandboxes: u64,
    errors: Vec<String>,
}

/// The second supervisor of [`Options::rival`]: on the same root (opened anew, as another
/// instance would), owner `daemon:<32 hex digits from the seed>`, no subreaper change
/// (this process already is one). Until `done`: `reclaim()` every 5–30 ms, each time
/// checking that it killed, removed and failed on nothing (every cgroup under the root is
/// this run's supervisor's or its own, all recorded); every tenth round it starts a
/// sandbox of its own (`rival-<k>`, a SIGTERM-ignoring `sleep`) and stops the one before,
/// so both instances' cgroups are under the root at once. At the end its sandboxes are
/// stopped; the run's final walk checks that nothing of them is left.
async fn run_rival(ctx: Arc<Ctx>, done: StopFlag) -> RivalResult {
    let mut res = RivalResult::default();
    let root = match Root::open_or_create(ctx.root.path()) {
        Ok(r) => r,
        Err(e) => {
            res.errors.push(format!("rival: open the root: {e}"));
            return res;
        }
    };
    let mut cfg = Config::new(root);
    let mut rng = Rng::new(ctx.seed, u64::MAX);
    cfg.owner = rival_owner(ctx.seed);
    let _ = (rng.next_u64(), rng.next_u64());
    cfg.subreaper = false;
    if let Some(n) = &ctx.net {
        n.configure(&mut cfg);
    }
    let rival = match Supervisor::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            res.errors.push(format!("rival: Supervisor::new: {e}"));
            return res;
        }
    };
    let mut current: Option<SandboxId> = None;
    let mut round = 0u64;
    while !done.is_raised() {
        round += 1;
        match rival.reclaim().await {
            Ok(r) => {
                res.reclaims += 1;
                res.left_alone += r.live_owners as u64;
                if !r.reclaimed.is_empty()
                    || !r.reclaimed_dead_owner.is_empty()
                    || !r.failed.is_empty()
                    || r.processes_killed > 0
                    || !r.net_links.is_empty()
                    || !r.net_namespaces.is_empty()
                    || !r.net_rules.is_empty()
                    || !r.net_leases.is_empty()
                {
                    res.errors.push(format!(
                        "rival: a reclaim touched cgroups it does not own: {r:?}"
                    ));
                }
            }
            Err(e) => res.errors.push(format!("rival: reclaim: {e}")),
        }
        if round % 10 == 0 {
            let id = SandboxId::new(format!("rival-{round}")).expect("valid id");
            let mut spec = paddock_supervisor::SandboxSpec::new(
                id.clone(),
                "/bin/sh",
                ["-c", "trap '' TERM; exec sleep 300"],
            );
            spec.env.insert("TORTURE_TAG".into(), ctx.tag(&id));
            spec.stop.grace_period_ms = 20;
            match rival.start(spec).await {
                Ok(_) => res.sandboxes += 1,
                Err(e) => res.errors.push(format!("rival: start {id}: {e}")),
            }
            if let Some(old) = current.replace(id) {
                rival_stop(&rival, &old, &ctx.tag(&old), &mut res).await;
            }
        }
        tokio::time::sleep(ms(rng.range(5, 30))).await;
    }
    if let Some(old) = current {
        rival_stop(&rival, &old, &ctx.tag(&old), &mut res).await;
    }
    res
}

/// Stops a sandbox of the rival and checks it went like any other.
async fn rival_stop(rival: &Supervisor, id: &SandboxId, tag: &str, res: &mut RivalResult) {
    match tokio::time::timeout(Duration::from_secs(10), rival.stop(id, None)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => res.errors.push(format!("rival: stop {id}: {e}")),
        Err(_) => res
            .errors
            .push(format!("rival: stop {id} did not return within 10 s")),
    }
    let _ = rival.forget(id);
    let root = rival.root().path().to_path_buf();
    let (sandbox, tag) = (id.to_string(), tag.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        check::after_stop(&root, &sandbox, &tag, std::path::Path::new("/nonexistent"))
    })
    .await
    .unwrap_or_default();
    for (kind, detail) in found {
        res.errors.push(format!(
            "rival: {kind} of {id} left after its stop: {detail}"
        ));
    }
}
