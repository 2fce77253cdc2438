//! `paddock-api`: the daemon's HTTP/JSON API over its unix socket.
//!
//! It and `paddock-cli` ([`crate::paddock_cli`]) use the `paddock` binary next to
//! `paddock-bench` (same target directory: build it with `cargo build --release -p
//! paddock`); when it is missing they report "not available".
//!
//! Children (the daemon, each `paddock run`) are spawned with `paddock_proc::Command` and
//! waited for through its reaper: paddock-proc's reaper thread reaps every child of this
//! process, so `std::process::Command::wait` would fail with `ECHILD`.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use paddock_supervisor::{SandboxId, SandboxSpec};
use serde_json::Value;

use crate::cleanup::BenchRoot;
use crate::implementation::{BurstResult, Fut, Implementation, rss_kib_of, wait_ready_blocking};
use crate::{LEAK_SCRIPT, WRAPPER_SCRIPT};

/// The `paddock` binary next to this executable.
pub fn paddock_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe.with_file_name("paddock");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it into the same target directory first (cargo build --release -p paddock)",
            bin.display()
        ))
    }
}

/// The last `max` bytes (at most) of the file at `path`, trimmed; empty if unreadable.
pub fn tail_of(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let s = s.trim();
    let start = s.len().saturating_sub(max);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// A minimal HTTP/1.1 client of one unix socket (hyper 1) that keeps connections alive
/// and reuses them, as production HTTP clients do: a request takes an idle connection when
/// one is ready, else opens one; after its answer has been read in full the connection
/// goes back to the pool (at most [`MAX_IDLE`] are kept; an event stream keeps its own).
#[derive(Debug, Clone)]
struct Http {
    socket: PathBuf,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

/// Idle connections kept open; more are closed once their answer is read.
const MAX_IDLE: usize = 16;

impl Http {
    async fn connect(&self) -> io::Result<tokio::net::UnixStream> {
        // A burst of concurrent connects can overflow the listen backlog: a non-blocking
        // unix-socket connect then fails with EAGAIN instead of waiting. Retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::UnixStream::connect(&self.socket).await {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                r => return r,
            }
        }
    }

    /// A connection ready for a request: an idle one, else a new one.
    async fn sender(&self) -> io::Result<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                // Closed by the daemon meanwhile: drop it, try the next.
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => break,
            }
        }
        let stream = self.connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Returns a connection whose last answer was read in full to the pool.
    fn put_back(&self, s: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !s.is_closed() && idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    /// Sends one request; the answer and the connection it came on (reusable once the
    /// answer's body has been read in full).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> io::Result<(Response<Incoming>, SendRequest<Full<Bytes>>)> {
        let mut sender = self.sender().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "paddock");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        Ok((resp, sender))
    }

    /// Sends a request; the JSON body of a 2xx answer (`Null` when empty), else the
    /// daemon's error message with the status.
    async fn json(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> io::Result<Value> {
        let what = format!("{method} {path}");
        let (resp, sender) = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        self.put_back(sender);
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(io::Error::other(format!("{what}: {status}: {msg}")));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::other(format!("{what}: answer is not JSON: {e}")))
    }
}

/// A `StopReport` (as JSON) that must show a complete stop.
fn check_report(r: &Value) -> io::Result<()> {
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        return Err(io::Error::other(format!("stop failed: {e}")));
    }
    if r.get("stuck")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(io::Error::other(format!("quarantined: {}", r["stuck"])));
    }
    Ok(())
}

/// The create body: the spec without `stdio` (the daemon then logs to files).
fn create_body(spec: &SandboxSpec) -> io::Result<Vec<u8>> {
    let mut v = serde_json::to_value(spec).map_err(io::Error::other)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("stdio");
    }
    serde_json::to_vec(&v).map_err(io::Error::other)
}

fn str_field<'a>(v: &'a Value, k: &str) -> io::Result<&'a str> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| io::Error::other(format!("answer without {k:?}: {v}")))
}

/// The daemon subprocess and its temp directory.
struct Daemon {
    proc: paddock_proc::Process,
    dir: PathBuf,
}

impl Daemon {
    /// SIGTERM (it runs with `--stop-sandboxes-on-exit`), wait; SIGKILL if it hangs;
    /// remove the temp directory (socket, state, logs).
    fn stop(self) {
        let _ = self.proc.signal(libc::SIGTERM);
        if self.proc.wait_timeout(Duration::from_secs(60)).is_none() {
            eprintln!("paddock-bench: daemon still running after SIGTERM, killing it waited=60s");
            let _ = self.proc.kill();
            let _ = self.proc.wait_timeout(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type SharedDaemon = Arc<Mutex<Option<Daemon>>>;

fn stop_shared(d: &SharedDaemon) {
    let taken = d.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(d) = taken {
        d.stop();
    }
}

/// `paddock-api`: one `paddock serve` subprocess; every operation is an HTTP request over
/// its unix socket.
pub struct PaddockApi {
    http: Http,
    daemon: SharedDaemon,
    pid: Option<i32>,
    seq: u64,
    background: Vec<String>,
    unavailable: Option<String>,
}

impl PaddockApi {
    /// Starts the daemon (cgroup root `<bench root>/paddock-api`, socket and state in a
    /// temp directory) and waits for `/readyz`; on failure the implementation is returned
    /// marked unavailable, with the reason.
    pub async fn start(bench: &BenchRoot) -> PaddockApi {
        let dir = std::env::temp_dir().join(format!("{}.paddock-api", bench.name()));
        let daemon: SharedDaemon = Arc::new(Mutex::new(None));
        let mut api = PaddockApi {
            http: Http {
                socket: dir.join("paddock.sock"),
                idle: Arc::default(),
            },
            daemon: daemon.clone(),
            pid: None,
            seq: 0,
            background: Vec::new(),
            unavailable: None,
        };
        // Stopped at cleanup too (error, Ctrl-C, SIGTERM), before the temp dirs go.
        bench
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(move || stop_shared(&daemon)));
        if let Err(e) = api.setup(bench, &dir).await {
            stop_shared(&api.daemon);
            api.unavailable = Some(format!("not available: {e}"));
        }
        api
    }

    async fn setup(&mut self, bench: &BenchRoot, dir: &Path) -> io::Result<()> {
        let bin = paddock_binary().map_err(io::Error::other)?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let log_path = dir.join("daemon.log");
        let log = std::fs::File::create(&log_path)?;
        let proc = paddock_proc::Command::new(&bin)
            .arg("--socket")
            .arg(&self.http.socket)
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--cgroup-root")
            .arg(bench.path.join("paddock-api"))
            .arg("--stop-sandboxes-on-exit")
            .stdin(paddock_proc::Stdio::Null)
            .stdout(paddock_proc::Stdio::dup(log.as_fd())?)
            .stderr(paddock_proc::Stdio::dup(log.as_fd())?)
            // Its own session: a terminal's Ctrl-C reaches the bench, which then stops it.
            .setsid(true)
            .parent_death_signal(libc::SIGTERM)
            .spawn()
            .map_err(|e| io::Error::other(format!("spawn {}: {e}", bin.display())))?;
        self.pid = Some(proc.pid());
        *self.daemon.lock().unwrap_or_else(|e| e.into_inner()) = Some(Daemon {
            proc,
            dir: dir.to_owned(),
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = self
                .daemon
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|d| d.proc.try_wait());
            if let Some(st) = exited {
                return Err(io::Error::other(format!(
                    "paddock serve exited ({st}): {}",
                    tail_of(&log_path, 500)
                )));
            }
            match self.http.json(Method::GET, "/readyz", None).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io::Error::other(format!(
                        "paddock serve not ready within 20 s ({e}): {}",
                        tail_of(&log_path, 500)
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}", self.seq)
    }

    fn spec(id: &str, command: &str, args: &[&str]) -> io::Result<SandboxSpec> {
        let id = SandboxId::new(id.to_string()).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(SandboxSpec::new(id, command, args.iter().copied()))
    }
}

impl Drop for PaddockApi {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| stop_shared(&self.daemon));
    }
}

/// Creates a sandbox; returns its `SandboxInfo`.
async fn create(http: &Http, spec: &SandboxSpec) -> io::Result<Value> {
    http.json(Method::POST, "/v1/sandboxes", Some(create_body(spec)?))
        .await
}

async fn delete(http: &Http, id: &str) -> io::Result<()> {
    http.json(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
        .await
        .map(drop)
}

async fn kill(http: &Http, id: &str, lc: &str) -> io::Result<Value> {
    http.json(
        Method::POST,
        &format!("/v1/sandboxes/{id}/kill?lifecycle={lc}"),
        None,
    )
    .await
}

impl Implementation for PaddockApi {
    fn name(&self) -> &'static str {
        "paddock-api"
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
    fn supports(&self, scenario: &str) -> bool {
        // Not jailed-lifecycle (not asked for by issue 14): the API path's jailed start is
        // the library's plus the request.
        !matches!(scenario, "jailed-lifecycle" | "net-lifecycle")
    }
    fn leak_dir(&self) -> &'static str {
        "paddock-api"
    }

    fn lifecycle(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("l");
        let http = self.http.clone();
        Box::pin(async move {
            let spec = PaddockApi::spec(&id, "/bin/true", &[])?;
            let t0 = Instant::now();
            let info = create(&http, &spec).await?;
            let lc = str_field(&info, "lifecycle")?.to_string();
            // The stop that the main process's exit triggers, waited for by `wait` (which
            // also answers when it finished before the request).
            let done = http
                .json(
                    Method::GET,
                    &format!("/v1/sandboxes/{id}/wait?lifecycle={lc}&timeout=30s"),
                    None,
                )
                .await?;
            match done.get("state").and_then(Value::as_str) {
                Some("stopped") => check_report(&done["stop_report"])?,
                s => {
                    return Err(io::Error::other(format!(
                        "sandbox {id} {} after its main exit: {done}",
                        s.unwrap_or("in an unknown state")
                    )));
                }
            }
            delete(&http, &id).await?;
            Ok(t0.elapsed())
        })
    }

    fn leaked_teardown(&mut self) -> Fut<'_, Duration> {
        let id = self.next_id("k");
        let http = self.http.clone();
        Box::pin(async move {
            let spec = PaddockApi::spec(&id, "/bin/sh", &["-c", LEAK_SCRIPT])?;
            let info = create(&http, &spec).await?;
            let lc = str_field(&info, "lifecycle")?.to_string();
            wait_ready_blocking(Path::new(str_field(&info, "cgroup_path")?), 2, 2)?;
            tokio::time::sleep(crate::SETTLE).await;
            let t0 = Instant::now();
            let r = kill(&http, &id, &lc).await?;
            let dt = t0.elapsed();
            delete(&http, &id).await?;
            check_report(&r)?;
            Ok(dt)
        })
    }

    fn wrapper_stop(&mut self, grace: Duration) -> Fut<'_, Duration> {
        let id = self.next_id("i");
        let http = self.http.clone();
        Box::pin(async move {
            let mut spec = PaddockApi::spec(&id, "/bin/bash", &["-c", WRAPPER_SCRIPT])?;
            spec.stop.grace_period_ms = grace.as_millis() as u64;
            let info = create(&http, &spec).await?;
            let lc = str_field(&info, "lifecycle")?.to_string();
            wait_ready_blocking(Path::new(str_field(&info, "cgroup_path")?), 2, 1)?;
            tokio::time::sleep(crate::SETTLE).await;
            let t0 = Instant::now();
            let r = http
                .json(
                    Method::POST,
                    &format!(
                        "/v1/sandboxes/{id}/stop?timeout={}ms&lifecycle={lc}",
                        grace.as_millis()
                    ),
                    None,
                )
                .await?;
            let dt = t0.elapsed();
            delete(&http, &id).await?;
            check_report(&r)?;
            Ok(dt)
        })
    }

    fn burst(&mut self, n: usize) -> Fut<'_, BurstResult> {
        let ids: Vec<String> = (0..n).map(|_| self.next_id("b")).collect();
        let http = self.http.clone();
        Box::pin(async move {
            let mut res = BurstResult::default();
            let mut first_err: Option<io::Error> = None;
            let burst0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for id in ids {
                let http = http.clone();
                set.spawn(async move {
                    let t0 = Instant::now();
                    let r = async {
                        let info =
                            create(&http, &PaddockApi::spec(&id, "/bin/sleep", &["1000"])?).await?;
                        Ok::<_, io::Error>(str_field(&info, "lifecycle")?.to_string())
                    }
                    .await;
                    (id, r, t0.elapsed(), burst0.elapsed())
                });
            }
            let mut started = Vec::with_capacity(n);
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
                let http = http.clone();
                set.spawn(async move {
                    let t0 = Instant::now();
                    let r = kill(&http, &id, &lc).await;
                    let dt = t0.elapsed();
                    let d = delete(&http, &id).await;
                    (r, d, dt)
                });
            }
            while let Some(j) = set.join_next().await {
                let (r, d, dt) = j.map_err(io::Error::other)?;
                match r.and_then(|r| check_report(&r)) {
                    Ok(()) => res.stops.push(dt),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
                if let Err(e) = d {
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
        let ids: Vec<String> = (0..n).map(|_| self.next_id("s")).collect();
        self.background.extend(ids.iter().cloned());
        let http = self.http.clone();
        Box::pin(async move {
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let (http, id) = (http.clone(), id.clone());
                    set.spawn(async move {
                        create(&http, &PaddockApi::spec(&id, "/bin/sleep", &["infinity"])?)
                            .await
                            .map(drop)
                    });
                }
                while let Some(j) = set.join_next().await {
                    j.map_err(io::Error::other)??;
                }
            }
            Ok(())
        })
    }

    fn depopulate(&mut self) -> Fut<'_, ()> {
        let ids = std::mem::take(&mut self.background);
        let http = self.http.clone();
        Box::pin(async move {
            let mut first_err = None;
            for chunk in ids.chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let (http, id) = (http.clone(), id.clone());
                    set.spawn(async move {
                        http.json(Method::POST, &format!("/v1/sandboxes/{id}/kill"), None)
                            .await?;
                        delete(&http, &id).await
                    });
                }
                while let Some(j) = set.join_next().await {
                    if let Err(e) = j.map_err(io::Error::other)? {
                        first_err.get_or_insert(e);
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        })
    }

    /// The daemon's VmRSS (not the bench's).
    fn resident_kib(&self) -> Option<u64> {
        self.pid.and_then(|p| rss_kib_of(&p.to_string()))
    }
}
