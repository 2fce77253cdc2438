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

mod auth;
mod duration;
mod error;
pub mod host;
mod input;
mod node;
mod sandboxes;
mod stream;
#[cfg(test)]
mod tests;
mod update;

pub use auth::require_token;
#[cfg(test)]
use auth::{bearer_token, constant_time_eq};
pub use duration::ApiDuration;
use duration::*;
pub use error::{ApiError, ErrorBody, Lagged, StatusBody};
pub use input::LabelSelectors;
use input::*;
use node::*;
pub use node::{DrainReport, NodeInfo, UndrainReport};
use sandboxes::*;
use stream::*;
use update::*;

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
    /// What admission knows beyond the supervisor: the creates admitted and not yet
    /// finished, the memory they commit, and the drain flag. Every create is admitted, and
    /// a drain begins, under this lock, so a create admitted is one a drain counts.
    pub admission: Mutex<Admission>,
    /// Woken whenever an admitted create finishes (a drain waits for those in flight).
    pub admitted_done: tokio::sync::Notify,
    /// The node's configuration: reserves, memory admission, the drain flag's directory.
    pub node: NodeConfig,
    /// Drains and undrains, one at a time.
    pub node_op: tokio::sync::Mutex<()>,
    /// Set once the first reconciliation is done.
    pub ready: AtomicBool,
    /// The sandboxes' log directory.
    pub log_dir: PathBuf,
    /// The durable store: its event ring and live stream of committed events serve
    /// `/v1/events`.
    pub store: Arc<crate::store::Store>,
    /// Becomes `true` when the daemon shuts down (ends event streams).
    pub shutdown: watch::Receiver<bool>,
}

/// The admission state shared by creates and drains ([`AppState::admission`]).
#[derive(Debug, Default)]
pub struct Admission {
    /// Creates admitted and not yet finished (a drain waits for them; the limits count
    /// their supervisor reservations, [`paddock_supervisor::Supervisor::admitted`]).
    pub inflight: usize,
    /// Whether the node is draining: every create is refused (503).
    pub draining: bool,
    /// When the drain began (milliseconds since the Unix epoch), if known.
    pub draining_since_ms: Option<u64>,
}

/// The node's configuration (`serve` flags).
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// `--reserve-cpus`: CPUs kept from the sandboxes.
    pub reserve_cpus: f64,
    /// `--reserve-memory`: bytes kept from the sandboxes.
    pub reserve_memory: u64,
    /// `--overcommit-memory`: creates are admitted while the committed memory stays within
    /// allocatable × this; `None`: no memory admission.
    pub overcommit_memory: Option<f64>,
    /// `--require-memory-limit`: a create without `limits.memory_max` is refused.
    pub require_memory_limit: bool,
    /// The state directory, where the drain flag's file is kept.
    pub state_dir: PathBuf,
}

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

/// Every route with its documentation: `/v1/...`, `/metrics`, `/healthz`, `/readyz`.
/// Routes are only ever added here, through `routes!` of `#[utoipa::path]` handlers.
pub fn api_router() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(list, create))
        .routes(routes!(get_one, delete, update))
        .routes(routes!(stop))
        .routes(routes!(kill))
        .routes(routes!(wait))
        .routes(routes!(pause))
        .routes(routes!(extend_deadline))
        .routes(routes!(resume))
        .routes(routes!(stats))
        .routes(routes!(logs))
        .routes(routes!(events))
        .routes(routes!(node_info))
        .routes(routes!(drain))
        .routes(routes!(undrain))
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
