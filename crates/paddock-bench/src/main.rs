//! `paddock-bench`: paddock against the raw-syscall floor, the seed fix's removal
//! algorithm, the incident's signal-the-wrapper orchestrator, and runc/crun — every
//! implementation interleaved with the others in the same run, so each claim is a ratio
//! measured under the same conditions.
//!
//! See `docs/benchmarks.md` for how to run it and the current results.

mod chart;
mod cleanup;
mod daemon;
mod imps;
mod raw;
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
/// The incident's wrapper chain: a shell that does not forward signals around a child
/// that exits on SIGTERM (`; true` keeps bash from exec'ing the child).
pub const INCIDENT_SCRIPT: &str = "sleep 1000; true";

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
    "leaked-teardown",
    "incident-stop",
    "burst",
    "scale",
];

/// Every implementation the benchmark knows.
pub const IMPLS: &[&str] = &[
    "floor",
    "paddock",
    "paddock-api",
    "paddock-cli",
    "seed-algorithm",
    "signal-wrapper",
    "runc",
    "crun",
];

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "paddock-bench",
    about = "Benchmark paddock against the raw-syscall floor, the seed fix, the incident's orchestrator and runc/crun (as root)"
)]
pub struct Cli {
    /// Scenario to run (repeatable; default all): lifecycle, leaked-teardown,
    /// incident-stop, burst, scale.
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
    /// Implementation to run (repeatable; default all): floor, paddock, paddock-api,
    /// paddock-cli, seed-algorithm, signal-wrapper, runc, crun.
    #[arg(long = "impl", value_name = "NAME")]
    pub impls: Vec<String>,
    /// Grace period of `incident-stop`, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Cap on measured iterations of implementations that take the whole grace period
    /// (signal-wrapper in incident-stop) or the seed's 200 ms retries.
    #[arg(long, default_value_t = 5)]
    pub slow_iterations: usize,
    /// Sandboxes per `burst` round.
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// Rounds of `burst` per implementation.
    #[arg(long, default_value_t = 1)]
    pub burst_rounds: usize,
    /// Live background sandboxes at each `scale` level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    pub scale_levels: Vec<usize>,
}

impl Cli {
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
    let cli = Cli::parse();
    for s in &cli.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            eprintln!(
                "paddock-bench: unknown scenario {s:?}; known: {}",
                SCENARIOS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    for i in &cli.impls {
        if !IMPLS.contains(&i.as_str()) {
            eprintln!(
                "paddock-bench: unknown implementation {i:?}; known: {}",
                IMPLS.join(", ")
            );
            return ExitCode::from(2);
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
