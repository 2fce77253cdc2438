//! `floor`, `rmdir-retry-200ms` and `signal-wrapper`: the benchmark's side of the raw
//! implementations, which run in a helper subprocess ([`crate::raw`]) driven over a pipe.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::HELPER_ARG;
use crate::implementation::{BurstResult, Fut, Implementation};

/// The implementations the helper runs, each with its cgroups in a subdirectory of that
/// name.
pub const RAW_IMPLS: [&str; 4] = [
    "floor",
    "floor-parallel",
    "rmdir-retry-200ms",
    "signal-wrapper",
];

/// The helper subprocess that runs the raw implementations (see [`crate::raw`]).
pub struct RawClient {
    proc: paddock_proc::Process,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
}

impl RawClient {
    /// Starts the helper with its cgroups under `base`.
    pub fn start(base: &Path) -> io::Result<RawClient> {
        for sub in RAW_IMPLS {
            std::fs::create_dir_all(base.join(sub))?;
        }
        let exe = std::env::current_exe()?;
        let mut proc = paddock_proc::Command::new(exe)
            .arg(HELPER_ARG)
            .arg(base)
            .stdin(paddock_proc::Stdio::Pipe)
            .stdout(paddock_proc::Stdio::Pipe)
            .parent_death_signal(libc::SIGKILL)
            .spawn()
            .map_err(|e| io::Error::other(format!("start the raw helper: {e}")))?;
        let to = std::fs::File::from(proc.take_stdin().expect("piped stdin"));
        let from = BufReader::new(std::fs::File::from(
            proc.take_stdout().expect("piped stdout"),
        ));
        Ok(RawClient { proc, to, from })
    }

    /// Sends one command and returns the answer after `ok `.
    pub fn call(&mut self, cmd: &str) -> io::Result<String> {
        tokio::task::block_in_place(|| {
            self.to.write_all(format!("{cmd}\n").as_bytes())?;
            let mut line = String::new();
            if self.from.read_line(&mut line)? == 0 {
                return Err(io::Error::other("the raw helper exited"));
            }
            let line = line.trim_end();
            match line.strip_prefix("ok ") {
                Some(rest) => Ok(rest.to_string()),
                None => Err(io::Error::other(format!(
                    "helper: {}",
                    line.strip_prefix("err ").unwrap_or(line)
                ))),
            }
        })
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        let _ = self.to.write_all(b"quit\n");
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            let _ = self.proc.kill();
            let _ = self.proc.wait_timeout(Duration::from_secs(5));
        }
    }
}

fn parse_ns(s: &str) -> io::Result<Duration> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_nanos)
        .map_err(|e| io::Error::other(format!("helper answer {s:?}: {e}")))
}

fn parse_list(s: &str) -> io::Result<Vec<Duration>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(parse_ns).collect()
}

/// `floor`, `floor-parallel`, `rmdir-retry-200ms` or `signal-wrapper`, run by the shared
/// helper.
pub struct Raw {
    name: &'static str,
    client: Arc<Mutex<RawClient>>,
    /// `floor-parallel`'s threads.
    threads: usize,
}

impl Raw {
    /// The implementation `name` on the shared helper (`floor-parallel` on `threads`
    /// threads).
    pub fn new(name: &'static str, client: Arc<Mutex<RawClient>>, threads: usize) -> Raw {
        Raw {
            name,
            client,
            threads,
        }
    }

    fn call(&self, cmd: String) -> Fut<'static, String> {
        let client = self.client.clone();
        Box::pin(async move {
            let mut c = client.lock().unwrap_or_else(|e| e.into_inner());
            c.call(&cmd)
        })
    }
}

impl Implementation for Raw {
    fn name(&self) -> &'static str {
        self.name
    }
    fn supports(&self, scenario: &str) -> bool {
        match self.name {
            "floor" => scenario != "net-lifecycle",
            "floor-parallel" => scenario == "burst",
            "rmdir-retry-200ms" => scenario == "leaked-teardown",
            "signal-wrapper" => scenario == "wrapper-stop",
            _ => false,
        }
    }
    fn leak_dir(&self) -> &'static str {
        match self.name {
            "floor" => "raw/floor",
            "floor-parallel" => "raw/floor-parallel",
            "rmdir-retry-200ms" => "raw/rmdir-retry-200ms",
            _ => "raw/signal-wrapper",
        }
    }
    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let f = self.call(format!("lifecycle {}", self.name));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn jail_check(&mut self) -> Fut<'_, String> {
        Box::pin(async { Ok("none: the plain lifecycle, the reference".to_string()) })
    }
    fn jailed_lifecycle(&mut self) -> Fut<'_, Duration> {
        self.lifecycle()
    }
    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let f = self.call(format!("leaked {}", self.name));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn wrapper_stop(&mut self, grace: Duration) -> Fut<'_, Duration> {
        let f = self.call(format!("wrapper-stop {} {}", self.name, grace.as_millis()));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn burst(&mut self, n: usize) -> Fut<'_, BurstResult> {
        let parallel = self.name == "floor-parallel";
        let f = match parallel {
            true => self.call(format!("burst-parallel {n} {}", self.threads)),
            false => self.call(format!("burst {n}")),
        };
        Box::pin(async move {
            let ans = f.await?;
            let w: Vec<&str> = ans.split(' ').collect();
            if w.len() != 4 + usize::from(parallel) {
                return Err(io::Error::other(format!("helper burst answer: {ans:?}")));
            }
            let starts = parse_list(w[2])?;
            let starts_from_burst = match parallel {
                true => parse_list(w[4])?,
                // Back to back: completion since the burst's start is the running sum.
                false => starts
                    .iter()
                    .scan(Duration::ZERO, |acc, d| {
                        *acc += *d;
                        Some(*acc)
                    })
                    .collect(),
            };
            Ok(BurstResult {
                start_total: parse_ns(w[0])?,
                stop_total: parse_ns(w[1])?,
                // Each start's own work is its create call; the rest, waiting for the
                // starts before it on its thread.
                working: starts.clone(),
                starts,
                starts_from_burst,
                stops: parse_list(w[3])?,
            })
        })
    }
}

/// The base directory of the raw helper's cgroups.
pub fn raw_base(bench: &Path) -> PathBuf {
    bench.join("raw")
}
