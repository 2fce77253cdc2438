//! The payload cases: what each one is, whether it can run on this host, the sandbox
//! spec a lifecycle of it starts with (the scripts themselves are in [`crate::payloads`]),
//! and what a case does around the stop (waiting for the payload, holding a process in
//! state D, reading what the payload did).
//!
//! Why one file of over 600 lines: each case's spec and its around-the-stop behaviour stay
//! side by side, so adding a case is one place to read.

use std::path::Path;
use std::time::{Duration, Instant};

use paddock_supervisor::{
    Limits, OnMainExit, SandboxId, SandboxInfo, SandboxSpec, State, StdioTarget, StopPolicy,
    StopReport,
};
use serde::Serialize;

use crate::faults::Fault;
use crate::host::V1Freezer;
use crate::report::Outcome;
use crate::runner::{Ctx, Rng, ms};

/// The PATH payloads run with (a fixed system PATH, so `python3` is the system one).
pub(crate) const PAYLOAD_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One payload case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// A bash wrapper that does not forward signals, the real work in a child.
    Wrapper,
    /// A wrapper chain across a mount and a network namespace: `unshare -m` → bash →
    /// `ip netns exec` → the child; no link forwards signals.
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
    /// A spec whose stdio targets a FIFO or a socket: the start must be refused at once
    /// with `InvalidSpec`, leaving nothing.
    StdioFifo,
    /// A spec whose stdout or stderr is a regular file another process holds a read lease
    /// on (an open for writing would wait for the lease to break, as on a hung file
    /// system): the start must be refused at once with `InvalidSpec`, leaving nothing.
    StdioHung,
    /// Thousands of short-lived double-forked daemons, each a zombie of this process (the
    /// subreaper) once it exits: after the stop none may be left.
    ZombieStorm,
}

impl Case {
    /// Every case.
    pub const ALL: [Case; 15] = [
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
        Case::StdioFifo,
        Case::StdioHung,
        Case::ZombieStorm,
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
            Case::StdioFifo => "stdio-fifo",
            Case::StdioHung => "stdio-hung",
            Case::ZombieStorm => "zombie-storm",
        }
    }

    /// Whether a start of this case must be refused (the stdio cases): no sandbox runs,
    /// and only [`crate::Fault::Plain`] applies.
    pub fn start_refused(self) -> bool {
        matches!(self, Case::StdioFifo | Case::StdioHung)
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

/// Whether `cmd` is an executable file in [`PAYLOAD_PATH`].
fn installed(cmd: &str) -> bool {
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
        Case::Unkillable => return crate::host::unkillable_unavailable(),
        Case::StdioHung => &["perl"],
        _ => &[],
    };
    need.iter()
        .find(|t| !installed(t))
        .map(|t| format!("`{t}` is not installed"))
}

/// Why `case` cannot run jailed, if it cannot: `wrapper-netns` runs `unshare -m` and
/// `mount`, which a jail's default seccomp profile denies (as it should).
pub fn unavailable_jailed(c: Case) -> Option<String> {
    (c == Case::WrapperNetns).then(|| {
        "jailed: it runs `unshare -m` and `mount`, which the default seccomp profile denies".into()
    })
}

/// The jail of a lifecycle of `case` in a jailed run: pid (with an init and a fresh
/// `/proc`), mount, ipc and uts namespaces, the default seccomp profile, uid 0 with a
/// jailed root's capabilities, the host's tree (the payload scripts and scratch files are
/// on it) with the cgroup file system hidden — but for `nested-cgroups`, whose payload
/// makes cgroups of its own and so sees it unchanged.
pub fn jail_for(case: Case) -> paddock_supervisor::JailSpec {
    let cgroupfs = if case == Case::NestedCgroups {
        "unchanged"
    } else {
        "hidden"
    };
    serde_json::from_value(serde_json::json!({
        "namespaces": ["pid", "mount", "ipc", "uts"],
        "hostname": "torture",
        "seccomp": "default",
        "filesystem": {"cgroupfs": cgroupfs},
    }))
    .expect("a valid jail")
}

/// The spec lifecycle `n` of `case` starts with: the payload's command, its environment
/// (see [`crate::payloads`]), the log file, a grace period and the case's limits. `ns` is
/// the network namespace of a `wrapper-netns` lifecycle.
///
/// The random draws happen in a fixed order whatever applies here, so that a seed picks
/// the same choices on every host.
pub(crate) fn spec(
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
        Case::StdioFifo | Case::StdioHung => (
            "/bin/sh".into(),
            vec!["-c".into(), r#"echo $$ >> "$TP"; exec sleep 300"#.into()],
            0,
        ),
        Case::ZombieStorm => {
            let (c, a) = sh("zombie-storm.sh");
            (c, a, rng.range(1000, 3001))
        }
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
    let file = |ext: &str| ctx.scratch_file(id, ext);
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
    if ctx.jailed {
        spec.jail = Some(jail_for(case));
    }
    if let Some(n) = &ctx.net
        && spec.network == paddock_supervisor::Network::Host
    {
        spec.network = n.network();
    }
    spec
}

/// Waits until the payload wrote its ready file (a line ending in a newline) or `timeout`
/// passes; returns whether it did.
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

/// Lets the payload's tree be built before the stop — or not, where the stop is meant to
/// race the building: no wait for `instant-exit`, `StopVsMainExit` or `DeadlineVsStop`
/// (whose deadline of a few ms stops it at any point of the building), 0–40 ms for
/// `building`, a fork storm is stopped 5–150 ms into it (under `pids.max` half the time
/// only once a fork was refused); the others until their ready file is written (a payload
/// still running that never got ready is an error).
pub(crate) async fn wait_before_stop(
    ctx: &Ctx,
    id: &SandboxId,
    case: Case,
    fault: Fault,
    info: &SandboxInfo,
    rng: &mut Rng,
    out: &mut Outcome,
) {
    let ready = ctx.scratch_file(id, "ready");
    match (case, fault) {
        (_, Fault::StopVsMainExit | Fault::DeadlineVsStop | Fault::RestartLoop)
        | (Case::InstantExit, _) => {}
        (Case::Building, _) => tokio::time::sleep(ms(rng.range(0, 40))).await,
        // Ready once all daemons are made (variants 0, 2), or at once (1, 3: the stop
        // comes mid-storm); then 0–100 ms more.
        (Case::ZombieStorm, _) => {
            if !wait_ready(&ready, Duration::from_secs(10) * ctx.time_scale).await {
                out.errors
                    .push(format!("{id}: the zombie storm never became ready"));
            }
            tokio::time::sleep(ms(rng.range(0, 100))).await;
        }
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
                && ctx
                    .sup
                    .get_lifecycle(id, info.lifecycle)
                    .is_some_and(|i| i.state == State::Running)
            {
                let log = std::fs::read_to_string(ctx.scratch_file(id, "log")).unwrap_or_default();
                out.errors.push(format!(
                    "{id}: payload never became ready (log: {})",
                    log.trim()
                ));
            }
        }
    }
}

/// `unkillable`: moves the main process into a fresh v1 freezer cgroup and freezes it
/// (state D). Returns the freezer and the PID it holds.
pub(crate) async fn hold_main_in_state_d(
    ctx: &Ctx,
    n: u64,
    id: &SandboxId,
    info: &SandboxInfo,
    out: &mut Outcome,
) -> Option<(V1Freezer, i32)> {
    match ctx.host.create_freezer(&ctx.run, n) {
        Ok(f) => {
            let pid = info.pid.unwrap_or(0);
            let fr = tokio::task::spawn_blocking({
                let f = f.clone();
                move || f.freeze(pid)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = fr {
                out.errors.push(format!("{id}: {e}"));
            }
            Some((f, pid))
        }
        Err(e) => {
            out.errors.push(format!("{id}: create v1 freezer: {e}"));
            None
        }
    }
}

/// What the payload did before the stop, for the summary: whether a fork storm had forks
/// refused at `pids.max` (read before the stop's own `pids.max = 0` counts too); the
/// nested payload's log lines.
pub(crate) fn observe_before_stop(
    ctx: &Ctx,
    id: &SandboxId,
    case: Case,
    info: &SandboxInfo,
    out: &mut Outcome,
) {
    if case == Case::ForkStorm {
        out.storm = Some(pids_max_events(&info.cgroup_path.join("pids.events")) > 0);
    }
    if case == Case::ZombieStorm {
        out.zombies = Some(observe_zombie_storm(ctx, id));
    }
    if case == Case::NestedCgroups {
        let log = std::fs::read_to_string(ctx.scratch_file(id, "log")).unwrap_or_default();
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
}

/// `unkillable`, after the stop: the stop must have reported the frozen `pid` as stuck,
/// with the lifecycle `quarantined` and its cgroup kept; once the freezer is released the
/// quarantine must drain (within 10 s).
pub(crate) async fn expect_quarantine_then_drain(
    ctx: &Ctx,
    id: &SandboxId,
    info: &SandboxInfo,
    report: Option<&StopReport>,
    (freezer, pid): (V1Freezer, i32),
    out: &mut Outcome,
) {
    let sup = &ctx.sup;
    let lc = info.lifecycle;
    match report {
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
    ctx.host.release_freezer(freezer).await;
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

/// How fast a start whose stdio target is a FIFO, a socket or a leased file must be
/// refused.
pub(crate) const REFUSAL_BOUND: Duration = Duration::from_secs(2);

/// `stdio-fifo` and `stdio-hung`: points one of the spec's standard streams at a target
/// the supervisor must refuse without opening it for I/O — a FIFO in the scratch directory
/// (variant 0 stdout, 1 stdin, 2 stderr; nobody has its other end open, so an open would
/// wait forever), a listening unix socket (variant 3, stdout) or, for `stdio-hung`, a
/// regular file a `perl` helper holds a read lease on (stdout for variants 0 and 2,
/// stderr for 1 and 3; an open for writing would wait up to `lease-break-time`, 45 s, as
/// on a hung file system) — and starts it. The start must fail with `InvalidSpec` naming
/// the stream within [`REFUSAL_BOUND`] (10 s at most is waited for it), register nothing
/// that still runs, and leave no descriptor of this process on the target; the lease
/// holder must be left alone (still alive, its lease untouched). The checks after the
/// start (no cgroup, no process) are the runner's.
pub(crate) async fn expect_refused_start(
    ctx: &Ctx,
    id: &SandboxId,
    case: Case,
    mut spec: SandboxSpec,
    out: &mut Outcome,
) {
    let tv: u64 = spec.env.get("TV").and_then(|v| v.parse().ok()).unwrap_or(0);
    let dir = ctx.scratch_file(id, "stdio");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        out.errors
            .push(format!("{id}: create {}: {e}", dir.display()));
        return;
    }
    let mut listener = None;
    let mut holder = None;
    let (fd, target) = match (case, tv) {
        (Case::StdioFifo, 0..=2) => {
            let p = dir.join("fifo");
            if let Err(e) = rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            ) {
                out.errors
                    .push(format!("{id}: mkfifo {}: {e}", p.display()));
                return;
            }
            ([1, 0, 2][tv as usize], p)
        }
        (Case::StdioFifo, _) => {
            let p = dir.join("sock");
            match std::os::unix::net::UnixListener::bind(&p) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    out.errors.push(format!("{id}: bind {}: {e}", p.display()));
                    return;
                }
            }
            (1, p)
        }
        _ => {
            let p = dir.join("leased");
            if let Err(e) = std::fs::write(&p, "") {
                out.errors.push(format!("{id}: write {}: {e}", p.display()));
                return;
            }
            match crate::host::LeaseHolder::take(&p).await {
                Ok(h) => holder = Some(h),
                Err(e) => {
                    out.errors.push(format!("{id}: {e}"));
                    return;
                }
            }
            (if tv % 2 == 0 { 1 } else { 2 }, p)
        }
    };
    let field = ["stdio.stdin", "stdio.stdout", "stdio.stderr"][fd];
    let t = StdioTarget::File(target.clone());
    match fd {
        0 => spec.stdio.stdin = t,
        1 => spec.stdio.stdout = t,
        _ => spec.stdio.stderr = t,
    }
    let t0 = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), ctx.sup.start(spec)).await;
    let took = t0.elapsed();
    out.refused_ms = Some(took.as_secs_f64() * 1000.0);
    match res {
        Err(_) => out.errors.push(format!(
            "{id}: a start with {field} on {} did not return within 10 s",
            target.display()
        )),
        Ok(Ok(s)) => {
            out.errors.push(format!(
                "{id}: a start with {field} on {} succeeded",
                target.display()
            ));
            let _ = ctx.sup.kill(id, Some(s.info.lifecycle)).await;
        }
        Ok(Err(paddock_supervisor::Error::InvalidSpec(msg))) => {
            if !msg.contains(field) {
                out.errors
                    .push(format!("{id}: the refusal does not name {field}: {msg}"));
            }
            if case == Case::StdioHung && !msg.contains("lease") {
                out.errors
                    .push(format!("{id}: the refusal does not name the lease: {msg}"));
            }
        }
        Ok(Err(e)) => out.errors.push(format!(
            "{id}: a start with {field} on {} failed with {e:?}, not InvalidSpec",
            target.display()
        )),
    }
    if took > REFUSAL_BOUND {
        out.errors.push(format!(
            "{id}: refusing {field} on {} took {took:?} (bound {REFUSAL_BOUND:?})",
            target.display()
        ));
    }
    if let Some(i) = ctx.sup.get(id)
        && !matches!(i.state, State::Failed | State::Stopped)
    {
        out.errors.push(format!(
            "{id}: a refused start left lifecycle {} in state {:?}",
            i.lifecycle, i.state
        ));
    }
    let fds = crate::check::own_fds_on(&target);
    if !fds.is_empty() {
        out.errors.push(format!(
            "{id}: this process holds descriptors {fds:?} on {} after the refused start",
            target.display()
        ));
    }
    if let Some(h) = holder
        && let Err(e) = h.release().await
    {
        out.errors.push(format!("{id}: {e}"));
    }
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `zombie-storm`, before the stop: the daemons the payload logged it made so far, and how
/// many children of this process in the sandbox's cgroups are zombies now (so the stop is
/// seen to have zombies to reap).
pub(crate) fn observe_zombie_storm(ctx: &Ctx, id: &SandboxId) -> (u64, u64) {
    let log = std::fs::read_to_string(ctx.scratch_file(id, "log")).unwrap_or_default();
    let made = log
        .lines()
        .find_map(|l| l.strip_prefix("daemons: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let zombies = crate::check::own_children_of_sandbox(ctx.hierarchy(), id.as_str())
        .iter()
        .filter(|p| p.state == "Z")
        .count() as u64;
    (made, zombies)
}
