//! The HTTP/JSON API of the daemon (axum).
//!
//! Every error is `{"error": "<message>"}` with a status that says whose fault it was:
//! 400 bad input (nothing changed), 401 missing/wrong token (TCP only), 404 unknown
//! sandbox, 409 duplicate ID or wrong state, 422 the program could not be started,
//! 429 an admission limit, 500/503 the daemon's own failures.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use paddock_supervisor::{
    Error as SupError, LifecycleId, SandboxId, SandboxInfo, SandboxSpec, StdioTarget, Supervisor,
    cgroup_name, parse_duration,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::metrics::Metrics;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest log returned by the logs endpoint (the tail of the file), in bytes.
pub const MAX_LOG: u64 = 4 * 1024 * 1024;

/// Everything the handlers share.
pub struct AppState {
    /// The supervisor.
    pub sup: Supervisor,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `--max-sandboxes`.
    pub max_sandboxes: Option<usize>,
    /// `--max-starting`.
    pub max_starting: Option<usize>,
    /// Permits for concurrent starts.
    pub starting: Semaphore,
    /// Creates admitted and not yet finished.
    pub inflight: Mutex<usize>,
    /// Set once the first reconciliation is done.
    pub ready: AtomicBool,
    /// The sandboxes' log directory.
    pub log_dir: PathBuf,
    /// Becomes `true` when the daemon shuts down (ends event streams).
    pub shutdown: watch::Receiver<bool>,
}

/// An API error: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// A 400.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: msg.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<SupError> for ApiError {
    fn from(e: SupError) -> Self {
        let status = match &e {
            SupError::InvalidSpec(_) => StatusCode::BAD_REQUEST,
            SupError::AlreadyExists(_) => StatusCode::CONFLICT,
            SupError::NotFound { .. } => StatusCode::NOT_FOUND,
            SupError::InvalidState { .. } => StatusCode::CONFLICT,
            SupError::Spawn { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            SupError::Journal { .. } | SupError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SupError::Cgroup(paddock_supervisor::CgroupError::ControllerUnavailable { .. }) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad(format!("query string: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError {
            status: e.status(),
            message: format!("path: {}", e.body_text()),
        }
    }
}

/// The `{id}` of a per-sandbox path. A segment that cannot be decoded (percent-encoding of
/// bytes that are not UTF-8) is refused like every other error, as JSON.
pub struct IdPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(IdPath(id))
    }
}

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

/// The router: `/v1/...`, `/metrics`, `/healthz`, `/readyz`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/sandboxes", get(list).post(create))
        .route("/v1/sandboxes/{id}", get(get_one).delete(delete))
        .route("/v1/sandboxes/{id}/stop", post(stop))
        .route("/v1/sandboxes/{id}/kill", post(kill))
        .route("/v1/sandboxes/{id}/wait", get(wait))
        .route("/v1/sandboxes/{id}/pause", post(pause))
        .route("/v1/sandboxes/{id}/resume", post(resume))
        .route("/v1/sandboxes/{id}/stats", get(stats))
        .route("/v1/sandboxes/{id}/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The credentials of an `Authorization: Bearer <token>` header value: the scheme is
/// case-insensitive and followed by one or more spaces (RFC 7235); `None` for another
/// scheme or no credentials.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let sp = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(sp);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// Requires `Authorization: Bearer <token>` (scheme in any case; the token compared in
/// constant time).
pub async fn require_token(
    State(token): State<Arc<Vec<u8>>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .is_some_and(|given| constant_time_eq(given, &token));
    if !ok {
        return ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token".into(),
        }
        .into_response();
    }
    next.run(req).await
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed on this endpoint".into(),
    }
}

fn parse_id(id: &str) -> ApiResult<SandboxId> {
    SandboxId::new(id).map_err(|e| ApiError::bad(e.to_string()))
}

fn parse_lc(lc: Option<&str>) -> ApiResult<Option<LifecycleId>> {
    lc.map(|s| {
        LifecycleId::parse(s)
            .ok_or_else(|| ApiError::bad(format!("lifecycle {s:?} is not 16 hex digits")))
    })
    .transpose()
}

/// The query of endpoints that take no parameters: any parameter is a 400 naming it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Extracts [`NoQuery`]: refuses any query parameter with a 400 that names it.
pub struct NoParams;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoParams {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Query(NoQuery {}) = Query::<NoQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad(format!(
                    "query string: {} (this endpoint takes no query parameters)",
                    e.body_text()
                ))
            })?;
        Ok(NoParams)
    }
}

/// `?lifecycle=` on the per-sandbox endpoints.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LcQuery {
    lifecycle: Option<String>,
}

/// Decodes JSON into a [`Value`] like `serde_json::from_slice`, except that an object with
/// the same key twice is an error (`serde_json` keeps the last one silently, so a body
/// could say one thing to a proxy that reads the first and another to the daemon).
pub fn strict_json(body: &[u8]) -> serde_json::Result<Value> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    struct Strict;
    impl<'de> DeserializeSeed<'de> for Strict {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("a number that is not finite"))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = seq.next_element_seed(Strict)? {
                v.push(x);
            }
            Ok(Value::Array(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut m = serde_json::Map::new();
            while let Some(k) = map.next_key::<String>()? {
                if m.contains_key(&k) {
                    return Err(A::Error::custom(format!("duplicate key {k:?}")));
                }
                let v = map.next_value_seed(Strict)?;
                m.insert(k, v);
            }
            Ok(Value::Object(m))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parses a create body: a `SandboxSpec` plus an optional `"start": true`. Duplicate keys
/// (in any object) are refused.
pub fn parse_create(body: &[u8]) -> ApiResult<SandboxSpec> {
    let mut v: Value =
        strict_json(body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::bad(
            "request body must be a JSON object (a SandboxSpec)",
        ));
    };
    match obj.remove("start") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(ApiError::bad(
                "\"start\": false is not supported: the daemon starts every sandbox it creates",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad(format!(
                "\"start\" must be a boolean, not {other}"
            )));
        }
    }
    let stdio_given = obj.contains_key("stdio");
    let mut spec: SandboxSpec = serde_json::from_value(v)
        .map_err(|e| ApiError::bad(format!("invalid sandbox spec: {e}")))?;
    if !stdio_given {
        spec.stdio.stdin = StdioTarget::Null;
        spec.stdio.stdout = StdioTarget::Log;
        spec.stdio.stderr = StdioTarget::Log;
    }
    for (name, t) in [
        ("stdin", &spec.stdio.stdin),
        ("stdout", &spec.stdio.stdout),
        ("stderr", &spec.stdio.stderr),
    ] {
        match t {
            StdioTarget::Inherit | StdioTarget::Pipe => {
                return Err(ApiError::bad(format!(
                    "stdio.{name}: {t:?} is not available through the daemon (use \"log\", \"null\" or a file)"
                )));
            }
            StdioTarget::Log if name == "stdin" => {
                return Err(ApiError::bad("stdio.stdin: \"log\" is an output target"));
            }
            _ => {}
        }
    }
    spec.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(spec)
}

struct Inflight<'a>(&'a Mutex<usize>);
impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap() -= 1;
    }
}

async fn create(State(st): State<Shared>, _q: NoParams, body: Body) -> ApiResult<Response> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::bad(format!(
            "request body is larger than {MAX_BODY} bytes (or could not be read)"
        ))
    })?;
    let spec = parse_create(&bytes)?;
    // A duplicate is a 409 whatever the admission limits say: it would start nothing. The
    // supervisor checks again atomically (a start of the same ID racing this one).
    if st.sup.get(&spec.id).is_some_and(|i| i.state.holds_id()) {
        st.sup
            .counters()
            .starts_conflict
            .fetch_add(1, Ordering::Relaxed);
        return Err(SupError::AlreadyExists(spec.id.clone()).into());
    }
    // Admission: concurrent starts first (cheap), then live sandboxes.
    let _permit = match st.starting.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            st.metrics.admission_rejected("max_starting");
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "limit max-starting reached: {} sandbox start(s) already in progress; retry later",
                    st.max_starting.unwrap_or(0)
                ),
            });
        }
    };
    let _inflight = {
        let mut n = st.inflight.lock().unwrap();
        if let Some(max) = st.max_sandboxes {
            let live = st.sup.live();
            if live + *n >= max {
                st.metrics.admission_rejected("max_sandboxes");
                return Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "limit max-sandboxes reached: {} live sandbox(es) of at most {max}; stop or delete one first",
                        live + *n
                    ),
                });
            }
        }
        *n += 1;
        Inflight(&st.inflight)
    };
    let started = st.sup.start(spec).await?;
    tracing::info!(sandbox = %started.info.id, lifecycle = %started.info.lifecycle, pid = ?started.info.pid, "sandbox created through the API");
    Ok((StatusCode::CREATED, axum::Json(started.info)).into_response())
}

async fn list(State(st): State<Shared>, _q: NoParams) -> axum::Json<Vec<SandboxInfo>> {
    axum::Json(st.sup.list())
}

fn find(st: &AppState, id: &str, q: &LcQuery) -> ApiResult<SandboxInfo> {
    let id = parse_id(id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    let info = match lc {
        Some(lc) => st.sup.get_lifecycle(&id, lc),
        None => st.sup.get(&id),
    };
    info.ok_or_else(|| {
        SupError::NotFound {
            id: id.to_string(),
            lifecycle: lc,
        }
        .into()
    })
}

async fn get_one(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let Query(q) = q?;
    Ok(axum::Json(find(&st, &id, &q)?))
}

/// `?timeout=10s&lifecycle=...` of stop (the grace period replacing the spec's, e.g.
/// `10s`, `500ms`, `0`) and of wait (return after this long at the latest; default: no
/// limit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutQuery {
    timeout: Option<String>,
    lifecycle: Option<String>,
}

impl TimeoutQuery {
    fn timeout(&self) -> ApiResult<Option<Duration>> {
        self.timeout
            .as_deref()
            .map(|t| {
                parse_duration(t).map_err(|e| {
                    ApiError::bad(match e {
                        SupError::InvalidSpec(why) => format!("timeout: {why}"),
                        e => format!("timeout: {e}"),
                    })
                })
            })
            .transpose()
    }
}

async fn stop(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<TimeoutQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    let grace = q.timeout()?;
    // Pinned now: the stop logged is the stop done, even if the ID restarts meanwhile.
    let target = pin_lifecycle(&st, &id, lc)?;
    tracing::info!(sandbox = %id, lifecycle = %target, grace = ?grace, "stop requested through the API");
    let report = match grace {
        Some(g) => st.sup.stop_with_grace(&id, Some(target), g).await?,
        None => st.sup.stop(&id, Some(target)).await?,
    };
    Ok(axum::Json(report).into_response())
}

async fn kill(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    let target = pin_lifecycle(&st, &id, lc)?;
    tracing::info!(sandbox = %id, lifecycle = %target, "kill requested through the API");
    Ok(axum::Json(st.sup.kill(&id, Some(target)).await?).into_response())
}

/// The lifecycle a request acts on: the one it names, else the ID's current one now (so
/// what is logged and done is that lifecycle, even if the ID is restarted meanwhile); an
/// unknown ID is a 404.
fn pin_lifecycle(st: &AppState, id: &SandboxId, lc: Option<LifecycleId>) -> ApiResult<LifecycleId> {
    match lc {
        Some(lc) => Ok(lc),
        None => st.sup.get(id).map(|i| i.lifecycle).ok_or_else(|| {
            ApiError::from(SupError::NotFound {
                id: id.to_string(),
                lifecycle: None,
            })
        }),
    }
}

/// Waits until the lifecycle has ended (stopped, failed or quarantined; its stop report and
/// main exit are then in the answer) or `timeout` passed (the answer then shows it still
/// live). The lifecycle is pinned when the request arrives: a start of the same ID meanwhile
/// is not waited for instead.
async fn wait(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<TimeoutQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let Query(q) = q?;
    let timeout = q.timeout()?;
    let info = find(
        &st,
        &id,
        &LcQuery {
            lifecycle: q.lifecycle,
        },
    )?;
    let (id, lc) = (info.id, info.lifecycle);
    let mut shutdown = st.shutdown.clone();
    tokio::select! {
        r = st.sup.wait_stopped(&id, Some(lc)) => { r?; }
        () = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        } => {}
        // In-flight requests hold the daemon's graceful shutdown: do not hold it forever.
        _ = shutdown.wait_for(|stopping| *stopping) => {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("the daemon is shutting down; wait for {id} again once it is back"),
            });
        }
    }
    st.sup
        .get_lifecycle(&id, lc)
        .map(axum::Json)
        .ok_or_else(|| {
            SupError::NotFound {
                id: id.to_string(),
                lifecycle: Some(lc),
            }
            .into()
        })
}

async fn pause(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    set_paused(st, id, q, true).await
}

async fn resume(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    set_paused(st, id, q, false).await
}

async fn set_paused(
    st: Shared,
    id: String,
    q: Result<Query<LcQuery>, QueryRejection>,
    pause: bool,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    let info = if pause {
        st.sup.pause(&id, lc).await?
    } else {
        st.sup.resume(&id, lc).await?
    };
    Ok(axum::Json(info))
}

async fn delete(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    // The lifecycle to forget is pinned here (the one named, or the current one now), so a
    // restart of the ID between this read and the forget can never lose the new lifecycle.
    let lc = pin_lifecycle(&st, &id, parse_lc(q.lifecycle.as_deref())?)?;
    st.sup.forget_lifecycle(&id, Some(lc))?;
    st.sup.delete_log(&id, lc);
    tracing::info!(sandbox = %id, lifecycle = %lc, "sandbox deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    Ok(axum::Json(st.sup.stats(&id, lc)?).into_response())
}

async fn logs(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let info = find(&st, &id, &q)?;
    // The tail across the rotated files and the active one, on a blocking thread.
    let sup = st.sup.clone();
    let (id, lc) = (info.id.clone(), info.lifecycle);
    let data = tokio::task::spawn_blocking(move || sup.read_log(&id, lc, MAX_LOG))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            let path = st.log_dir.join(format!(
                "{}.log",
                cgroup_name(info.id.as_str(), info.lifecycle)
            ));
            return Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("read log file {}: {e}", path.display()),
            });
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response())
}

/// `?id=` of the event stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    id: Option<String>,
}

async fn events(
    State(st): State<Shared>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = q?;
    let filter = q.id.as_deref().map(parse_id).transpose()?;
    let rx = st.sup.events();
    let shutdown = st.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (rx, shutdown, filter),
        |(mut rx, mut shutdown, filter)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let ev = tokio::select! {
                    r = rx.recv() => r,
                    _ = shutdown.changed() => return None,
                };
                match ev {
                    Ok(ev) => {
                        if filter.as_ref().is_some_and(|f| *f != ev.id) {
                            continue;
                        }
                        let data = serde_json::to_value(&ev).unwrap_or(Value::Null);
                        let name = data
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("event")
                            .to_owned();
                        let sse = SseEvent::default().event(name).data(data.to_string());
                        return Some((Ok(sse), (rx, shutdown, filter)));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let sse = SseEvent::default()
                            .event("lagged")
                            .data(json!({ "missed": n }).to_string());
                        return Some((Ok(sse), (rx, shutdown, filter)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn openapi(_q: NoParams) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_string(),
    )
        .into_response()
}

async fn metrics(State(st): State<Shared>, _q: NoParams) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn healthz(_q: NoParams) -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(st): State<Shared>, _q: NoParams) -> Response {
    match readiness(
        st.ready.load(Ordering::Relaxed),
        &paddock_supervisor::reaper_health(),
    ) {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(message) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
        }
        .into_response(),
    }
}

/// Whether the daemon is ready, given whether its first reconciliation has finished and the
/// child reaper's health; `Err` holds the reason (a reaper that cannot start or has died
/// comes first: no sandbox can start then).
fn readiness(reconciled: bool, reaper: &paddock_supervisor::ReaperHealth) -> Result<(), String> {
    use paddock_supervisor::ReaperHealth;
    match reaper {
        ReaperHealth::Dead { .. } => Err(format!(
            "the child reaper is {reaper}: no sandbox can start; restart the daemon"
        )),
        h if !h.is_healthy() => Err(format!(
            "the child reaper's {reaper}: no sandbox can start until it starts (the next create tries again)"
        )),
        _ if !reconciled => Err("recovering: the first reconciliation has not finished".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod readyz_tests {
    use super::readiness;
    use paddock_supervisor::ReaperHealth;

    /// Ready only with a healthy reaper and the first reconciliation done; a dead or
    /// failed reaper is reported (before recovery) with its reason.
    #[test]
    fn readiness_reports_the_reaper_and_recovery() {
        assert_eq!(readiness(true, &ReaperHealth::Running), Ok(()));
        assert_eq!(readiness(true, &ReaperHealth::NotStarted), Ok(()));
        let e = readiness(false, &ReaperHealth::Running).unwrap_err();
        assert!(e.contains("recovering"), "{e}");
        let dead = ReaperHealth::Dead {
            thread: "paddock-reaper",
            reason: "boom".into(),
        };
        for reconciled in [true, false] {
            let e = readiness(reconciled, &dead).unwrap_err();
            assert!(e.contains("paddock-reaper") && e.contains("boom"), "{e}");
            assert!(e.contains("restart the daemon"), "{e}");
        }
        let failed = ReaperHealth::StartFailed {
            op: "eventfd",
            errno: 24,
        };
        let e = readiness(true, &failed).unwrap_err();
        assert!(e.contains("eventfd") && e.contains("EMFILE"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (h, want) in [
            (&b"Bearer tok"[..], Some(&b"tok"[..])),
            (b"bearer tok", Some(b"tok")),
            (b"BEARER tok", Some(b"tok")),
            (b"bEaReR   tok", Some(b"tok")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Basic tok", None),
            (b"Bearertok", None),
            (b"Bearer\ttok", None),
            (b"", None),
        ] {
            assert_eq!(bearer_token(h), want, "{:?}", String::from_utf8_lossy(h));
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_depth() {
        for body in [
            &br#"{"id":"a","id":"b","command":"/bin/true"}"#[..],
            br#"{"id":"a","command":"/bin/true","env":{"X":"1","X":"2"}}"#,
            br#"{"id":"a","command":"/bin/true","limits":{"pids_max":1,"pids_max":2}}"#,
            br#"{"id":"a","command":"/bin/true","stdio":{"stdout":"log","stdout":"null"}}"#,
            br#"{"id":"a","command":"/bin/true","labels":{"k":"v","k":"v"}}"#,
            br#"{"id":"a","command":"/bin/true","start":true,"start":true}"#,
        ] {
            let e = parse_create(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("duplicate key"), "{}", e.message);
        }
        // Strict decoding is serde_json's otherwise.
        for body in [
            &br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#[..],
            b"[]",
            b"  {}  ",
        ] {
            assert_eq!(
                strict_json(body).unwrap(),
                serde_json::from_slice::<Value>(body).unwrap()
            );
        }
        assert!(strict_json(b"{} x").is_err());
        // serde_json's recursion limit holds: deep nesting is an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = strict_json(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("recursion limit"), "{e}");
        assert!(strict_json(b"{\"a\":1}{}").is_err());
    }

    #[test]
    fn a_bad_id_is_explained_once() {
        let e = parse_create(br#"{"id":"../x","command":"/bin/true"}"#).unwrap_err();
        assert_eq!(
            e.message.matches("invalid sandbox spec").count(),
            1,
            "{}",
            e.message
        );
        assert!(e.message.contains("sandbox ID"), "{}", e.message);
    }

    #[test]
    fn create_bodies() {
        assert!(parse_create(br#"{"id":"a","command":"/bin/true"}"#).is_ok());
        let s = parse_create(br#"{"id":"a","command":"/bin/true","start":true}"#).unwrap();
        assert_eq!(s.stdio.stdout, StdioTarget::Log);
        for (body, want) in [
            (&br#"{"id":"a","#[..], "malformed JSON"),
            (br#"[1]"#, "JSON object"),
            (
                br#"{"id":"a","command":"/bin/true","bogus":1}"#,
                "unknown field `bogus`",
            ),
            (br#"{"id":"../x","command":"/bin/true"}"#, "sandbox ID"),
            (
                br#"{"id":"a","command":"/bin/true","limits":{"cpus":0}}"#,
                "cpus",
            ),
            (
                br#"{"id":"a","command":"/bin/true","start":false}"#,
                "start",
            ),
            (
                br#"{"id":"a","command":"/bin/true","stdio":{"stdout":"inherit"}}"#,
                "stdio.stdout",
            ),
        ] {
            let e = parse_create(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
    }

    proptest::proptest! {
        /// Any bytes: a spec or a 400 with a message, never a panic or another status.
        #[test]
        fn create_decoding_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Err(e) = parse_create(&body) {
                proptest::prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                proptest::prop_assert!(!e.message.is_empty());
            }
        }

        /// Structured bodies with hostile field values: accepted specs are valid, refused
        /// ones are a 400 that names a reason.
        #[test]
        fn create_decoding_of_hostile_fields(
            id in "(\\PC{0,20}|\\.\\.|/|cgroup\\.procs|[a-z]{1,200})",
            cmd in "\\PC{0,10}",
            cpus in proptest::num::f64::ANY,
            mem in proptest::option::of(proptest::num::u64::ANY),
            extra in proptest::option::of("[a-z_]{1,12}"),
        ) {
            let mut v = serde_json::json!({ "id": id, "command": cmd, "limits": { "cpus": cpus, "memory_max": mem } });
            if let Some(k) = extra {
                v[k] = serde_json::json!(1);
            }
            let body = serde_json::to_vec(&v).unwrap_or_default();
            match parse_create(&body) {
                Ok(spec) => proptest::prop_assert!(spec.validate().is_ok()),
                Err(e) => {
                    proptest::prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    proptest::prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}
