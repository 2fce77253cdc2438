//! `paddock`: run sandboxes whose every process lives and dies with the sandbox.
//!
//! `paddock run` runs one command in a fresh sandbox in the foreground, needing no daemon.
//! `paddock serve` is the daemon (HTTP/JSON API on a unix socket, durable state, crash
//! recovery, metrics); the other commands are its clients.
//!
//! Just over 600 lines: most of it is the one clap command tree, whose doc comments are
//! the `--help` text, the man page and the completions (`paddock generate`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod api;
mod cli;
mod client;
mod config;
mod generate;
mod guard;
mod hold;
mod listen;
mod logging;
mod metrics;
mod openapi;
mod run;
mod sandbox_metrics;
mod serve;
mod store;
mod systemd;

/// `paddock --version`: the package version and the git commit it was built from
/// (`unknown` when built outside a repository without `PADDOCK_GIT_COMMIT`; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PADDOCK_GIT_COMMIT"),
    ")"
);

/// paddock: a supervisor for sandboxed workloads on cgroup v2. Every process a sandbox
/// starts lives and dies with the sandbox.
///
/// Examples:
///   paddock run -- sh -c 'echo hello; sleep 1 & echo bye'
///   paddock serve --state-dir /var/lib/paddock &
///   paddock run -d --name job-1 -- sleep 600
///   paddock ps
///   paddock stop job-1 --timeout 5s && paddock rm job-1
#[derive(Debug, Parser)]
#[command(
    name = "paddock",
    version = VERSION,
    propagate_version = true,
    verbatim_doc_comment
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::Format,
    /// The daemon's unix socket (for `serve`, where to listen).
    #[arg(long, global = true, env = "PADDOCK_SOCKET", default_value = serve::DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Print machine-readable JSON (errors too: {"error": ...}).
    #[arg(long, global = true)]
    json: bool,
    /// How long a client command waits for the daemon to answer, e.g. 30s, 500ms; 0 waits
    /// forever. `wait` without --timeout and `events` never time out once answered; `stop`
    /// and `kill` add the sandbox's grace period and kill timeout.
    #[arg(long, global = true, env = "PADDOCK_REQUEST_TIMEOUT", default_value = client::DEFAULT_REQUEST_TIMEOUT, value_name = "DURATION")]
    request_timeout: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command in a fresh sandbox in the foreground, like `systemd-run --scope --wait`.
    ///
    /// When the command's main process exits, the rest of its process tree is stopped and
    /// the sandbox's cgroup removed; paddock exits with the main process's exit code (128+N
    /// when signal N killed it). Ctrl-C or SIGTERM stops the sandbox gracefully (a second
    /// one kills it at once); paddock then exits with the main process's code as well:
    /// 143 when the SIGTERM ended it, 137 when it ignored it and was killed after
    /// --stop-timeout. With `-d`
    /// the sandbox is created by the daemon instead and paddock prints its ID and returns;
    /// its output goes to `paddock logs ID`.
    ///
    /// Exit codes when the command did not run (as in shells, Docker and Podman):
    ///   127  the command was not found (no such file, or its #! interpreter is missing)
    ///   126  it was found but cannot be executed (no execute permission, a directory,
    ///        not an executable format)
    ///   125  paddock itself failed (the cgroup, a limit the host cannot set, --cwd,
    ///        --netns, an invalid option value); the cause is printed once, on stderr
    ///
    /// The sandbox never outlives paddock: a guardian process (a fork of paddock named
    /// `paddock-guard`, in its own session, outside the sandbox) kills the sandbox and removes its cgroup within
    /// milliseconds if paddock dies for any reason, SIGKILL included, at any moment. If
    /// paddock and its guardian are killed together (both SIGKILLed, or their whole cgroup
    /// killed), the sandbox is left with paddock's PID and start time as its owner; the
    /// next `paddock run` on the same cgroup root, or a daemon's next reconciliation
    /// (at its start and every 30 s), kills and removes it with a warning. When paddock
    /// returns, every process of the sandbox is gone and reaped, orphans included.
    ///
    /// Examples:
    ///   paddock run -- sh -c 'echo hello; sleep 1 & echo bye'
    ///   paddock run --memory 512M --cpus 1.5 --pids 256 --summary -- ./build.sh
    ///   paddock run --netns isolated -- ip -o link
    ///   paddock run -d --name web-1 -- python3 -m http.server
    #[command(verbatim_doc_comment)]
    Run(Box<run::RunArgs>),
    /// Run the daemon: HTTP/JSON API, durable state, crash recovery, metrics.
    ///
    /// ACCESS TO THE API IS ROOT ON THIS NODE. Whoever can use the socket (root, or the
    /// --socket-group) or the TCP listener (with the token) can run any program as root:
    /// payloads run as root, and stdio files named in a spec are opened and created as
    /// root (regular files only, never through a symbolic link as the last component;
    /// --stdio-dir confines them to one directory). Grant access as you would grant sudo.
    ///
    /// Examples:
    ///   paddock serve
    ///   paddock serve --socket /run/paddock.sock --socket-group paddock --max-sandboxes 100
    ///   paddock serve --listen 127.0.0.1:7070 --token-file /etc/paddock/token
    ///   paddock serve --stdio-dir /srv/paddock-out
    #[command(verbatim_doc_comment)]
    Serve(Box<serve::ServeArgs>),
    /// List sandboxes (alias: ls), or with --label those whose labels match.
    ///
    /// Examples:
    ///   paddock ps
    ///   paddock ps --json
    ///   paddock ls --label app=web --label canary
    #[command(verbatim_doc_comment, visible_alias = "ls")]
    Ps {
        /// Only sandboxes whose label KEY is VALUE (KEY=VALUE), or that have the label KEY
        /// (KEY); repeatable: every one must match.
        #[arg(long = "label", value_name = "KEY[=VALUE]")]
        labels: Vec<String>,
    },
    /// What the node is and holds: capacity, reserve, allocatable, committed memory,
    /// sandboxes by state, draining, version, kernel, cgroup mode and controllers.
    ///
    /// Examples:
    ///   paddock node
    ///   paddock node --json
    #[command(verbatim_doc_comment)]
    Node,
    /// Drain the node: the daemon refuses every create (503 with Retry-After) until
    /// `paddock undrain`, also across its restarts; with --stop it also stops every sandbox
    /// (reason `drain`). Answers once the creates already admitted have finished (and with
    /// --stop, once every stop has: no client deadline then).
    ///
    /// Examples:
    ///   paddock drain
    ///   paddock drain --stop --grace 30s
    #[command(verbatim_doc_comment)]
    Drain {
        /// Also stop every live sandbox, by its own stop policy.
        #[arg(long)]
        stop: bool,
        /// With --stop: the grace period replacing each sandbox's own, e.g. 30s, 0.
        #[arg(long, value_name = "DURATION", requires = "stop")]
        grace: Option<String>,
    },
    /// Undrain the node: creates are admitted again.
    ///
    /// Examples:
    ///   paddock undrain
    #[command(verbatim_doc_comment)]
    Undrain,
    /// Show everything about a sandbox (JSON), or with --jail its jail.
    ///
    /// Examples:
    ///   paddock inspect web-1
    ///   paddock inspect web-1 --lifecycle 0123456789abcdef
    ///   paddock inspect web-1 --jail
    #[command(verbatim_doc_comment)]
    Inspect {
        #[command(flatten)]
        target: Target,
        /// Show the jail: who the program runs as (its dynamic uid), capabilities,
        /// namespaces, filesystem, seccomp, Landlock (with --json: {"spec", "status"}).
        #[arg(long)]
        jail: bool,
        /// Show the network: host link, addresses, taps, nftables rules (with --json:
        /// {"spec", "status"}).
        #[arg(long, conflicts_with = "jail")]
        network: bool,
    },
    /// Stop a sandbox gracefully and wait until nothing is left.
    ///
    /// Examples:
    ///   paddock stop web-1
    ///   paddock stop web-1 --timeout 5s --json
    #[command(verbatim_doc_comment)]
    Stop {
        #[command(flatten)]
        target: Target,
        /// Grace period replacing the sandbox's own, e.g. 5s, 500ms, 0.
        #[arg(long, short = 't', value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Kill a sandbox at once (no grace period).
    ///
    /// Examples:
    ///   paddock kill web-1
    ///   paddock kill web-1 --json
    #[command(verbatim_doc_comment)]
    Kill(Target),
    /// Wait until a sandbox has ended, and exit with its main process's exit code (128+N
    /// when signal N killed it).
    ///
    /// With --timeout, gives up after that long (exit code 124) if it is still live.
    ///
    /// Examples:
    ///   paddock run -d --name job-1 -- ./build.sh && paddock wait job-1
    ///   paddock wait job-1 --timeout 30s --json
    #[command(verbatim_doc_comment)]
    Wait {
        #[command(flatten)]
        target: Target,
        /// Give up after this long, e.g. 30s.
        #[arg(long, short = 't', value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Freeze a sandbox.
    ///
    /// Examples:
    ///   paddock pause web-1
    ///   paddock pause web-1 --json
    #[command(verbatim_doc_comment)]
    Pause(Target),
    /// Move a running sandbox's deadline (its time to live) later.
    ///
    /// The new deadline is --extend after the current one (or after now, for a sandbox
    /// started without --timeout). When it passes, the sandbox is stopped gracefully by its
    /// own stop policy, with reason `deadline`. Prints the new deadline.
    ///
    /// Examples:
    ///   paddock deadline web-1 --extend 10m
    ///   paddock deadline web-1 --extend 1h --json
    #[command(verbatim_doc_comment)]
    Deadline {
        /// Sandbox ID.
        id: String,
        /// How much later, e.g. 30s, 10m, 2h.
        #[arg(long, value_name = "DURATION")]
        extend: String,
    },
    /// Thaw a paused sandbox.
    ///
    /// Examples:
    ///   paddock resume web-1
    ///   paddock resume web-1 --json
    #[command(verbatim_doc_comment)]
    Resume(Target),
    /// Forget a stopped sandbox (with -f: kill it first).
    ///
    /// Examples:
    ///   paddock rm web-1
    ///   paddock rm -f web-1
    #[command(verbatim_doc_comment)]
    Rm {
        /// Sandbox ID.
        id: String,
        /// Kill the sandbox first if it is still running.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Change the limits of a running sandbox (PATCH /v1/sandboxes/ID).
    ///
    /// Each flag given changes that limit (`max` lifts --memory, --memory-high, --cpus and
    /// --pids); the others stay. The change is recorded (a restarted daemon keeps it) and
    /// announced as a `limits_updated` event. A --memory below what the sandbox uses makes
    /// the kernel reclaim, then OOM-kill the whole sandbox (docs/limits.md).
    ///
    /// Examples:
    ///   paddock update web-1 --memory 1G --cpus 2 --pids 512
    ///   paddock update web-1 --memory max --device-write-bps /dev/vdb:10M
    #[command(verbatim_doc_comment)]
    Update(Box<cli::limits::UpdateArgs>),
    /// Resource usage of a sandbox.
    ///
    /// Examples:
    ///   paddock stats web-1
    ///   paddock stats web-1 --json
    #[command(verbatim_doc_comment)]
    Stats(Target),
    /// Follow lifecycle events.
    ///
    /// Each line starts with the event's seq (strictly increasing, kept across restarts of
    /// the daemon); pass the last one you saw to --since to resume without missing any.
    ///
    /// Examples:
    ///   paddock events
    ///   paddock events --id web-1 --count 3 --json
    ///   paddock events --since 1234
    #[command(verbatim_doc_comment)]
    Events {
        /// Only this sandbox's events.
        #[arg(long)]
        id: Option<String>,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// First replay the kept events with a greater seq, then follow (0: from the
        /// first). Fails (410) if events after SEQ are no longer kept: list the sandboxes,
        /// then follow from the seq the error names.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Print a sandbox's stdout and stderr.
    ///
    /// With --json: one object {"id", "lifecycle", "log"}.
    ///
    /// Examples:
    ///   paddock logs web-1
    ///   paddock logs web-1 --json
    #[command(verbatim_doc_comment)]
    Logs(Target),
    /// Live CPU, memory and processes per sandbox, like systemd-cgtop.
    ///
    /// One row per live sandbox (not stopped, failed or quarantined), sorted by ID as in
    /// `paddock ps`. On a terminal the table fills the screen and follows its size
    /// (columns dropped from the right when it is narrow); q or Ctrl-C quits and gives the
    /// terminal back as it was; Ctrl-Z gives it back and suspends (fg resumes). Into a
    /// pipe: a table per refresh.
    ///
    /// Examples:
    ///   paddock top
    ///   paddock top --interval 5s
    ///   paddock top --once --json
    #[command(verbatim_doc_comment)]
    Top {
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_name = "DURATION")]
        interval: String,
    },
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   paddock completions bash > /etc/bash_completion.d/paddock
    ///   paddock completions zsh > ~/.zfunc/_paddock
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the API's OpenAPI document.
    #[command(hide = true)]
    Openapi,
    /// Print the man page or a shell completion script, made from this command line
    /// (packaging: scripts/build-deb).
    #[command(hide = true)]
    Generate {
        /// What to print.
        what: generate::What,
    },
    /// Hold a delegated cgroup for the daemon's sandboxes (the main process of
    /// deploy/systemd/paddock-sandboxes.service): move into a leaf, enable the offered
    /// controllers for `<cgroup>/sandboxes`, notify systemd, wait for SIGTERM.
    #[command(hide = true)]
    HoldCgroup(hold::HoldArgs),
}

/// Parses the command line; for `serve`, with the config file's keys added for the flags
/// the command line and the environment leave unset (src/config.rs). Returns what the file
/// set, to log.
fn parse(argv: Vec<OsString>) -> Result<(Cli, Option<config::Applied>), clap::Error> {
    let cmd = Cli::command();
    // A flag whose `requires` only the file meets (`--token-file` on the command line,
    // `listen` in the file) fails the first parse: it is parsed again without that check,
    // to learn what the command line gave; the parse with the file's keys checks it.
    let (m, first) = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => (m, None),
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
            let lax = cmd.clone().ignore_errors(true).try_get_matches_from(&argv);
            match lax {
                Ok(m) if matches!(m.subcommand_name(), Some("serve")) => (m, Some(e)),
                _ => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if let Some(("serve", sm)) = m.subcommand() {
        let explicit = sm.get_one::<PathBuf>("config").map(|p| p.as_os_str());
        if let Some(path) = config::resolve(explicit)? {
            let text = config::read(&path)?;
            let (argv, applied) = config::merge(&cmd, &argv, &m, sm, &path, &text)?;
            let m = cmd
                .try_get_matches_from(&argv)
                .map_err(|e| applied.wrap(e))?;
            let cli = Cli::from_arg_matches(&m).map_err(|e| applied.wrap(e))?;
            return Ok((cli, Some(applied)));
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    Ok((Cli::from_arg_matches(&m)?, None))
}

/// A sandbox to act on.
#[derive(Debug, clap::Args)]
struct Target {
    /// Sandbox ID.
    id: String,
    /// A specific lifecycle (default: the current one).
    #[arg(long, value_name = "LIFECYCLE")]
    lifecycle: Option<String>,
}

/// Whether `--json` is on the command line (before any `--`), for errors clap reports
/// before the line is parsed.
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Reports a command-line error: clap's text on stderr, and with `--json` also
/// `{"error": ...}` on stdout; exit code 2 (help and version print as usual, exit 0).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !json_requested() {
        e.exit();
    }
    let text = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "a subcommand is required (see paddock --help)".to_owned()
    } else {
        e.render().to_string()
    };
    let msg = text.trim().trim_start_matches("error: ");
    if let Ok(line) = cli::safe_json(&serde_json::json!({ "error": msg }), false) {
        println!("{line}");
    }
    // Clap's text quotes only this command line.
    eprintln!("{}", text.trim_end());
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (cli, applied) = match parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let default_level = match cli.command {
        Cmd::Serve(_) | Cmd::HoldCgroup(_) => "info".to_owned(),
        // `paddock run` prints a failed start's cause itself, once.
        Cmd::Run(_) => format!("warn,{}=off", paddock_supervisor::START_FAILED_TARGET),
        _ => "warn".to_owned(),
    };
    logging::init(cli.log_format, &default_level);
    if let Some(a) = &applied {
        tracing::info!(file = %a.path.display(), keys = ?a.keys, overridden_by_flags = ?a.overridden, "read the config file");
    }
    match &cli.command {
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "paddock",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Cmd::Openapi => {
            print!("{}", openapi::document_string());
            return ExitCode::SUCCESS;
        }
        Cmd::Generate { what } => {
            return match generate::print(*what, Cli::command()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("paddock: generate: write to stdout: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let out = cli::Out { json: cli.json };
    // `paddock run` forks its guardian, which needs a process of one thread: before the
    // runtime starts.
    let (command, prepared) = match cli.command {
        Cmd::Run(args) if !args.detach => match run::prepare(*args) {
            Ok(p) => (None, Some(p)),
            Err(e) => return report_error(e, out),
        },
        c => (Some(c), None),
    };
    // `paddock run` drives one sandbox: one thread does it (no workers to start, wake and
    // join); the other commands keep two workers.
    let rt = if prepared.is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    }
    .enable_all()
    .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paddock: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let request_timeout = match paddock_supervisor::parse_duration(&cli.request_timeout) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            let why = match e {
                paddock_supervisor::Error::InvalidSpec(why) => why,
                e => e.to_string(),
            };
            return usage_error(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--request-timeout: {why}\n"),
            ));
        }
    };
    let c = client::Client::new(&cli.socket, request_timeout);
    let res = rt.block_on(async move {
        let command = match (command, prepared) {
            (_, Some(p)) => return run::run(p, out.json).await,
            (Some(c), None) => c,
            (None, None) => unreachable!("a command or a prepared run"),
        };
        match command {
            Cmd::Run(args) => {
                let spec = run::spec_from_args(&args)?;
                cli::run_detached(&c, out, spec).await
            }
            Cmd::Serve(args) => serve::serve(*args, cli.socket).await,
            Cmd::HoldCgroup(args) => hold::hold(args).await,
            Cmd::Ps { labels } => cli::ps(&c, out, &labels).await,
            Cmd::Node => cli::node::node(&c, out).await,
            Cmd::Drain { stop, grace } => cli::node::drain(&c, out, stop, grace.as_deref()).await,
            Cmd::Undrain => cli::node::undrain(&c, out).await,
            Cmd::Inspect {
                target,
                jail,
                network,
            } => cli::inspect(&c, out, &target.id, &target.lifecycle, jail, network).await,
            Cmd::Stop { target, timeout } => {
                cli::stop(
                    &c,
                    out,
                    &target.id,
                    timeout.as_deref(),
                    false,
                    &target.lifecycle,
                )
                .await
            }
            Cmd::Kill(t) => cli::stop(&c, out, &t.id, None, true, &t.lifecycle).await,
            Cmd::Wait { target, timeout } => {
                cli::wait(&c, out, &target.id, timeout.as_deref(), &target.lifecycle).await
            }
            Cmd::Pause(t) => cli::pause(&c, out, &t.id, true, &t.lifecycle).await,
            Cmd::Resume(t) => cli::pause(&c, out, &t.id, false, &t.lifecycle).await,
            Cmd::Deadline { id, extend } => cli::extend_deadline(&c, out, &id, &extend).await,
            Cmd::Rm { id, force } => cli::rm(&c, out, &id, force).await,
            Cmd::Stats(t) => cli::stats(&c, out, &t.id, &t.lifecycle).await,
            Cmd::Update(a) => cli::limits::update(&c, out, &a).await,
            Cmd::Events { id, count, since } => {
                cli::events(&c, out, id.as_deref(), since, count).await
            }
            Cmd::Logs(t) => cli::logs(&c, out, &t.id, &t.lifecycle).await,
            Cmd::Top { once, interval } => {
                let iv =
                    paddock_supervisor::parse_duration(&interval)?.max(Duration::from_millis(100));
                cli::top(&c, out, once, iv).await
            }
            Cmd::Completions { .. } | Cmd::Openapi | Cmd::Generate { .. } => {
                unreachable!("handled above")
            }
        }
    });
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => report_error(e, out),
    }
}

/// Prints a failed command's error (stderr, and stdout as JSON with `--json`) and returns
/// its exit code.
fn report_error(e: anyhow::Error, out: cli::Out) -> ExitCode {
    // Messages may quote what a client sent (IDs, commands): terminal-safe.
    if let Some(d) = e.downcast_ref::<client::DaemonError>() {
        if out.json {
            let v = serde_json::json!({ "error": d.message, "status": d.status.as_u16() });
            println!("{}", cli::safe_json(&v, false).unwrap_or_default());
        }
        eprintln!("paddock: {}", cli::term_safe(&d.message));
        return ExitCode::from(1);
    }
    let msg = format!("{e:#}");
    if out.json {
        let v = serde_json::json!({ "error": msg });
        println!("{}", cli::safe_json(&v, false).unwrap_or_default());
    }
    eprintln!("paddock: {}", cli::term_safe(&msg));
    ExitCode::from(run::failure_code(&e))
}
