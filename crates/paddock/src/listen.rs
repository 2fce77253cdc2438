//! The daemon's listeners: one accept loop per listener (unix socket, TCP), each with its
//! own connection cap, per-connection timeouts, and a backoff on accept errors.
//!
//! Whoever can open a connection can hold daemon resources before any authentication (the
//! bearer token is checked only once a request's head is in), so every connection is
//! bounded in number and in time:
//!
//! - **Cap.** Each listener has its own [`Limits::max_connections`] slots (a semaphore).
//!   A slot is taken *before* `accept`: at the cap, further connections wait in the
//!   kernel's listen backlog, unaccepted and holding no descriptor of the daemon, and are
//!   accepted in arrival order as slots free (the timeouts below free them). The unix
//!   socket has its own cap, so a flood on TCP never takes the operator's room.
//! - **Header timeout.** A new connection must deliver a complete request head within
//!   [`Limits::header_timeout`] of its accept; on a kept-alive connection the head of the
//!   next request must be complete within that time of its first byte.
//! - **Idle timeout.** A kept-alive connection with no request in progress is closed
//!   after [`Limits::idle_timeout`] without a byte of a next request; and a request in
//!   progress on which the daemon waits for the client — a request body that does not
//!   arrive, or an answer the client does not read — for that long without progress is
//!   closed too. A request on which the *daemon* is working (`wait`, an event stream) is
//!   never idle.
//! - **Accept errors.** `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` (and any unexpected error)
//!   make the loop back off — from 10 ms doubling up to 1 s, cut short when any connection
//!   of the daemon closes — logged at most once a minute per listener (a WARN, and an
//!   INFO at the first accept that works after it; every failure is counted in
//!   [`ListenerStats::accept_errors`]), never ending the loop. Errors the kernel reports for one
//!   connection (`ECONNABORTED`, `EPROTO`, …) are retried at once. Each listener runs in
//!   its own task, so one backing off never delays the other.
//!
//! All timers are tokio timers armed per connection (one watchdog future per connection,
//! woken by the deadline or by the connection's state changing); nothing polls.
//!
//! Over 600 lines with its unit tests (about 580 without): the accept loop, the cap and the
//! per-connection watchdog share one connection state, and are read together with the
//! tests that hold them to their bounds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a request head may take (see the module docs).
    pub header_timeout: Duration,
    /// How long a connection may sit idle, or stall on the client (see the module docs).
    pub idle_timeout: Duration,
}

/// What one listener counts (exported as metrics).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed because a request head was not complete in time.
    pub header_timeouts: AtomicU64,
    /// Kept-alive connections closed because no next request came in time.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because the client stalled a request in progress.
    pub stall_timeouts: AtomicU64,
    /// Failed `accept` calls (logged at most once a minute).
    pub accept_errors: AtomicU64,
}

/// A listener the accept loop can take connections from.
pub trait Accept: Send + 'static {
    /// The connection type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Woken whenever any connection of the process closes: a listener backing off after
/// `EMFILE` tries again at once, since a descriptor was just freed.
fn closed_any() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(Notify::new)
}

/// Whether an accept error concerns only the connection being accepted (the kernel
/// passes pending network errors of the new socket to `accept`; retry at once).
fn per_connection_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let Some(raw) = e.raw_os_error() else {
        return false;
    };
    [
        Errno::CONNABORTED,
        Errno::CONNRESET,
        Errno::INTR,
        Errno::AGAIN,
        Errno::PROTO,
        Errno::NOPROTOOPT,
        Errno::HOSTDOWN,
        Errno::NONET,
        Errno::HOSTUNREACH,
        Errno::OPNOTSUPP,
        Errno::NETDOWN,
        Errno::NETUNREACH,
        Errno::PERM,
    ]
    .iter()
    .any(|x| x.raw_os_error() == raw)
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept failures are logged at most this often per listener.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` until `shutdown` becomes true; then stops accepting, asks
/// every open connection to finish its request in progress (idle ones close at once), and
/// returns once all have closed. `name` (`unix`, `tcp`) labels its log lines.
pub async fn serve<L: Accept>(
    listener: L,
    name: &'static str,
    app: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns: JoinSet<()> = JoinSet::new();
    // Accept failures: counted always, logged at most once per WARN_EVERY (a WARN, and
    // an INFO at the first accept that works after it).
    let mut failed: u64 = 0;
    let mut warned: Option<Instant> = None;
    let mut unrecovered = false;
    let mut backoff = BACKOFF_MIN;
    'accept: loop {
        // A slot first: at the cap, connections wait in the backlog, not in our fd table.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.wait_for(|s| *s) => break 'accept,
        };
        let io = loop {
            let r = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|s| *s) => break 'accept,
                Some(_) = conns.join_next() => continue,
            };
            match r {
                Ok(io) => break io,
                Err(e) if per_connection_error(&e) => continue,
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Relaxed);
                    failed += 1;
                    if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(listener = name, error = %e, failed, open = stats.open.load(Relaxed), "accept failed; backing off until connections close (logged at most once a minute; every failure is counted in paddock_accept_errors_total)");
                        warned = Some(Instant::now());
                        unrecovered = true;
                        failed = 0;
                    }
                    let closed = closed_any().notified();
                    tokio::select! {
                        _ = closed => {}
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => break 'accept,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        if unrecovered {
            tracing::info!(listener = name, "accept works again");
            unrecovered = false;
        }
        backoff = BACKOFF_MIN;
        stats.accepted.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        let conn = serve_conn(
            io,
            app.clone(),
            limits,
            stats.clone(),
            shutdown.clone(),
            permit,
        );
        conns.spawn(conn);
        // Reap finished connection tasks so the set holds only open ones.
        while conns.try_join_next().is_some() {}
    }
    // New connections are refused from now on; those open finish their requests.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Milliseconds since a process-wide epoch, plus one (so 0 can mean "unset").
fn now_ms() -> u64 {
    epoch_ms(Instant::now())
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn epoch_ms(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

fn instant_of(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms.saturating_sub(1))
}

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
    Stall,
}

/// The state of one connection, shared by its I/O wrapper, its request and answer bodies
/// and its watchdog. Times are [`now_ms`] values; 0 means unset.
#[derive(Default)]
struct ConnState {
    /// Requests in progress (head parsed, answer not yet fully handed to the socket).
    busy: AtomicU32,
    /// When the connection last became idle (accepted, or an answer finished).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived while idle.
    head_since: AtomicU64,
    /// When a write first found the client not reading (cleared by a write).
    write_stall: AtomicU64,
    /// When the request body first had nothing for the handler (cleared by a frame).
    read_stall: AtomicU64,
    /// Wakes the watchdog when a deadline may have moved earlier.
    changed: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        let now = now_ms();
        let s = ConnState::default();
        s.idle_since.store(now, Relaxed);
        // A new connection is taken to be sending its first request: the header timeout
        // runs from the accept.
        s.head_since.store(now, Relaxed);
        s
    }

    fn begin_request(&self) {
        self.busy.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
    }

    fn end_request(&self) {
        if self.busy.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(now_ms(), Relaxed);
            self.changed.notify_one();
        }
    }

    fn mark(stall: &AtomicU64, changed: &Notify) {
        if stall.load(Relaxed) == 0 {
            stall.store(now_ms(), Relaxed);
            changed.notify_one();
        }
    }

    /// The next deadline and what it is for; `None` while the daemon is working on a
    /// request without waiting for the client.
    fn deadline(&self, l: &Limits) -> Option<(u64, Expired)> {
        let ms = |d: Duration| d.as_millis() as u64;
        let busy = self.busy.load(Relaxed) > 0;
        // A client not reading stalls the connection whether or not the answer's body is
        // still with the handler (hyper may hold all of it in its buffer); a request body
        // not coming stalls it only while the handler waits for it.
        let write = self.write_stall.load(Relaxed);
        let read = if busy {
            self.read_stall.load(Relaxed)
        } else {
            0
        };
        if let Some(t) = [write, read].into_iter().filter(|&t| t != 0).min() {
            return Some((t + ms(l.idle_timeout), Expired::Stall));
        }
        if busy {
            return None;
        }
        let head = self.head_since.load(Relaxed);
        Some(if head != 0 {
            (head + ms(l.header_timeout), Expired::Header)
        } else {
            (
                self.idle_since.load(Relaxed) + ms(l.idle_timeout),
                Expired::Idle,
            )
        })
    }

    /// Resolves when a deadline of the connection has passed.
    async fn expired(&self, l: Limits) -> Expired {
        loop {
            let changed = self.changed.notified();
            match self.deadline(&l) {
                Some((at, why)) => {
                    if now_ms() >= at {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(instant_of(at)) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Serves one connection until it ends, a deadline passes (then it is dropped: closed at
/// once) or the daemon shuts down (then it finishes its request in progress).
async fn serve_conn<I>(
    io: I,
    app: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    mut shutdown: watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Declared first, dropped last: after the connection's socket is closed.
    let _open = OpenConn {
        stats: &stats,
        _permit: permit,
    };
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let svc = ConnService {
        app,
        state: state.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The timeouts are ours (above): hyper's own header timeout would also end idle
    // kept-alive connections after the header timeout.
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let watchdog = state.expired(limits);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            why = &mut watchdog => {
                let counter = match why {
                    Expired::Header => &stats.header_timeouts,
                    Expired::Idle => &stats.idle_timeouts,
                    Expired::Stall => &stats.stall_timeouts,
                };
                counter.fetch_add(1, Relaxed);
                tracing::debug!(?why, "connection closed by its timeout");
                break;
            }
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One open connection: holds its slot and is counted in [`ListenerStats::open`] until
/// dropped (also if its task panics); then wakes listeners backing off after `EMFILE`.
struct OpenConn<'a> {
    stats: &'a ListenerStats,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for OpenConn<'_> {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Relaxed);
        closed_any().notify_waiters();
    }
}

/// The connection's I/O, noting for the watchdog when the first byte of a request head
/// arrives and when the client stops reading.
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let s = &self.state;
            if s.busy.load(Relaxed) == 0 && s.head_since.load(Relaxed) == 0 {
                ConnState::mark(&s.head_since, &s.changed);
            }
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    fn note_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => ConnState::mark(&self.state.write_stall, &self.state.changed),
            Poll::Ready(Ok(n)) if *n > 0 => self.state.write_stall.store(0, Relaxed),
            Poll::Ready(_) => {}
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as the connection's hyper service, marking each request's span.
#[derive(Clone)]
struct ConnService {
    app: Router,
    state: Arc<ConnState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<Answer>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.state.begin_request();
        let busy = Busy(self.state.clone());
        let state = self.state.clone();
        let req = req.map(|b| {
            axum::body::Body::new(RequestBody {
                inner: b,
                state: state.clone(),
            })
        });
        let mut app = self.app.clone();
        Box::pin(async move {
            let resp = tower_service::Service::call(&mut app, req).await?;
            Ok(resp.map(|inner| Answer { inner, _busy: busy }))
        })
    }
}

/// Ends the request's busy span when dropped (with its answer, or with the request's
/// future if the connection ends first).
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// An answer's body; the request counts as in progress until hyper drops it.
struct Answer {
    inner: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request's body, noting for the watchdog when the handler waits for the client.
struct RequestBody {
    inner: Incoming,
    state: Arc<ConnState>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Pending => ConnState::mark(&self.state.read_stall, &self.state.changed),
            Poll::Ready(_) => self.state.read_stall.store(0, Relaxed),
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.state.read_stall.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
        }
    }

    /// The deadline follows the connection's phase: header timeout from the accept, idle
    /// timeout between requests, header timeout from a next request's first byte, none
    /// while the daemon works, the idle timeout from a stall.
    #[test]
    fn deadlines_follow_the_phase() {
        let l = limits();
        let s = ConnState::new();
        let (at, why) = s.deadline(&l).unwrap();
        assert_eq!(why, Expired::Header);
        assert_eq!(at, s.head_since.load(Relaxed) + 2000);
        s.begin_request();
        assert_eq!(s.deadline(&l), None);
        ConnState::mark(&s.write_stall, &s.changed);
        let (at, why) = s.deadline(&l).unwrap();
        assert_eq!(why, Expired::Stall);
        assert_eq!(at, s.write_stall.load(Relaxed) + 5000);
        s.write_stall.store(0, Relaxed);
        s.end_request();
        let (at, why) = s.deadline(&l).unwrap();
        assert_eq!(why, Expired::Idle);
        assert_eq!(at, s.idle_since.load(Relaxed) + 5000);
        ConnState::mark(&s.head_since, &s.changed);
        assert_eq!(s.deadline(&l).unwrap().1, Expired::Header);
        // An answer the client does not read stalls the connection also once hyper holds
        // all of it (the request is over for the service).
        ConnState::mark(&s.write_stall, &s.changed);
        assert_eq!(s.deadline(&l).unwrap().1, Expired::Stall);
        // A request body is waited for only while a request is in progress.
        s.write_stall.store(0, Relaxed);
        ConnState::mark(&s.read_stall, &s.changed);
        assert_eq!(s.deadline(&l).unwrap().1, Expired::Header);
    }

    #[test]
    fn accept_errors_are_classified() {
        let e = |x: rustix::io::Errno| io::Error::from_raw_os_error(x.raw_os_error());
        assert!(per_connection_error(&e(rustix::io::Errno::CONNABORTED)));
        assert!(!per_connection_error(&e(rustix::io::Errno::MFILE)));
        assert!(!per_connection_error(&e(rustix::io::Errno::NFILE)));
        assert!(!per_connection_error(&e(rustix::io::Errno::NOBUFS)));
    }
}
