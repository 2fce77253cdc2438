//! The implementations under test, behind one trait.
//!
//! Adding an implementation means one more type with this trait: the scenarios only call
//! the trait. `paddock-api` and `paddock-cli` are in [`crate::daemon`].

use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_supervisor::{Config, SandboxId, SandboxSpec, StopReport, Supervisor};

use crate::{HELPER_ARG, INCIDENT_SCRIPT, LEAK_SCRIPT};

/// A boxed future of an I/O result, for the trait's async methods.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// What one burst round measured.
#[derive(Debug, Default, Clone)]
pub struct BurstResult {
    /// Per-sandbox start latency (the start call alone).
    pub starts: Vec<Duration>,
    /// Per-sandbox start completion measured from the beginning of the burst.
    pub starts_from_burst: Vec<Duration>,
    /// Per-sandbox stop latency, from its stop request to its cgroup being gone.
    pub stops: Vec<Duration>,
    /// Time to start all.
    pub start_total: Duration,
    /// Time to stop all.
    pub stop_total: Duration,
}

fn unsupported<'a, T: Send + 'a>(imp: &str, what: &str) -> Fut<'a, T> {
    let msg = format!("{imp} does not implement {what}");
    Box::pin(async move { Err(io::Error::new(io::ErrorKind::Unsupported, msg)) })
}

/// One implementation of the benchmarked operations. Every method does the whole
/// operation and returns the time of its measured part.
pub trait Implementation: Send {
    /// Its name in the results.
    fn name(&self) -> &'static str;
    /// Why it cannot run here at all, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Whether it takes part in `scenario`.
    fn supports(&self, scenario: &str) -> bool;
    /// The bench-root subdirectory holding its cgroups (checked for leaks).
    fn leak_dir(&self) -> &'static str;
    /// Leaks only it can see (runtime state such as `runc list`).
    fn extra_leaks(&self) -> usize {
        0
    }
    /// Create, spawn `/bin/true`, wait for its exit, remove.
    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "lifecycle")
    }
    /// Untimed: start the leak payload and wait until the escapee runs. Timed: from the
    /// stop request (no grace) to the cgroup being gone.
    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        unsupported(self.name(), "leaked-teardown")
    }
    /// Untimed: start the incident's wrapper chain. Timed: from the stop request (grace
    /// `grace`) to the cgroup being gone.
    fn incident_stop(&mut self, _grace: Duration) -> Fut<'_, Duration> {
        unsupported(self.name(), "incident-stop")
    }
    /// `n` sandboxes started concurrently, then all stopped concurrently.
    fn burst(&mut self, _n: usize) -> Fut<'_, BurstResult> {
        unsupported(self.name(), "burst")
    }
    /// Starts `n` long-running background sandboxes (for `scale`).
    fn populate(&mut self, _n: usize) -> Fut<'_, ()> {
        unsupported(self.name(), "populate")
    }
    /// Stops and forgets the background sandboxes.
    fn depopulate(&mut self) -> Fut<'_, ()> {
        unsupported(self.name(), "depopulate")
    }
    /// Resident memory of the process that holds the sandboxes' state, KiB.
    fn resident_kib(&self) -> Option<u64> {
        None
    }
}

/// Resident memory of this process, KiB (`VmRSS` of `/proc/self/status`).
pub fn self_rss_kib() -> Option<u64> {
    rss_kib_of("self")
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn rss_kib_of(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn sup_err(e: paddock_supervisor::Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn check_report(r: &StopReport) -> io::Result<()> {
    if let Some(e) = &r.error {
        return Err(io::Error::other(format!("stop failed: {e}")));
    }
    if !r.stuck.is_empty() {
        return Err(io::Error::other(format!("quarantined: {:?}", r.stuck)));
    }
    Ok(())
}

/// `paddock`: the supervisor library in this process.
pub struct Paddock {
    sup: Supervisor,
    seq: u64,
    background: Vec<SandboxId>,
}

impl Paddock {
    /// Starts `spec`, waits until its payload is in place (`ready_sleeps` as for
    /// `wait_ready_blocking`) and past the notification rate limit, then times the stop
    /// request to the cgroup being gone: `kill` when `grace` is zero, else `stop` with the
    /// spec's grace.
    fn timed_stop(
        &self,
        spec: SandboxSpec,
        ready_sleeps: usize,
        grace: Duration,
    ) -> Fut<'_, Duration> {
        let sup = self.sup.clone();
        Box::pin(async move {
            let id = spec.id.clone();
            let st = sup.start(spec).await.map_err(sup_err)?;
            wait_ready_blocking(&st.info.cgroup_path, 2, ready_sleeps)?;
            tokio::time::sleep(crate::SETTLE).await;
            let lc = Some(st.info.lifecycle);
            let t0 = Instant::now();
            let r = if grace.is_zero() {
                sup.kill(&id, lc).await
            } else {
                sup.stop(&id, lc).await
            }
            .map_err(sup_err)?;
            let dt = t0.elapsed();
            sup.forget(&id).map_err(sup_err)?;
            check_report(&r)?;
            Ok(dt)
        })
    }

    /// A supervisor over `<bench root>/paddock`.
    pub fn new(root: &Path) -> io::Result<Paddock> {
        let root = paddock_cgroup::Root::open_or_create(root)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let sup = Supervisor::new(Config::new(root)).map_err(sup_err)?;
        Ok(Paddock {
            sup,
            seq: 0,
            background: Vec::new(),
        })
    }

    fn next_id(&mut self, prefix: &str) -> SandboxId {
        self.seq += 1;
        SandboxId::new(format!("{prefix}{}", self.seq)).expect("valid id")
    }

    fn shell(id: SandboxId, shell: &str, script: &str) -> SandboxSpec {
        SandboxSpec::new(id, shell, ["-c", script])
    }
}

/// [`crate::raw::wait_ready`] from async code (in `block_in_place`).
pub fn wait_ready_blocking(path: &Path, count: usize, sleeps: usize) -> io::Result<()> {
    tokio::task::block_in_place(|| crate::raw::wait_ready(path, count, sleeps))
}

impl Implementation for Paddock {
    fn name(&self) -> &'static str {
        "paddock"
    }
    fn supports(&self, _scenario: &str) -> bool {
        true
    }
    fn leak_dir(&self) -> &'static str {
        "paddock"
    }

    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("l");
        let sup = self.sup.clone();
        Box::pin(async move {
            let spec = SandboxSpec::new(id.clone(), "/bin/true", Vec::<String>::new());
            let t0 = Instant::now();
            let st = sup.start(spec).await.map_err(sup_err)?;
            // The stop that the main process's exit triggers; its outcome is kept, so this
            // sees it also when it finished before the call.
            let report = sup
                .wait_stopped(&id, Some(st.info.lifecycle))
                .await
                .map_err(sup_err)?;
            check_report(&report)?;
            sup.forget(&id).map_err(sup_err)?;
            Ok(t0.elapsed())
        })
    }

    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let spec = Paddock::shell(self.next_id("k"), "/bin/sh", LEAK_SCRIPT);
        self.timed_stop(spec, 2, Duration::ZERO)
    }

    fn incident_stop(&mut self, grace: Duration) -> Fut<'_, Duration> {
        let mut spec = Paddock::shell(self.next_id("i"), "/bin/bash", INCIDENT_SCRIPT);
        spec.stop.grace_period_ms = grace.as_millis() as u64;
        self.timed_stop(spec, 1, grace)
    }

    fn burst(&mut self, n: usize) -> Fut<'_, BurstResult> {
        let ids: Vec<SandboxId> = (0..n).map(|_| self.next_id("b")).collect();
        let sup = self.sup.clone();
        Box::pin(async move {
            let mut res = BurstResult::default();
            let burst0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for id in ids {
                let sup = sup.clone();
                set.spawn(async move {
                    let spec = SandboxSpec::new(id.clone(), "/bin/sleep", ["1000"]);
                    let t0 = Instant::now();
                    let r = sup.start(spec).await;
                    (
                        id,
                        r.map(|s| s.info.lifecycle),
                        t0.elapsed(),
                        burst0.elapsed(),
                    )
                });
            }
            let mut started = Vec::with_capacity(n);
            let mut first_err = None;
            while let Some(j) = set.join_next().await {
                let (id, r, dt, since) = j.map_err(io::Error::other)?;
                match r {
                    Ok(lc) => {
                        res.starts.push(dt);
                        res.starts_from_burst.push(since);
                        started.push((id, lc));
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            res.start_total = burst0.elapsed();
            let stop0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (id, lc) in started {
                let sup = sup.clone();
                set.spawn(async move {
                    let t0 = Instant::now();
                    let r = sup.kill(&id, Some(lc)).await;
                    let dt = t0.elapsed();
                    let f = sup.forget(&id);
                    (r, f, dt)
                });
            }
            while let Some(j) = set.join_next().await {
                let (r, f, dt) = j.map_err(io::Error::other)?;
                match r.map_err(sup_err).and_then(|r| check_report(&r)) {
                    Ok(()) => res.stops.push(dt),
                    Err(e) => {
                        first_err.get_or_insert(paddock_supervisor::Error::Io {
                            op: "stop".into(),
                            cause: e,
                        });
                    }
                }
                if let Err(e) = f {
                    first_err.get_or_insert(e);
                }
            }
            res.stop_total = stop0.elapsed();
            match first_err {
                Some(e) => Err(io::Error::other(format!(
                    "burst: {e} ({} started, {} stopped)",
                    res.starts.len(),
                    res.stops.len()
                ))),
                None => Ok(res),
            }
        })
    }

    fn populate(&mut self, n: usize) -> Fut<'_, ()> {
        let ids: Vec<SandboxId> = (0..n).map(|_| self.next_id("s")).collect();
        self.background.extend(ids.iter().cloned());
        let sup = self.sup.clone();
        Box::pin(async move {
            // Bounded concurrency: the point is the population, not the start rate.
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk.iter().cloned() {
                    let sup = sup.clone();
                    set.spawn(async move {
                        sup.start(SandboxSpec::new(id, "/bin/sleep", ["infinity"]))
                            .await
                            .map(|_| ())
                    });
                }
                while let Some(j) = set.join_next().await {
                    j.map_err(io::Error::other)?.map_err(sup_err)?;
                }
            }
            Ok(())
        })
    }

    fn depopulate(&mut self) -> Fut<'_, ()> {
        let ids = std::mem::take(&mut self.background);
        let sup = self.sup.clone();
        Box::pin(async move {
            let mut first_err = None;
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let (sup, id) = (sup.clone(), id.clone());
                    set.spawn(async move {
                        sup.kill(&id, None).await?;
                        sup.forget(&id)
                    });
                }
                while let Some(j) = set.join_next().await {
                    if let Err(e) = j.map_err(io::Error::other)? {
                        first_err.get_or_insert(e);
                    }
                }
            }
            first_err.map_or(Ok(()), |e| Err(sup_err(e)))
        })
    }

    fn resident_kib(&self) -> Option<u64> {
        self_rss_kib()
    }
}

/// The helper subprocess that runs the raw implementations (see [`crate::raw`]).
pub struct RawClient {
    proc: paddock_proc::Process,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
}

impl RawClient {
    /// Starts the helper with its cgroups under `base`.
    pub fn start(base: &Path) -> io::Result<RawClient> {
        for sub in ["floor", "seed-algorithm", "signal-wrapper"] {
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

/// `floor`, `seed-algorithm` or `signal-wrapper`, run by the shared helper.
pub struct Raw {
    name: &'static str,
    client: Arc<Mutex<RawClient>>,
}

impl Raw {
    /// The implementation `name` on the shared helper.
    pub fn new(name: &'static str, client: Arc<Mutex<RawClient>>) -> Raw {
        Raw { name, client }
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
            "floor" => true,
            "seed-algorithm" => scenario == "leaked-teardown",
            "signal-wrapper" => scenario == "incident-stop",
            _ => false,
        }
    }
    fn leak_dir(&self) -> &'static str {
        match self.name {
            "floor" => "raw/floor",
            "seed-algorithm" => "raw/seed-algorithm",
            _ => "raw/signal-wrapper",
        }
    }
    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let f = self.call(format!("lifecycle {}", self.name));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let f = self.call(format!("leaked {}", self.name));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn incident_stop(&mut self, grace: Duration) -> Fut<'_, Duration> {
        let f = self.call(format!("incident {} {}", self.name, grace.as_millis()));
        Box::pin(async move { parse_ns(&f.await?) })
    }
    fn burst(&mut self, n: usize) -> Fut<'_, BurstResult> {
        let f = self.call(format!("burst {n}"));
        Box::pin(async move {
            let ans = f.await?;
            let w: Vec<&str> = ans.split(' ').collect();
            if w.len() != 4 {
                return Err(io::Error::other(format!("helper burst answer: {ans:?}")));
            }
            let starts = parse_list(w[2])?;
            // The raw burst starts back to back: completion since the burst's start is
            // the running sum.
            let mut acc = Duration::ZERO;
            let starts_from_burst = starts
                .iter()
                .map(|d| {
                    acc += *d;
                    acc
                })
                .collect();
            Ok(BurstResult {
                start_total: parse_ns(w[0])?,
                stop_total: parse_ns(w[1])?,
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
