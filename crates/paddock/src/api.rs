//! The HTTP/JSON API of the daemon (axum), and its OpenAPI documentation: every route is
//! registered through utoipa-axum's [`OpenApiRouter`] from a handler annotated with
//! `#[utoipa::path]`, so a route cannot exist without its entry in the document
//! ([`crate::openapi`]).
//!
//! Every error is `{"error": "<message>"}` with a status that says whose fault it was:
//! 400 bad input — the request breaks the OpenAPI document; the message names the field;
//! nothing changed —, 401 missing/wrong token (TCP only), 404 unknown sandbox, 409
//! duplicate ID or wrong state, 422 a create the document allows but this node cannot carry
//! out (a program that cannot be started, a stdio file it will not open, a named network
//! namespace that does not exist, a limit whose controller is missing), 429 an admission
//! limit, 500/503 the daemon's own failures.

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
use futures_util::Stream;
use paddock_supervisor::{
    Error as SupError, LifecycleId, MAX_DURATION, SandboxId, SandboxInfo, SandboxSpec,
    SandboxStats, State as SbState, StdioTarget, StopReport, Supervisor, cgroup_name,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, watch};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::Metrics;
use crate::openapi::CreateRequest;

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

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong: the field, file or limit, and what the caller can do.
    pub error: String,
}

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(pattern = "^(ok|ready)$")]
    pub status: &'static str,
}

/// The data of a `lagged` event: this stream fell behind and missed events.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lagged {
    /// How many events were missed.
    pub missed: u64,
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
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
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

/// Every route with its documentation: `/v1/...`, `/metrics`, `/healthz`, `/readyz`.
/// Routes are only ever added here, through `routes!` of `#[utoipa::path]` handlers.
pub fn api_router() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(list, create))
        .routes(routes!(get_one, delete))
        .routes(routes!(stop))
        .routes(routes!(kill))
        .routes(routes!(wait))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(stats))
        .routes(routes!(logs))
        .routes(routes!(events))
        .routes(routes!(openapi))
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The router: [`api_router`]'s routes, JSON 404 and 405 answers for everything else.
pub fn router(state: Shared) -> Router {
    let (routes, _) = api_router().split_for_parts();
    routes
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

/// The `id` of a path or query: a 400 naming the parameter when it is not a valid ID.
fn parse_id(id: &str) -> ApiResult<SandboxId> {
    SandboxId::new(id).map_err(|e| {
        ApiError::bad(match e {
            SupError::InvalidSpec(why) => format!("id: {why}"),
            e => format!("id: {e}"),
        })
    })
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

/// Turns every number written with a fraction or an exponent whose value is a whole number
/// that fits an `i64` or a `u64` (`5.0`, `1e3`) into that integer, as JSON Schema counts
/// them integers (`serde` would refuse them where an integer is expected).
fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
            {
                // `as` saturates; a round trip tells a value that fits.
                if f >= 0.0 && f < u64::MAX as f64 && (f as u64) as f64 == f {
                    *n = (f as u64).into();
                } else if f < 0.0 && f >= i64::MIN as f64 && (f as i64) as f64 == f {
                    *n = (f as i64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(m) => m.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
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
    integral_floats_to_integers(&mut v);
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

/// Create and start a sandbox.
///
/// The body is a SandboxSpec (unknown fields and duplicate keys are refused) plus an
/// optional `"start": true`: the daemon starts everything it creates (`false` is a 400).
/// Without `stdio`, stdout and stderr go to the sandbox's log file (GET .../logs). A
/// `file` target is opened by the daemon, as root, before anything is created. Bodies
/// above 65536 bytes are refused.
#[utoipa::path(
    post,
    path = "/v1/sandboxes",
    operation_id = "create_sandbox",
    request_body(content = CreateRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Started: the sandbox as it is now", body = SandboxInfo),
        (status = 400, description = "The body breaks this document: malformed JSON, an unknown field, a duplicate key, an invalid or out-of-range value, an oversized body, or a query parameter (none is taken); the message names the field; nothing changed", body = ErrorBody),
        (status = 409, description = "A sandbox with this ID is creating or running; nothing started", body = ErrorBody),
        (status = 422, description = "Valid, but this node cannot carry it out: the program cannot be started, a stdio file target is one the daemon will not open (not a regular file, a symbolic link, outside --stdio-dir, a missing directory on the way), the named network namespace does not exist, a limit needs a controller the node lacks, or the jail names what the node lacks (a user or group, the rootfs, a bind source, a device), asks for a dynamic user without --uid-range, or for an id of that range; the message names the field; nothing left behind", body = ErrorBody),
        (status = 429, description = "An admission limit (max-sandboxes or max-starting) was reached; the message names it", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
        (status = 503, description = "The durable store refused the record, opening a stdio file or the jail's files did not finish in time (a hung file system), or every uid of the dynamic range is held; nothing created", body = ErrorBody),
    ),
)]
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
    // The spec passed `validate` in `parse_create`: what `start` refuses now is what this
    // node cannot do (a stdio file, a network namespace, a controller), not a bad request.
    let started = st.sup.start(spec).await.map_err(|e| match e {
        SupError::InvalidSpec(why) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: why,
        },
        e @ SupError::Cgroup(paddock_supervisor::CgroupError::ControllerUnavailable { .. }) => {
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.to_string(),
            }
        }
        e => e.into(),
    })?;
    tracing::info!(sandbox = %started.info.id, lifecycle = %started.info.lifecycle, pid = ?started.info.pid, "sandbox created through the API");
    Ok((StatusCode::CREATED, axum::Json(started.info)).into_response())
}

/// List every known lifecycle.
///
/// The current ones, and older ones still stopping or quarantined.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    operation_id = "list_sandboxes",
    responses(
        (status = 200, description = "The sandboxes", body = Vec<SandboxInfo>),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
    ),
)]
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

/// Get a sandbox.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}",
    operation_id = "get_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxInfo),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
    ),
)]
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
            .map(|t| parse_api_duration(t).map_err(|why| ApiError::bad(format!("timeout: {why}"))))
            .transpose()
    }
}

/// The units of an API duration, each with its length in seconds.
const DURATION_UNITS: [(&str, f64); 5] = [
    ("ms", 0.001),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
];

/// The largest number [`parse_api_duration`] takes with `unit`: [`MAX_DURATION`] in it.
fn duration_bound(unit: &str) -> u64 {
    let s = MAX_DURATION.as_secs();
    match unit {
        "ms" => s * 1000,
        "m" | "min" => s / 60,
        "h" => s / 3600,
        _ => s,
    }
}

/// Parses a `?timeout=` value: a decimal number (`10`, `1.5`, `.5`, `5.`; digits and at
/// most one point, no sign, no exponent, no spaces), then an optional unit (`ms`, `s`,
/// `m` or `min`, `h`; seconds without one), at most 365 days ([`MAX_DURATION`]). The
/// bound is checked on the decimal text, so exactly the strings matching
/// [`duration_pattern`] are accepted. The error says why, with examples.
pub fn parse_api_duration(s: &str) -> Result<Duration, String> {
    let err = |why: &str| format!("duration {s:?}: {why} (examples: 10s, 500ms, 2m, 1.5h)");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.bytes().filter(|&b| b == b'.').count() > 1 || num == "." {
        return Err(err("not a non-negative decimal number"));
    }
    let Some(&(_, secs_per_unit)) = DURATION_UNITS
        .iter()
        .find(|(u, _)| *u == unit || (unit.is_empty() && *u == "s"))
    else {
        return Err(err("unknown unit (ms, s, m, min, h)"));
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int = int.trim_start_matches('0');
    let bound = duration_bound(unit).to_string();
    let within = match int.len().cmp(&bound.len()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => {
            int < bound.as_str() || (int == bound && frac.bytes().all(|b| b == b'0'))
        }
    };
    if !within {
        return Err(err("out of range (at most 365 days)"));
    }
    let v: f64 = num.parse().map_err(|_| err("not a number"))?;
    Ok(Duration::from_secs_f64(
        (v * secs_per_unit).min(MAX_DURATION.as_secs_f64()),
    ))
}

/// A regular expression (ECMA-262) of the decimal numbers `[0-9]+(\.[0-9]*)?|\.[0-9]+`
/// whose value is at most `n`.
fn at_most_pattern(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let frac = r"(?:\.[0-9]*)?";
    // Positive integers without a leading zero below n: fewer digits, or k digits with a
    // smaller digit after a common prefix.
    let mut below = Vec::new();
    if k >= 2 {
        below.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    for (i, &d) in digits.iter().enumerate() {
        let lo = u8::from(i == 0);
        if d > lo {
            let prefix: String = digits[..i].iter().map(|x| char::from(b'0' + x)).collect();
            let class = if d - 1 == lo {
                lo.to_string()
            } else {
                format!("[{lo}-{}]", d - 1)
            };
            let rest = k - 1 - i;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            below.push(format!("{prefix}{class}{tail}"));
        }
    }
    let mut alts = vec![format!(r"0+{frac}"), r"\.[0-9]+".to_owned()];
    if !below.is_empty() {
        alts.push(format!("0*(?:{}){frac}", below.join("|")));
    }
    alts.push(format!(r"0*{n}(?:\.0*)?"));
    alts.join("|")
}

/// The regular expression of exactly the strings [`parse_api_duration`] accepts.
pub fn duration_pattern() -> String {
    let mut by_unit: Vec<(u64, Vec<&str>)> = Vec::new();
    for (u, _) in DURATION_UNITS {
        let b = duration_bound(u);
        match by_unit.iter_mut().find(|(x, _)| *x == b) {
            Some((_, us)) => us.push(u),
            None => by_unit.push((b, vec![u])),
        }
    }
    let alts: Vec<String> = by_unit
        .iter()
        .map(|(b, units)| {
            let units: Vec<&str> = units
                .iter()
                .map(|u| if *u == "s" { "s?" } else { u })
                .collect();
            format!("(?:{})(?:{})", at_most_pattern(*b), units.join("|"))
        })
        .collect();
    format!("^(?:{})$", alts.join("|"))
}

/// A `?timeout=` duration, as the OpenAPI document describes it.
pub struct ApiDuration;

impl utoipa::PartialSchema for ApiDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration: a decimal number (digits, at most one `.`; no sign, exponent or space), then a unit — `ms`, `s`, `m` or `min`, `h` — or none for seconds; at most 365 days. Examples: `10s`, `500ms`, `2m`, `1.5h`, `0`",
            ))
            .pattern(Some(duration_pattern()))
            .examples(["10s", "500ms"])
            .into()
    }
}

impl ToSchema for ApiDuration {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Duration")
    }
}

/// Stop gracefully and answer with the stop's report.
///
/// The stop signal to every process, the grace period, the kill, the removal.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/stop",
    operation_id = "stop_sandbox",
    params(
        ("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one"),
        ("timeout" = Option<ApiDuration>, Query, description = "A grace period replacing the spec's"),
    ),
    responses(
        (status = 200, description = "The stop's report (also for a sandbox that had already stopped)", body = StopReport),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Still being created: not stoppable yet", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
    ),
)]
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

/// Kill at once (no grace period) and answer with the stop's report.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/kill",
    operation_id = "kill_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "The stop's report (also for a sandbox that had already stopped)", body = StopReport),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Still being created: not stoppable yet", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
    ),
)]
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

/// Wait until the lifecycle has ended, or the timeout passed.
///
/// An ended lifecycle (stopped, failed or quarantined) has its stop report and main exit in
/// the answer; after the timeout the answer shows it still live. The lifecycle is pinned
/// when the request arrives: a start of the same ID meanwhile is not waited for instead.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/wait",
    operation_id = "wait_sandbox",
    params(
        ("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one"),
        ("timeout" = Option<ApiDuration>, Query, description = "Answer after this long at the latest; default: when the lifecycle ends"),
    ),
    responses(
        (status = 200, description = "The sandbox", body = SandboxInfo),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 503, description = "The daemon is shutting down; wait again once it is back", body = ErrorBody),
    ),
)]
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

/// Freeze a running sandbox.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/pause",
    operation_id = "pause_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "The sandbox, paused", body = SandboxInfo),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
    ),
)]
async fn pause(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    set_paused(st, id, q, true).await
}

/// Thaw a paused sandbox.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/resume",
    operation_id = "resume_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "The sandbox, running", body = SandboxInfo),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
    ),
)]
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

/// Forget a stopped or failed sandbox and delete its log.
///
/// With `lifecycle`, only that lifecycle: a stale handle never forgets a newer one (404).
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}",
    operation_id = "delete_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Still live: stop it first", body = ErrorBody),
    ),
)]
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

/// Resource usage of a live sandbox.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/stats",
    operation_id = "sandbox_stats",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "Usage", body = SandboxStats),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 409, description = "Not live: no cgroup to read", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
    ),
)]
async fn stats(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let lc = parse_lc(q.lifecycle.as_deref())?;
    match st.sup.stats(&id, lc) {
        Ok(s) => Ok(axum::Json(s).into_response()),
        // A stop that removed the cgroup between the state check and the read: the sandbox
        // is no longer live, as a read a moment later would have said.
        Err(e @ SupError::Cgroup(_)) => match lc
            .map_or_else(|| st.sup.get(&id), |lc| st.sup.get_lifecycle(&id, lc))
            .map(|i| i.state)
        {
            Some(state) if state != SbState::Running => Err(SupError::InvalidState {
                id,
                state,
                op: "read stats",
            }
            .into()),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The sandbox's stdout and stderr: the last 4 MiB of its log file.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/logs",
    operation_id = "sandbox_logs",
    params(("id" = SandboxId, Path, description = "The sandbox ID"), ("lifecycle" = Option<LifecycleId>, Query, description = "A specific lifecycle of the ID; default its current one")),
    responses(
        (status = 200, description = "The log's text (empty when nothing was written)", body = String, content_type = "text/plain"),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8) or lifecycle, or an unknown query parameter; the message names it", body = ErrorBody),
        (status = 404, description = "No such sandbox (or lifecycle)", body = ErrorBody),
        (status = 500, description = "The log file could not be read; the message names it", body = ErrorBody),
    ),
)]
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

/// Lifecycle events, as server-sent events.
///
/// Each has `event:` the type and `data:` an Event (a `lagged` event's data says how many
/// this stream missed). The stream ends when the daemon shuts down.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    params(("id" = Option<SandboxId>, Query, description = "Only this sandbox's events")),
    responses(
        (status = 200, description = "The event stream", body = crate::openapi::EventStreamItem, content_type = "text/event-stream"),
        (status = 400, description = "An invalid ID, or an unknown query parameter", body = ErrorBody),
    ),
)]
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
                        let data = serde_json::to_string(&Lagged { missed: n }).unwrap_or_default();
                        let sse = SseEvent::default().event("lagged").data(data);
                        return Some((Ok(sse), (rx, shutdown, filter)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
    ),
)]
async fn openapi(_q: NoParams) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_string(),
    )
        .into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "application/openmetrics-text"),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
    ),
)]
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

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    responses(
        (status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = StatusBody),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
    ),
)]
async fn healthz(_q: NoParams) -> axum::Json<StatusBody> {
    axum::Json(StatusBody { status: "ok" })
}

/// Readiness: the first reconciliation after start has finished.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = StatusBody),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
        (status = 503, description = "Still recovering, or the child reaper cannot start or has died (the message says which)", body = ErrorBody),
    ),
)]
async fn readyz(State(st): State<Shared>, _q: NoParams) -> Response {
    match readiness(
        st.ready.load(Ordering::Relaxed),
        &paddock_supervisor::reaper_health(),
    ) {
        Ok(()) => axum::Json(StatusBody { status: "ready" }).into_response(),
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

    #[test]
    fn api_durations() {
        for (s, want) in [
            ("10s", Duration::from_secs(10)),
            ("10", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1.5h", Duration::from_secs(5400)),
            (".5", Duration::from_millis(500)),
            ("5.", Duration::from_secs(5)),
            ("0", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
            ("8760h", MAX_DURATION),
            ("8760.000h", MAX_DURATION),
            ("525600m", MAX_DURATION),
            ("31536000", MAX_DURATION),
            ("31536000000ms", MAX_DURATION),
        ] {
            assert_eq!(parse_api_duration(s), Ok(want), "{s}");
        }
        for s in [
            "",
            ".",
            "s",
            "-1s",
            "+1s",
            " 1s",
            "1s ",
            "1e3",
            "inf",
            "NaN",
            "1.2.3",
            "1x",
            "1 s",
            "8761h",
            "8760.0001h",
            "31536001",
            "31536000001ms",
            "525601m",
        ] {
            let e = parse_api_duration(s).unwrap_err();
            assert!(e.contains("duration") && e.contains("examples"), "{s}: {e}");
        }
        assert!(
            parse_api_duration("8761h")
                .unwrap_err()
                .contains("365 days")
        );
    }

    fn duration_validator() -> jsonschema::Validator {
        jsonschema::draft202012::new(&serde_json::json!({
            "type": "string", "pattern": duration_pattern()
        }))
        .unwrap()
    }

    /// The document's pattern for `?timeout=` matches exactly what the parser accepts, at
    /// the bounds and around them.
    #[test]
    fn duration_pattern_is_the_parser() {
        let v = duration_validator();
        let mut cases: Vec<String> = Vec::new();
        for unit in ["", "s", "ms", "m", "min", "h", "x", "sec", "hh"] {
            let b = duration_bound(if unit.is_empty() { "s" } else { unit });
            for n in [
                "0".to_owned(),
                "00".into(),
                ".0".into(),
                "0.".into(),
                "1".into(),
                (b - 1).to_string(),
                format!("{}.999999999999999999", b - 1),
                b.to_string(),
                format!("0{b}"),
                format!("{b}."),
                format!("{b}.0000"),
                format!("{b}.0001"),
                format!("{b}.0000000000000000000001"),
                (b + 1).to_string(),
                (b * 10).to_string(),
                format!("1{}", "0".repeat(40)),
            ] {
                cases.push(format!("{n}{unit}"));
            }
        }
        for s in &cases {
            let json = Value::String(s.clone());
            assert_eq!(
                v.is_valid(&json),
                parse_api_duration(s).is_ok(),
                "{s:?}: the pattern and the parser disagree"
            );
        }
        // Both accept and refuse something.
        assert!(cases.iter().any(|s| parse_api_duration(s).is_ok()));
        assert!(cases.iter().any(|s| parse_api_duration(s).is_err()));
    }

    #[test]
    fn integral_floats_are_integers() {
        let mut v = serde_json::json!({
            "a": 5.0, "b": [1e3, -2.0, 1.5], "c": {"d": 18446744073709551615.0, "e": 7}
        });
        integral_floats_to_integers(&mut v);
        assert_eq!(v["a"], serde_json::json!(5));
        assert!(v["a"].is_u64());
        assert_eq!(v["b"], serde_json::json!([1000, -2, 1.5]));
        // 2^64 does not fit a u64: it stays a float (and a u64 field refuses it).
        assert!(v["c"]["d"].is_f64());
        assert_eq!(v["c"]["e"], serde_json::json!(7));
        let spec = parse_create(
            br#"{"id":"f","command":"/bin/true","limits":{"pids_max":64.0},"stop":{"signal":9.0}}"#,
        )
        .unwrap();
        assert_eq!(spec.limits.pids_max, Some(64));
        assert_eq!(spec.stop.signal, 9);
        let e = parse_create(br#"{"id":"f","command":"/bin/true","limits":{"pids_max":6.5}}"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    proptest::proptest! {
        /// Random strings: the pattern and the parser agree.
        #[test]
        fn duration_pattern_agrees_on_random_strings(s in "[0-9.]{0,14}(ms|s|m|min|h|x)?") {
            let v = duration_validator();
            proptest::prop_assert_eq!(
                v.is_valid(&Value::String(s.clone())),
                parse_api_duration(&s).is_ok(),
                "{:?}", s
            );
        }

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
