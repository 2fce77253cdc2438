//! `paddock`: run sandboxes whose every process lives and dies with the sandbox.
//!
//! `paddock run` runs one command in a fresh sandbox in the foreground, needing no daemon.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod logging;
mod run;

/// paddock: a supervisor for sandboxed workloads on cgroup v2. Every process a sandbox
/// starts lives and dies with the sandbox.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command in a fresh sandbox in the foreground, like `systemd-run --scope --wait`.
    ///
    /// When the command's main process exits, the rest of its process tree is stopped and
    /// the sandbox's cgroup removed; paddock exits with the main process's exit code (128+N
    /// when signal N killed it). Ctrl-C or SIGTERM stops the sandbox gracefully.
    ///
    /// Examples:
    ///   paddock run -- sh -c 'echo hello; sleep 1 & echo bye'
    ///   paddock run --memory 512M --cpus 1.5 --pids 256 --summary -- ./build.sh
    ///   paddock run --netns isolated -- ip -o link
    #[command(verbatim_doc_comment)]
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paddock: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async move {
        match cli.command {
            Cmd::Run(args) => run::run(args).await,
        }
    });
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("paddock: {e:#}");
            ExitCode::from(125)
        }
    }
}
