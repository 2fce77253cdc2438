//! The scenarios and the interleaving driver.
//!
//! Over 600 lines: one driver per scenario, each a short loop over the implementations,
//! kept together so the interleaving rules (warm-up, rotation, leak counting) are read once.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Cli;
use crate::cleanup::BenchRoot;
use crate::implementation::{BurstResult, Fut, Implementation};
use crate::jail::{JailEnv, JailProc};
use crate::paddock_library::Paddock;
use crate::raw_client::{RAW_IMPLS, Raw, RawClient, raw_base};
use crate::report::{Machine, Row, markdown};
use crate::runtime::Runtime;

type Imp = Box<dyn Implementation>;

/// Longest one operation may take (plus the grace period) before it counts as failed, so
/// a hang in an implementation is a reported error, not a benchmark that never ends.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Op {
    Lifecycle,
    JailedLifecycle,
    Leaked,
    WrapperStop(Duration),
}

fn do_op(imp: &mut dyn Implementation, op: Op) -> Fut<'_, Duration> {
    match op {
        Op::Lifecycle => imp.lifecycle(),
        Op::JailedLifecycle => imp.jailed_lifecycle(),
        Op::Leaked => imp.leaked_teardown(),
        Op::WrapperStop(g) => imp.wrapper_stop(g),
    }
}

struct Samples {
    ok: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    limit: usize,
    warmup: usize,
}

/// One progress line on stderr: a short message, then the details as `key=value`.
fn progress(msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    let mut line = format!("paddock-bench: {msg}");
    for (k, v) in fields {
        line += &format!(" {k}={v}");
    }
    eprintln!("{line}");
}

/// Runs `op` on every implementation in `imps`, round-robin per iteration (rotating which
/// goes first) after each has done its warm-up. An implementation whose first three
/// attempts all fail is dropped from the rest of the scenario.
async fn interleave(imps: &mut [&mut Imp], op: Op, limits: &[(usize, usize)]) -> Vec<Samples> {
    let mut s: Vec<Samples> = limits
        .iter()
        .map(|&(limit, warmup)| Samples {
            ok: Vec::new(),
            errors: 0,
            first_error: None,
            limit,
            warmup,
        })
        .collect();
    let m = imps.len();
    let rounds = s.iter().map(|x| x.limit + x.warmup).max().unwrap_or(0);
    for i in 0..rounds {
        for k in 0..m {
            let idx = (i + k) % m;
            let sm = &mut s[idx];
            let done = sm.ok.len() + sm.errors;
            let dead = sm.ok.is_empty() && sm.errors >= 3;
            if dead || done >= sm.limit {
                continue;
            }
            let warm = i < sm.warmup;
            let budget = OP_TIMEOUT
                + match op {
                    Op::WrapperStop(g) => g,
                    _ => Duration::ZERO,
                };
            let r = match tokio::time::timeout(budget, do_op(imps[idx].as_mut(), op)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::other(format!(
                    "operation did not finish within {budget:?}"
                ))),
            };
            // Let the runtime poll the Ctrl-C / SIGTERM branch: the raw implementations'
            // futures complete without ever yielding, so a run of only those would
            // otherwise never see the signal.
            tokio::task::yield_now().await;
            if warm {
                if let Err(e) = r {
                    sm.first_error.get_or_insert(format!("warm-up: {e}"));
                }
                continue;
            }
            match r {
                Ok(d) => sm.ok.push(d),
                Err(e) => {
                    sm.errors += 1;
                    sm.first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    s
}

fn finish_rows(
    m: &Machine,
    bench: &BenchRoot,
    scenario: &str,
    variant: Option<String>,
    imps: &[&mut Imp],
    samples: Vec<Samples>,
) -> Vec<Row> {
    imps.iter()
        .zip(samples)
        .map(|(imp, s)| {
            let mut r =
                Row::from_samples(m, scenario, imp.name(), variant.clone(), &s.ok, s.errors);
            r.leaks = Some(bench.leaks(imp.leak_dir()) + imp.extra_leaks());
            if let Some(e) = s.first_error {
                r.note = Some(format!("first error: {e}"));
            }
            r
        })
        .collect()
}

fn emit(rows: &[Row], out: &mut Vec<Row>) {
    for r in rows {
        println!("{}", serde_json::to_string(r).expect("serialisable"));
    }
    let _ = io::stdout().flush();
    out.extend_from_slice(rows);
}

fn raise_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20)
        .min(1 << 20);
    let ok = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: Some(want),
        },
    );
    if ok.is_err() {
        let cur = getrlimit(Resource::Nofile);
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}

/// Runs the selected scenarios and prints the results.
pub fn run(cli: Cli) -> io::Result<()> {
    // SAFETY-free root check: geteuid through rustix.
    if !rustix::process::geteuid().is_root() {
        return Err(io::Error::other(
            "must run as root (it creates cgroups and spawns into them)",
        ));
    }
    raise_nofile();
    let bench = Arc::new(BenchRoot::create()?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The raw helper and the daemon get a parent-death signal, which the kernel sends
        // when the spawning *thread* exits, and runtime threads can be retired: they are
        // spawned here, on the main thread, which lives as long as the run.
        let impls = tokio::select! {
            r = make_impls(&cli, &bench) => r?,
            _ = tokio::signal::ctrl_c() => return Err(io::Error::other("interrupted (Ctrl-C); cleaned up")),
            _ = term.recv() => return Err(io::Error::other("terminated (SIGTERM); cleaned up")),
        };
        // The scenarios run in a task of the runtime, as a program embedding paddock calls
        // it from its tasks: not from the thread blocked on the runtime, whose every
        // hand-off to and from the workers would be timed too.
        let (cli, bench) = (cli.clone(), bench.clone());
        let mut driver = tokio::spawn(async move { bench_all(&cli, bench, impls).await });
        tokio::select! {
            r = &mut driver => r.unwrap_or_else(|e| Err(io::Error::other(format!("the benchmark task failed: {e}")))),
            _ = tokio::signal::ctrl_c() => {
                driver.abort();
                Err(io::Error::other("interrupted (Ctrl-C); cleaned up"))
            }
            _ = term.recv() => {
                driver.abort();
                Err(io::Error::other("terminated (SIGTERM); cleaned up"))
            }
        }
    });
    drop(rt);
    bench.cleanup();
    let left = crate::cleanup::procs_under(&bench.hier);
    if bench.path.exists() || left > 0 {
        eprintln!(
            "paddock-bench: WARNING: left behind path={} processes={left}",
            bench.path.display()
        );
    }
    let rows = res?;
    if !cli.json {
        println!();
        print!("{}", markdown(&rows));
    }
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_vec_pretty(&rows).map_err(io::Error::other)?,
        )?;
        std::fs::write(dir.join("results.md"), markdown(&rows))?;
        crate::chart::write_svg(&dir.join("latency.svg"), &rows)?;
        progress(
            "wrote results",
            &[
                ("dir", &dir.display()),
                ("files", &"results.json,results.md,latency.svg"),
            ],
        );
    }
    if !cli.max_ratio.is_empty() {
        let (lines, ok) = crate::report::check_gates(&rows, &cli.max_ratio);
        for l in &lines {
            eprintln!("paddock-bench: {l}");
        }
        if !ok {
            return Err(io::Error::other("a --max-ratio gate did not hold (above)"));
        }
    }
    Ok(())
}

/// The implementations the command line asks for. Runs on the main thread (see [`run`]).
async fn make_impls(cli: &Cli, bench: &Arc<BenchRoot>) -> io::Result<Vec<Imp>> {
    let mut impls: Vec<Imp> = Vec::new();
    if RAW_IMPLS.iter().any(|i| cli.wants(i)) {
        let client = Arc::new(Mutex::new(RawClient::start(&raw_base(&bench.path))?));
        for name in RAW_IMPLS {
            if cli.wants(name) {
                impls.push(Box::new(Raw::new(
                    name,
                    client.clone(),
                    cli.floor_threads(),
                )));
            }
        }
    }
    // The rootfs of `jailed-lifecycle`, made only when that scenario runs.
    let jail_env: Result<Arc<JailEnv>, String> =
        if cli.scenarios.is_empty() || cli.scenarios.iter().any(|s| s == "jailed-lifecycle") {
            tokio::task::block_in_place(|| JailEnv::create(bench))
                .map(Arc::new)
                .map_err(|e| e.to_string())
        } else {
            Err("the jailed-lifecycle scenario was not selected".into())
        };
    if cli.wants("paddock") {
        let mut p = Paddock::new(&bench.path.join("paddock"), &crate::net::net_dir(bench))?;
        p.set_jail(jail_env.clone());
        impls.push(Box::new(p));
    }
    if cli.wants("paddock-api") {
        impls.push(Box::new(crate::paddock_api::PaddockApi::start(bench).await));
    }
    if cli.wants("paddock-cli") {
        let mut p = crate::paddock_cli::PaddockCli::new(bench);
        p.set_jail(jail_env.clone());
        impls.push(Box::new(p));
    }
    for bin in ["runc", "crun"] {
        if cli.wants(bin) {
            let rt = tokio::task::block_in_place(|| Runtime::new(bin, bench.clone()));
            impls.push(Box::new(rt));
        }
    }
    if cli.wants("ip-script") {
        impls.push(Box::new(tokio::task::block_in_place(
            crate::net::IpScript::new,
        )));
    }
    for name in ["bwrap", "hakoniwa"] {
        if cli.wants(name) {
            impls.push(Box::new(JailProc::new(name, bench, &jail_env)));
        }
    }
    Ok(impls)
}

async fn bench_all(cli: &Cli, bench: Arc<BenchRoot>, mut impls: Vec<Imp>) -> io::Result<Vec<Row>> {
    let m = Machine::read();
    let scenarios: Vec<&str> = crate::SCENARIOS
        .iter()
        .copied()
        .filter(|s| cli.scenarios.is_empty() || cli.scenarios.iter().any(|x| x == s))
        .collect();
    let mut rows = Vec::new();
    for sc in scenarios {
        progress("scenario", &[("name", &sc)]);
        // Implementations that cannot run here get a row saying why.
        let unavailable: Vec<Row> = impls
            .iter()
            .filter(|i| i.supports(sc))
            .filter_map(|i| {
                i.unavailable()
                    .map(|why| Row::unavailable(&m, sc, i.name(), None, &why))
            })
            .collect();
        let mut active: Vec<&mut Imp> = impls
            .iter_mut()
            .filter(|i| i.supports(sc) && i.unavailable().is_none())
            .collect();
        let new_rows = match sc {
            "lifecycle" | "leaked-teardown" | "wrapper-stop" => {
                let op = match sc {
                    "lifecycle" => Op::Lifecycle,
                    "leaked-teardown" => Op::Leaked,
                    _ => Op::WrapperStop(Duration::from_millis(cli.grace_ms)),
                };
                let limits: Vec<(usize, usize)> = active
                    .iter()
                    .map(|i| {
                        let slow = matches!(
                            (sc, i.name()),
                            ("leaked-teardown", "rmdir-retry-200ms")
                                | ("wrapper-stop", "signal-wrapper")
                        );
                        if slow {
                            (cli.iterations.min(cli.slow_iterations.max(1)), 0)
                        } else {
                            (cli.iterations, cli.warmup())
                        }
                    })
                    .collect();
                let s = interleave(&mut active, op, &limits).await;
                // Escapees reparented to this process (a subreaper) and killed are zombies
                // until reaped: reap them first, so only processes still running count.
                paddock_proc::reap_orphans().await;
                let mut r = finish_rows(&m, &bench, sc, None, &active, s);
                if sc == "wrapper-stop" {
                    for row in &mut r {
                        row.extra.insert("grace_ms".into(), cli.grace_ms.into());
                    }
                }
                r
            }
            "jailed-lifecycle" => jailed(cli, &m, &bench, &mut active).await,
            "burst" => burst(cli, &m, &bench, &mut active).await,
            "scale" => scale(cli, &m, &bench, &mut active).await?,
            "net-lifecycle" => {
                let r = crate::net::scenario(cli.iterations, cli.warmup(), &m, &bench, &mut active)
                    .await;
                let owners: Vec<String> = active.iter().filter_map(|i| i.net_owner()).collect();
                for owner in owners {
                    crate::net::cleanup(&bench, &owner).await;
                }
                r
            }
            _ => unreachable!(),
        };
        let mut all = new_rows;
        all.extend(unavailable);
        emit(&all, &mut rows);
    }
    drop(impls);
    Ok(rows)
}

/// `jailed-lifecycle`: each implementation's jail check (once, untimed; a failure drops it
/// with a row saying why), then the jailed lifecycles interleaved, `floor` doing its plain
/// lifecycle as the reference. Rows carry what the check saw (`jail`), the CPU time per
/// operation where measured, and each p50 against bwrap's.
async fn jailed(cli: &Cli, m: &Machine, bench: &BenchRoot, active: &mut Vec<&mut Imp>) -> Vec<Row> {
    let sc = "jailed-lifecycle";
    let mut checks = Vec::new();
    let mut failed = Vec::new();
    let mut keep = Vec::new();
    for imp in active.drain(..) {
        let r = match tokio::time::timeout(OP_TIMEOUT, imp.jail_check()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::other(format!(
                "the jail check did not finish within {OP_TIMEOUT:?}"
            ))),
        };
        match r {
            Ok(seen) => {
                progress("jail check", &[("impl", &imp.name()), ("saw", &seen)]);
                checks.push(seen);
                keep.push(imp);
            }
            Err(e) => {
                progress("jail check failed", &[("impl", &imp.name()), ("error", &e)]);
                failed.push(Row::unavailable(
                    m,
                    sc,
                    imp.name(),
                    None,
                    &format!("jail check failed: {e}"),
                ));
            }
        }
    }
    *active = keep;
    let limits = vec![(cli.iterations, cli.warmup()); active.len()];
    let s = interleave(active, Op::JailedLifecycle, &limits).await;
    paddock_proc::reap_orphans().await;
    let mut rows = finish_rows(m, bench, sc, None, active, s);
    for ((row, imp), seen) in rows.iter_mut().zip(active.iter()).zip(checks) {
        row.extra.insert("jail".into(), seen.into());
        if let Some(cpu) = imp.cpu_per_op_us() {
            row.extra.insert("cpu_us_per_op".into(), cpu.round().into());
        }
    }
    if let Some(bw) = rows
        .iter()
        .find(|r| r.imp == "bwrap")
        .and_then(|r| r.p50_us)
    {
        for row in rows
            .iter_mut()
            .filter(|r| r.imp != "bwrap" && r.imp != "floor")
        {
            if let Some(p) = row.p50_us {
                let ratio = (p / bw * 100.0).round() / 100.0;
                row.extra.insert("p50_over_bwrap".into(), ratio.into());
            }
        }
    }
    rows.extend(failed);
    rows
}

async fn burst(cli: &Cli, m: &Machine, bench: &BenchRoot, active: &mut [&mut Imp]) -> Vec<Row> {
    let n = cli.burst.max(1);
    let k = active.len();
    let mut res: Vec<(Vec<BurstResult>, usize, Option<String>)> =
        (0..k).map(|_| (Vec::new(), 0, None)).collect();
    for round in 0..cli.burst_rounds.max(1) {
        for j in 0..k {
            let idx = (round + j) % k;
            progress("burst", &[("impl", &active[idx].name()), ("sandboxes", &n)]);
            let r = tokio::time::timeout(OP_TIMEOUT * 10, active[idx].burst(n))
                .await
                .unwrap_or_else(|_| Err(io::Error::other("burst did not finish within 600 s")));
            match r {
                Ok(r) => res[idx].0.push(r),
                Err(e) => {
                    res[idx].1 += 1;
                    res[idx].2.get_or_insert(e.to_string());
                }
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut rows = Vec::new();
    for (i, (rounds, errors, err)) in res.into_iter().enumerate() {
        // Escapees reparented to this process (a subreaper) and killed are zombies until
        // reaped: reap them first, so only processes still running count.
        paddock_proc::reap_orphans().await;
        let imp = &active[i];
        let leaks = bench.leaks(imp.leak_dir()) + imp.extra_leaks();
        let cat = |f: fn(&BurstResult) -> &Vec<Duration>| -> Vec<Duration> {
            rounds.iter().flat_map(|r| f(r).iter().copied()).collect()
        };
        let start_total: Duration = rounds.iter().map(|r| r.start_total).sum();
        let stop_total: Duration = rounds.iter().map(|r| r.stop_total).sum();
        let per_s = |total: Duration, count: usize| {
            (total > Duration::ZERO).then(|| count as f64 / total.as_secs_f64())
        };
        let starts = cat(|r| &r.starts);
        let since = cat(|r| &r.starts_from_burst);
        let p = |v: &[Duration]| Row::from_samples(m, "burst", imp.name(), None, v, 0);
        let from_burst = p(&since);
        // Working and queued apart, where the implementation measures its own work.
        let working = cat(|r| &r.working);
        let split = (!working.is_empty() && working.len() == since.len()).then(|| {
            let queued: Vec<Duration> = since
                .iter()
                .zip(&working)
                .map(|(s, w)| s.saturating_sub(*w))
                .collect();
            (p(&working), p(&queued))
        });
        let mut s = Row::from_samples(
            m,
            "burst",
            imp.name(),
            Some("start".into()),
            &starts,
            errors,
        )
        .with("sandboxes", n)
        .with("rounds", rounds.len())
        .with("total_ms", ms(start_total))
        .with(
            "since_burst_start_p50_ms",
            from_burst.p50_us.unwrap_or(0.0) / 1000.0,
        )
        .with(
            "since_burst_start_p99_ms",
            from_burst.p99_us.unwrap_or(0.0) / 1000.0,
        );
        if let Some((w, q)) = split {
            let ms = |v: Option<f64>| v.unwrap_or(0.0) / 1000.0;
            s = s
                .with("working_p50_ms", ms(w.p50_us))
                .with("working_p99_ms", ms(w.p99_us))
                .with("queued_p50_ms", ms(q.p50_us))
                .with("queued_p99_ms", ms(q.p99_us));
        }
        if imp.name() == "floor-parallel" {
            s = s.with("threads", cli.floor_threads());
        }
        s.ops_per_s = per_s(start_total, starts.len());
        s.leaks = Some(leaks);
        let stops = cat(|r| &r.stops);
        let mut t = Row::from_samples(m, "burst", imp.name(), Some("stop".into()), &stops, errors)
            .with("sandboxes", n)
            .with("total_ms", ms(stop_total))
            .with("stopped", stops.len());
        t.ops_per_s = per_s(stop_total, stops.len());
        t.leaks = Some(leaks);
        if let Some(e) = err {
            s.note = Some(format!("first error: {e}"));
            t.note = s.note.clone();
        }
        rows.push(s);
        rows.push(t);
    }
    rows
}

async fn scale(
    cli: &Cli,
    m: &Machine,
    bench: &BenchRoot,
    active: &mut Vec<&mut Imp>,
) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Each implementation that holds sandboxes is measured with its own population; the
    // others (floor) run their lifecycle interleaved with it, under the same load.
    let holders: Vec<usize> = (0..active.len())
        .filter(|&i| active[i].resident_kib().is_some())
        .collect();
    for h in holders {
        for &level in &cli.scale_levels {
            let before = active[h].resident_kib();
            if level > 0 {
                progress(
                    "scale: starting sandboxes",
                    &[("impl", &active[h].name()), ("live", &level)],
                );
            }
            let pop = active[h].populate(level).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = active[h].resident_kib();
            let mut group: Vec<&mut Imp> = Vec::new();
            let mut holder_pos = 0;
            for (i, imp) in active.iter_mut().enumerate() {
                if i == h {
                    holder_pos = group.len();
                    group.push(imp);
                } else if imp.resident_kib().is_none() {
                    group.push(imp);
                }
            }
            let variant = Some(format!("live={level}"));
            let mut r = match &pop {
                Ok(()) => {
                    progress("scale: lifecycle", &[("live", &level)]);
                    let limits = vec![(cli.iterations, cli.warmup()); group.len()];
                    let s = interleave(&mut group, Op::Lifecycle, &limits).await;
                    group
                        .iter()
                        .zip(s)
                        .map(|(imp, s)| {
                            let mut r = Row::from_samples(
                                m,
                                "scale",
                                imp.name(),
                                variant.clone(),
                                &s.ok,
                                s.errors,
                            );
                            if let Some(e) = s.first_error {
                                r.note = Some(format!("first error: {e}"));
                            }
                            r
                        })
                        .collect::<Vec<_>>()
                }
                Err(e) => vec![Row::unavailable(
                    m,
                    "scale",
                    group[holder_pos].name(),
                    variant.clone(),
                    &format!("populate failed: {e}"),
                )],
            };
            let holder_name = group[holder_pos].name();
            drop(group);
            if let (Some(b), Some(a)) = (before, after) {
                for row in r.iter_mut().filter(|r| r.imp == holder_name) {
                    row.extra.insert("live".into(), level.into());
                    row.extra.insert("rss_before_kib".into(), b.into());
                    row.extra.insert("rss_kib".into(), a.into());
                    if level > 0 {
                        let per = (a as f64 - b as f64) * 1024.0 / level as f64;
                        row.extra
                            .insert("rss_per_sandbox_bytes".into(), per.round().into());
                    }
                }
            }
            if level > 0 {
                progress(
                    "scale: stopping sandboxes",
                    &[("impl", &active[h].name()), ("live", &level)],
                );
            }
            let dep = active[h].depopulate().await;
            for row in &mut r {
                if active.iter().any(|i| i.name() == row.imp) {
                    // Escapees reparented to this process (a subreaper) and killed are
                    // zombies until reaped: reap them first, so only processes still
                    // running count.
                    paddock_proc::reap_orphans().await;
                }
                if let Some(imp) = active.iter().find(|i| i.name() == row.imp) {
                    row.leaks = Some(bench.leaks(imp.leak_dir()) + imp.extra_leaks());
                }
                if let Err(e) = &dep {
                    let dep = format!("depopulate failed: {e}");
                    row.note = Some(match row.note.take() {
                        Some(n) => format!("{n}; {dep}"),
                        None => dep,
                    });
                }
            }
            rows.extend(r);
        }
    }
    Ok(rows)
}
