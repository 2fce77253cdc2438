//! Shared helpers of the binary's end-to-end tests: a daemon guard, a tiny HTTP/1.1 client
//! over the unix socket (or TCP), and leak checks that read /proc and the cgroup tree
//! directly. These test binaries never use paddock-proc, so std::process is safe here.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use paddock_testutil::TestRoot;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_paddock");

/// A test's world: its cgroup, a temp dir for socket, state and logs.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub cgroot: PathBuf,
    // Dropped last (fields drop in order): kills and removes everything under the test cgroup.
    pub t: TestRoot,
}

pub fn world(test: &str) -> Option<World> {
    let t = paddock_testutil::test_root(test)?;
    let tmp = tempfile::Builder::new()
        .prefix("paddock-e2e.")
        .tempdir()
        .unwrap();
    Some(World {
        socket: tmp.path().join("paddock.sock"),
        state: tmp.path().join("state"),
        cgroot: t.path().join("sandboxes"),
        tmp,
        t,
    })
}

/// A running daemon; SIGKILLed and reaped on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl World {
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "serve".into(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--cgroup-root".into(),
            self.cgroot.display().to_string(),
        ]
    }

    /// Starts a daemon with extra args and waits until /readyz answers 200.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        let d = self.spawn_daemon(extra);
        d.wait_ready();
        d
    }

    pub fn spawn_daemon(&self, extra: &[&str]) -> Daemon {
        self.spawn_daemon_env(extra, &[])
    }

    /// Starts a daemon with extra args and environment variables (not waiting for ready).
    pub fn spawn_daemon_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let n = std::fs::read_dir(self.tmp.path()).unwrap().count();
        let log = self.tmp.path().join(format!("daemon.{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = self.serve_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .env("PADDOCK_LOG", "info")
            .env_remove("PADDOCK_SOCKET")
            .env_remove("PADDOCK_TEST_PAUSE_AT")
            // A host's /etc/paddock/config.toml (an installed .deb) must not change tests.
            .env("PADDOCK_CONFIG", "none")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn paddock serve");
        Daemon {
            child: Some(child),
            log,
            socket: self.socket.clone(),
        }
    }

    /// Runs the CLI against this world's daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PADDOCK_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("run paddock")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "paddock {args:?} failed: {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        http_unix(&self.socket, method, path, body, &[])
    }

    /// Sandbox cgroups left under the managed root.
    pub fn cgroups(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(&self.cgroot) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Live (non-zombie) processes whose cgroup is in this test's subtree, found by walking
    /// /proc (independently of cgroup.procs).
    pub fn procs_in_subtree(&self) -> Vec<i32> {
        let rel = format!("/{}", self.t.relative().display());
        live_procs_with_cgroup()
            .into_iter()
            .filter(|(_, cg)| *cg == rel || cg.starts_with(&format!("{rel}/")))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Asserts nothing is left: no sandbox cgroup, no process in the subtree.
    pub fn assert_no_leaks(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (c, p) = (self.cgroups(), self.procs_in_subtree());
            if c.is_empty() && p.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("leaked: cgroups {c:?}, processes {p:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() {
                if let Ok(r) = try_http_unix(&self.socket, "GET", "/readyz", None, &[]) {
                    if r.status == 200 {
                        return;
                    }
                }
            }
            if let Some(c) = self.child.as_ref() {
                // try_wait is fine: this test binary does not use paddock-proc.
                let mut c2 = proc_child(c);
                if let Ok(Some(st)) = c2.try_wait() {
                    panic!("daemon exited early ({st}); log:\n{}", self.log_text());
                }
            }
            if Instant::now() > deadline {
                panic!("daemon not ready after 20 s; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting (see [`Daemon::wait_exit`]).
    pub fn send_sigterm(&self) {
        let c = self.child.as_ref().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGTERM) }, 0);
    }

    /// Waits until the log has a line containing `text` (at most `timeout`).
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(text) {
            if Instant::now() > deadline {
                panic!(
                    "no {text:?} in the daemon log after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit (at most `timeout`, then SIGKILL and panic); returns the code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and wait for the exit (at most `timeout`); returns the exit code.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<i32> {
        self.child.as_ref()?;
        self.send_sigterm();
        self.wait_exit(timeout)
    }
}

// `Child::try_wait` needs `&mut`; the readiness loop only has `&`. Reading the status
// through a second handle is not possible with std, so poll /proc instead.
struct ProcChild(i32);
impl ProcChild {
    fn try_wait(&mut self) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.0)) {
            Ok(s)
                if s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
            {
                Ok(Some("exited".into()))
            }
            Ok(_) => Ok(None),
            Err(_) => Ok(Some("gone".into())),
        }
    }
}
fn proc_child(c: &Child) -> ProcChild {
    ProcChild(c.id() as i32)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.text()))
            .to_owned()
    }
}

fn request_bytes(
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: paddock\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    let mut v = req.into_bytes();
    v.extend_from_slice(body);
    v
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no complete HTTP answer",
        ));
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(Resp {
        status,
        headers: head,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

pub fn try_http_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    try_http_unix_within(socket, method, path, body, headers, Duration::from_secs(60))
}

/// Like [`try_http_unix`], giving up (an error) when the answer has not come within
/// `timeout`.
pub fn try_http_unix_within(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(&request_bytes(method, path, body, headers))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn http_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Resp {
    try_http_unix(socket, method, path, body, headers)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn http_tcp(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request_bytes(method, path, body, headers))
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw).unwrap()
}

/// A sandbox spec as JSON.
pub fn spec(id: &str, script: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "command": "/bin/sh", "args": ["-c", script],
        "stop": { "grace_period_ms": 1000, "kill_timeout_ms": 5000 }
    }))
    .unwrap()
}

/// The payload that leaks: a double-forked, setsid'd escapee that ignores SIGTERM, and a
/// main process that prints the escapee's pid and then sleeps.
pub const LEAKY: &str = r#"sh -c 'trap "" TERM; setsid sh -c "trap \"\" TERM; while :; do sleep 1; done" & echo $! > /dev/null' ; trap "" TERM; while :; do sleep 1; done"#;

/// Every live (non-zombie) process with its cgroup v2 path (the `0::` line of
/// `/proc/<pid>/cgroup`), read from /proc, independently of any `cgroup.procs`.
pub fn live_procs_with_cgroup() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::")) else {
            continue;
        };
        if paddock_testutil::pid_alive(pid) {
            out.push((pid, path.to_owned()));
        }
    }
    out
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of an unlabelled sample (or `name{labels}` exactly) in a metrics text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.rsplit_once(' ')
            .filter(|(k, _)| *k == sample)
            .and_then(|(_, v)| v.parse().ok())
    })
}

/// Where a [`Hyper`] request goes.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    /// The daemon's unix socket.
    Unix(&'a Path),
    /// A TCP listener, `host:port`.
    Tcp(&'a str),
}

/// A real HTTP/1.1 client (hyper's) for the well-formed requests of the tests; the raw
/// helpers above remain for malformed input a real client would refuse to send.
pub fn hyper_request(
    ep: Endpoint<'_>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Resp {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "paddock");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(bytes::Bytes::copy_from_slice(
                body.unwrap_or_default(),
            )))
            .unwrap();
        let resp = match ep {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .unwrap_or_else(|e| panic!("connect {}: {e}", p.display()));
                send(TokioIo::new(s), req).await
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .unwrap_or_else(|e| panic!("connect {a}: {e}"));
                send(TokioIo::new(s), req).await
            }
        };
        let status = resp.status().as_u16();
        let mut head = String::new();
        for (k, v) in resp.headers() {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("?")));
        }
        let body = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no complete body within 60 s"))
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers: head,
            body,
        }
    })
}

async fn send<I>(
    io: I,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> hyper::Response<hyper::body::Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .expect("no answer within 60 s")
        .unwrap()
}

impl World {
    /// A request through hyper's client over the unix socket.
    pub fn hyper(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        hyper_request(Endpoint::Unix(&self.socket), method, path, body, &[])
    }
}

/// Runs `cmd` (stdin null, output captured) and returns its output; kills it and panics if
/// it has not exited within `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let out_dir = tempfile::tempdir().unwrap();
    let (o, e) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}
