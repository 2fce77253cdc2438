//! `paddock-torture`: hostile payloads and library-level faults through full sandbox
//! lifecycles, with leak checks independent of paddock's bookkeeping. Exits 1 when a leak
//! was found, 2 on other errors, 0 otherwise.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use paddock_torture::{Case, Options, StopFlag};

/// Runs a mix of adversarial sandboxes through full lifecycles and reports leaks.
#[derive(Debug, Parser)]
#[command(name = "paddock-torture", version)]
struct Cli {
    /// Number of lifecycles to run (default 100 when no --duration is given).
    #[arg(long)]
    count: Option<u64>,
    /// Keep starting lifecycles for this long (for example 5m, 30s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seed of every random choice (default: from the clock; printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Comma-separated cases to mix (default: all).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// The managed cgroup root (default: a fresh `<cgroup2 mount>/paddock-torture.<pid>`,
    /// removed at the end).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// One line per lifecycle on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Multiply the runner's waits (payload readiness, storm timing, the 90 s lifecycle
    /// deadline) by this, under emulation for example.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    time_scale: u32,
    /// Do not run the second supervisor that reclaims on the same root beside the
    /// lifecycles (with an owner of its own; it must never touch this run's cgroups).
    #[arg(long)]
    no_rival: bool,
    /// Run every lifecycle jailed: pid, mount, ipc and uts namespaces with an init, the
    /// default seccomp profile, a jailed root's capabilities, the cgroup file system hidden.
    #[arg(long)]
    jailed: bool,
    /// Give every lifecycle a `veth` network of its own (isolated, with a tap) and count
    /// leaked links, namespaces, nftables rules and leases as leaks.
    #[arg(long)]
    net: bool,
    /// Log filter for paddock's own tracing output (for example `warn`); default off.
    #[arg(long, env = "RUST_LOG", default_value = "off")]
    log: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    paddock_supervisor::parse_duration(s).map_err(|e| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let cases = if cli.cases.is_empty() {
        Case::ALL.to_vec()
    } else {
        match cli.cases.iter().map(|c| Case::parse(c.trim())).collect() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("paddock-torture: {e}");
                std::process::exit(64);
            }
        }
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let opts = Options {
        count: match (cli.count, cli.duration) {
            (None, None) => Some(100),
            (c, _) => c,
        },
        duration: cli.duration,
        concurrency: cli.concurrency,
        seed,
        cases,
        cgroup_root: cli.cgroup_root,
        scratch: None,
        verbose: cli.verbose,
        lifecycle_timeout: Duration::from_secs(90) * cli.time_scale,
        time_scale: cli.time_scale,
        rival: !cli.no_rival,
        jailed: cli.jailed,
        net: cli.net,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async move {
        let stop = StopFlag::default();
        // Ctrl-C (or SIGTERM): stop starting lifecycles, finish and check the ones in
        // flight, clean up. A second Ctrl-C exits at once after a best-effort clean-up.
        let s2 = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term_fut = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_fut => {}
            }
            eprintln!("paddock-torture: interrupted; finishing the lifecycles in flight (Ctrl-C again to abort)");
            s2.raise();
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("paddock-torture: aborting");
            paddock_torture::emergency_cleanup();
            std::process::exit(130);
        });
        match paddock_torture::run(opts, stop).await {
            Ok(summary) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&summary).expect("summary is JSON")
                    );
                } else {
                    print!("{}", summary.render());
                }
                summary.exit_code()
            }
            Err(e) => {
                eprintln!("paddock-torture: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}
