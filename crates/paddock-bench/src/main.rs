//! `paddock-bench`: paddock against the raw-syscall floor, a removal that retries `rmdir`
//! every 200 ms (`rmdir-retry-200ms`), a stop that signals only the wrapper process
//! (`signal-wrapper`), runc/crun, and, jailed, bubblewrap and hakoniwa — every
//! implementation interleaved with the others in the same run, so each claim is a ratio
//! measured under the same conditions.
//!
//! See `docs/benchmarks.md` for how to run it and the current results, and
//! `docs/background.md` for why these two references.

mod chart;
mod cleanup;
mod implementation;
mod jail;
mod net;
mod paddock_api;
mod paddock_cli;
mod paddock_library;
mod raw;
mod raw_client;
mod report;
mod runtime;
mod scenarios;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The leaked-teardown payload: a main process (`sleep`) whose shell double-forked a
/// `setsid` escapee that ignores SIGTERM.
pub const LEAK_SCRIPT: &str =
    "(setsid /bin/sh -c 'trap \"\" TERM; exec sleep 1000' &); exec sleep 1000";
/// The wrapper-stop payload: a shell that does not forward signals around a child that
/// exits on SIGTERM (`; true` keeps bash from exec'ing the child).
pub const WRAPPER_SCRIPT: &str = "sleep 1000; true";

/// Untimed pause between a payload reaching its steady state and the stop request.
/// `cgroup.events` notifications are rate-limited by the kernel to one per 10 ms per file
/// (`CGROUP_FILE_NOTIFY_MIN_INTV`); a stop issued within 10 ms of the payload's own
/// population change would measure that deferral instead of the teardown. Real sandboxes
/// are stopped long after they started.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The hidden argument that turns this binary into the raw-implementation helper.
pub const HELPER_ARG: &str = "__raw-helper";

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "lifecycle",
    "jailed-lifecycle",
    "leaked-teardown",
    "wrapper-stop",
    "burst",
    "scale",
    "net-lifecycle",
];

/// Earlier names of scenarios, accepted by `--scenario`: (alias, scenario).
pub const SCENARIO_ALIASES: &[(&str, &str)] = &[("incident-stop", "wrapper-stop")];

/// Every implementation the benchmark knows.
pub const IMPLS: &[&str] = &[
    "floor",
    "floor-parallel",
    "paddock",
    "paddock-api",
    "paddock-cli",
    "rmdir-retry-200ms",
    "signal-wrapper",
    "runc",
    "crun",
    "bwrap",
    "hakoniwa",
    "ip-script",
];

/// Earlier names of implementations, accepted by `--impl`: (alias, implementation).
pub const IMPL_ALIASES: &[(&str, &str)] = &[("seed-algorithm", "rmdir-retry-200ms")];

/// The name in `known` that `name` is, directly or through `aliases`.
fn canonical(
    name: &str,
    known: &[&'static str],
    aliases: &[(&str, &'static str)],
) -> Option<&'static str> {
    known
        .iter()
        .copied()
        .find(|k| *k == name)
        .or_else(|| aliases.iter().find(|(a, _)| *a == name).map(|(_, k)| *k))
}

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "paddock-bench",
    about = "Benchmark paddock against the raw-syscall floor, an rmdir-retry removal, a stop that signals only the wrapper, runc/crun, bubblewrap and hakoniwa (as root)"
)]
pub struct Cli {
    /// Scenario to run (repeatable; default all): lifecycle, jailed-lifecycle,
    /// leaked-teardown, wrapper-stop (also accepted as incident-stop), burst, scale,
    /// net-lifecycle.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Measured iterations per implementation and scenario (and per level of `scale`).
    #[arg(long, default_value_t = 300)]
    pub iterations: usize,
    /// Unmeasured warm-up iterations per implementation (default: iterations / 10, 1..=20).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Print only the JSON lines (no Markdown table).
    #[arg(long)]
    pub json: bool,
    /// Write results.json, results.md and latency.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Implementation to run (repeatable; default all): floor, floor-parallel, paddock, paddock-api,
    /// paddock-cli, rmdir-retry-200ms (also accepted as seed-algorithm), signal-wrapper,
    /// runc, crun, bwrap, hakoniwa, ip-script.
    #[arg(long = "impl", value_name = "NAME")]
    pub impls: Vec<String>,
    /// Grace period of `wrapper-stop`, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Cap on measured iterations of implementations that take the whole grace period
    /// (signal-wrapper in wrapper-stop) or 200 ms retries (rmdir-retry-200ms in
    /// leaked-teardown).
    #[arg(long, default_value_t = 5)]
    pub slow_iterations: usize,
    /// Sandboxes per `burst` round.
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// Rounds of `burst` per implementation.
    #[arg(long, default_value_t = 1)]
    pub burst_rounds: usize,
    /// Threads of `floor-parallel` (the floor's burst spread over threads; default: the
    /// CPUs this process may run on).
    #[arg(long, value_name = "N")]
    pub floor_threads: Option<usize>,
    /// Fail (exit 1) when SCENARIO's p50 for IMPL is more than R times floor's p50 in the
    /// same run, or when either is missing: `SCENARIO:IMPL=R`, repeatable. A smoke gate
    /// against regressions of 2× or more, not a timing test: set R well above the usual.
    #[arg(long = "max-ratio", value_name = "SCENARIO:IMPL=R", value_parser = parse_gate)]
    pub max_ratio: Vec<Gate>,
    /// Live background sandboxes at each `scale` level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    pub scale_levels: Vec<usize>,
}

/// A `--max-ratio` gate: `scenario`'s p50 for `imp` at most `max` × floor's.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The scenario (a current name or an alias).
    pub scenario: String,
    /// The implementation (a current name or an alias).
    pub imp: String,
    /// The largest ratio of p50s allowed.
    pub max: f64,
}

fn parse_gate(s: &str) -> Result<Gate, String> {
    let bad = || format!("{s:?} is not SCENARIO:IMPL=RATIO (e.g. lifecycle:paddock=2.5)");
    let (scenario, rest) = s.split_once(':').ok_or_else(bad)?;
    let (imp, r) = rest.split_once('=').ok_or_else(bad)?;
    let scenario = canonical(scenario, SCENARIOS, SCENARIO_ALIASES)
        .ok_or_else(|| format!("{s:?}: unknown scenario {scenario:?}"))?;
    let imp = canonical(imp, IMPLS, IMPL_ALIASES)
        .ok_or_else(|| format!("{s:?}: unknown implementation {imp:?}"))?;
    let max: f64 = r.parse().map_err(|_| bad())?;
    if !(max.is_finite() && max > 0.0) {
        return Err(format!("{s:?}: the ratio must be a positive number"));
    }
    Ok(Gate {
        scenario: scenario.into(),
        imp: imp.into(),
        max,
    })
}

impl Cli {
    /// `floor-parallel`'s threads.
    pub fn floor_threads(&self) -> usize {
        self.floor_threads
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
            .max(1)
    }

    /// Warm-up iterations.
    pub fn warmup(&self) -> usize {
        self.warmup
            .unwrap_or_else(|| (self.iterations / 10).clamp(1, 20))
    }

    /// Whether `imp` was selected.
    pub fn wants(&self, imp: &str) -> bool {
        self.impls.is_empty() || self.impls.iter().any(|i| i == imp)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HELPER_ARG) {
        let Some(base) = args.get(2) else {
            eprintln!("{HELPER_ARG} needs the cgroup directory");
            return ExitCode::from(2);
        };
        return match raw::helper_main(std::path::Path::new(base)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("paddock-bench helper: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut cli = Cli::parse();
    for s in &mut cli.scenarios {
        match canonical(s, SCENARIOS, SCENARIO_ALIASES) {
            Some(c) => *s = c.to_owned(),
            None => {
                eprintln!(
                    "paddock-bench: unknown scenario {s:?}; known: {}",
                    SCENARIOS.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    for i in &mut cli.impls {
        match canonical(i, IMPLS, IMPL_ALIASES) {
            Some(c) => *i = c.to_owned(),
            None => {
                eprintln!(
                    "paddock-bench: unknown implementation {i:?}; known: {}",
                    IMPLS.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if cli.iterations == 0 {
        eprintln!("paddock-bench: --iterations must be at least 1");
        return ExitCode::from(2);
    }
    match scenarios::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paddock-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_names_map_to_the_current_ones() {
        assert_eq!(
            canonical("incident-stop", SCENARIOS, SCENARIO_ALIASES),
            Some("wrapper-stop")
        );
        assert_eq!(
            canonical("seed-algorithm", IMPLS, IMPL_ALIASES),
            Some("rmdir-retry-200ms")
        );
        for s in SCENARIOS {
            assert_eq!(canonical(s, SCENARIOS, SCENARIO_ALIASES), Some(*s));
        }
        for i in IMPLS {
            assert_eq!(canonical(i, IMPLS, IMPL_ALIASES), Some(*i));
        }
        assert_eq!(canonical("no-such", SCENARIOS, SCENARIO_ALIASES), None);
        assert_eq!(
            parse_gate("incident-stop:seed-algorithm=2.5"),
            Ok(Gate {
                scenario: "wrapper-stop".into(),
                imp: "rmdir-retry-200ms".into(),
                max: 2.5
            })
        );
        for bad in [
            "lifecycle",
            "lifecycle:paddock",
            "x:paddock=2",
            "lifecycle:x=2",
            "lifecycle:paddock=0",
            "lifecycle:paddock=nan",
        ] {
            assert!(parse_gate(bad).is_err(), "{bad}");
        }
        // An alias never shadows a current name.
        for (a, k) in SCENARIO_ALIASES.iter().chain(IMPL_ALIASES) {
            assert!(!SCENARIOS.contains(a) && !IMPLS.contains(a), "{a}");
            assert!(SCENARIOS.contains(k) || IMPLS.contains(k), "{k}");
        }
    }
}
