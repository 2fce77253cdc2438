//! A small HTTP/1.1 client for the daemon's unix socket (hyper 1 over `tokio::net::UnixStream`).
//!
//! Every request has a deadline (`--request-timeout`, default [`DEFAULT_REQUEST_TIMEOUT`]):
//! a daemon that accepts and never answers is an error naming the socket and the request,
//! not a hang. The commands that wait by design pass their own: `wait` none (or its
//! `--timeout` plus the deadline), `events` one for the answer's head only, `stop` and
//! `kill` the deadline plus the sandbox's grace period and kill timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The default of `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "30s";

/// A client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// The deadline of a request (`None`: no deadline).
    timeout: Option<Duration>,
}

/// A request to the daemon that passed its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "the paddock daemon at {socket} did not answer {method} {path} within {}: it may be overloaded or hung (--request-timeout, or PADDOCK_REQUEST_TIMEOUT, sets how long to wait; 0 waits forever)",
    fmt_duration(*.after)
)]
pub struct DeadlineError {
    /// The socket.
    pub socket: String,
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
    /// The deadline that passed.
    pub after: Duration,
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// An error answer of the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    /// HTTP status.
    pub status: StatusCode,
    /// The daemon's message.
    pub message: String,
}

impl Client {
    /// A client of the daemon at `socket` whose requests must be answered within `timeout`
    /// (`None`: they may take forever).
    pub fn new(socket: &Path, timeout: Option<Duration>) -> Self {
        Client {
            socket: socket.to_owned(),
            timeout,
        }
    }

    /// The deadline of a request.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The deadline plus `extra` (`None` stays `None`: no deadline).
    pub fn timeout_plus(&self, extra: Duration) -> Option<Duration> {
        self.timeout.map(|t| t.saturating_add(extra))
    }

    /// Runs `fut` (the request `method path`) within `deadline`.
    async fn within<T>(
        &self,
        deadline: Option<Duration>,
        method: &Method,
        path: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match deadline {
            None => fut.await,
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => Err(anyhow!(DeadlineError {
                    socket: self.socket.display().to_string(),
                    method: method.clone(),
                    path: path.to_owned(),
                    after: d,
                })),
            },
        }
    }

    /// Sends one request and returns the raw response (body not read); connecting and the
    /// answer's head must take at most the client's deadline.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let (m, d) = (method.clone(), self.timeout);
        self.within(d, &m, path, self.send_now(method, path, body))
            .await
    }

    async fn send_now(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot connect to the paddock daemon at {} (is `paddock serve` running? set --socket or PADDOCK_SOCKET)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "paddock");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        Ok(sender.send_request(req).await?)
    }

    /// Sends a request; returns the body of a 2xx answer, or the daemon's error. The whole
    /// exchange must take at most the client's deadline.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes> {
        self.call_within(self.timeout, method, path, body).await
    }

    /// Like [`Client::call`] with the deadline `deadline` (`None`: none).
    pub async fn call_within(
        &self,
        deadline: Option<Duration>,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes> {
        let m = method.clone();
        self.within(deadline, &m, path, self.call_now(method, path, body))
            .await
    }

    async fn call_now(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes> {
        let resp = self.send_now(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        Err(anyhow!(DaemonError { status, message }))
    }

    /// Like [`Client::call`], decoding JSON.
    pub async fn json(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        self.json_within(self.timeout, method, path, body).await
    }

    /// Like [`Client::call_within`], decoding JSON.
    pub async fn json_within(
        &self,
        deadline: Option<Duration>,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value> {
        let b = self.call_within(deadline, method, path, body).await?;
        if b.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&b).context("the daemon's answer is not JSON")
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
