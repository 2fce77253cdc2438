//! Node endpoints: what the node offers and holds (`GET /v1/node`), drain and undrain, the
//! OpenAPI document, metrics, liveness and readiness.

use super::*;
use paddock_supervisor::StopReason;

/// The `Retry-After` of a create refused because the node is draining, in seconds.
pub const DRAIN_RETRY_AFTER_SECS: u32 = 30;

/// CPUs and memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeResources {
    /// CPUs (fractional for a reserve and what is left after it).
    #[schema(minimum = 0)]
    pub cpus: f64,
    /// Memory, bytes.
    pub memory_bytes: u64,
}

/// The node's cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeCgroup {
    /// `unified` (cgroup v2 only) or `hybrid` (v2 beside v1 hierarchies), from
    /// `/proc/self/mountinfo`.
    #[schema(pattern = "^(unified|hybrid)$")]
    pub mode: String,
    /// Where the cgroup2 hierarchy is mounted.
    pub mount: String,
    /// The managed root: every sandbox's cgroup is below it.
    pub root: String,
    /// The controllers the managed root can hand to its sandboxes (its
    /// `cgroup.controllers`); empty when it could not be read.
    pub controllers: Vec<String>,
}

/// Memory admission: what live sandboxes commit and what the node admits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeMemory {
    /// The sum of `limits.memory_max` (as in force, updates included) of every live
    /// sandbox — running, stopping or quarantined — and of the creates admitted and still
    /// starting, bytes.
    pub committed_bytes: u64,
    /// Live sandboxes without `memory_max`: they commit nothing.
    pub live_without_limit: u64,
    /// `--overcommit-memory`: creates are admitted while the committed memory stays
    /// within allocatable × this; `null` when memory is not admitted (the default).
    pub overcommit_ratio: Option<f64>,
    /// allocatable × the ratio (rounded down): the most memory live sandboxes may commit;
    /// `null` without `--overcommit-memory`.
    pub admission_limit_bytes: Option<u64>,
    /// `--require-memory-limit`: whether a create without `limits.memory_max` is refused.
    pub require_limit: bool,
}

/// Lifecycles by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxCounts {
    /// Being created.
    pub creating: u64,
    /// Running (paused ones included).
    pub running: u64,
    /// Of the running ones, paused.
    pub paused: u64,
    /// Stopping.
    pub stopping: u64,
    /// Stopped and still listed.
    pub stopped: u64,
    /// Failed (to start or to stop) and still listed.
    pub failed: u64,
    /// Quarantined: processes outlived the kill.
    pub quarantined: u64,
    /// Live: running, stopping or quarantined (what `--max-sandboxes` counts).
    pub live: u64,
}

/// What the node is and holds: `GET /v1/node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// paddock's version.
    pub version: String,
    /// The git commit the daemon was built from, when its build knew it.
    pub git_commit: Option<String>,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The cgroup hierarchy and the managed root.
    pub cgroup: NodeCgroup,
    /// What the managed root's sandboxes can use: the CPUs of the daemon's affinity (that
    /// are in the root's `cpuset.cpus.effective`, where it has one), and `MemTotal` or the
    /// lowest `memory.max` of the root and its ancestors when that is lower.
    pub capacity: NodeResources,
    /// `--reserve-cpus` and `--reserve-memory`.
    pub reserved: NodeResources,
    /// Capacity less the reserve (never below 0).
    pub allocatable: NodeResources,
    /// Memory admission.
    pub memory: NodeMemory,
    /// Lifecycles by state.
    pub sandboxes: SandboxCounts,
    /// Whether the node is draining: creates get 503 until an undrain.
    pub draining: bool,
    /// When the drain began (milliseconds since the Unix epoch); `null` when not draining
    /// or not known.
    pub draining_since_ms: Option<u64>,
}

/// The body of `POST /v1/node/drain` (optional: no body, or `null`, is `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Also stop every live sandbox, each by its own stop policy (reason `drain`); the
    /// answer comes once every stop has finished. Default: `false` (they keep running).
    #[serde(default)]
    pub stop: bool,
    /// With `stop`: the grace period replacing each sandbox's own (`0`: kill at once).
    /// Ignored without `stop`. Default: each sandbox's own.
    #[serde(default)]
    #[schema(value_type = Option<ApiDuration>)]
    pub grace: Option<String>,
}

/// A stop of a drain that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DrainFailure {
    /// The sandbox.
    pub id: SandboxId,
    /// Why its stop failed.
    pub error: String,
}

/// The answer of `POST /v1/node/drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DrainReport {
    /// Always `true`: the node is draining, and stays so (across a restart of the daemon
    /// too) until an undrain.
    pub draining: bool,
    /// Whether it already was.
    pub was_draining: bool,
    /// Creates admitted before the drain began and still starting then. The drain answers
    /// only once each of them has finished (started, or failed): no create that this answer
    /// does not count can start a sandbox. With `stop`, those that started are stopped too.
    pub creates_in_flight: u64,
    /// With `stop`: how many sandboxes this drain stopped.
    pub stopped: u64,
    /// With `stop`: the stops that failed.
    pub failed: Vec<DrainFailure>,
    /// Live sandboxes (running, stopping or quarantined) when the drain answered.
    pub live: u64,
}

/// The answer of `POST /v1/node/undrain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UndrainReport {
    /// Always `false`: creates are admitted again.
    pub draining: bool,
    /// Whether the node was draining.
    pub was_draining: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The daemon's version and, when the build set `PADDOCK_GIT_COMMIT`, its git commit.
pub fn version() -> (&'static str, Option<&'static str>) {
    (
        env!("CARGO_PKG_VERSION"),
        option_env!("PADDOCK_GIT_COMMIT").filter(|c| !c.is_empty()),
    )
}

/// The managed root's capacity, and what is allocatable after the reserve.
pub(super) fn resources(st: &AppState) -> (NodeResources, NodeResources) {
    let root = st.sup.root();
    let capacity = NodeResources {
        cpus: host::usable_cpus(root.path()) as f64,
        memory_bytes: host::usable_memory(root.path(), &root.mount().mount_point),
    };
    let allocatable = NodeResources {
        cpus: (capacity.cpus - st.node.reserve_cpus).max(0.0),
        memory_bytes: capacity.memory_bytes.saturating_sub(st.node.reserve_memory),
    };
    (capacity, allocatable)
}

/// The most memory live sandboxes may commit: allocatable × `--overcommit-memory`, rounded
/// down; `None` without the flag.
pub(super) fn memory_admission_limit(st: &AppState, allocatable: &NodeResources) -> Option<u64> {
    st.node
        .overcommit_memory
        .map(|r| (allocatable.memory_bytes as f64 * r).min(u64::MAX as f64) as u64)
}

/// The 503 of a create while the node is draining, with its `Retry-After`.
pub(super) fn draining_refusal(st: &AppState) -> Response {
    st.metrics.admission_rejected("draining");
    let mut r = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "the node is draining: it admits no new sandbox until it is undrained (paddock undrain, POST /v1/node/undrain); create it on another node, or retry after {DRAIN_RETRY_AFTER_SECS} s"
        ),
    }
    .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(DRAIN_RETRY_AFTER_SECS),
    );
    r
}

/// What the node is and holds.
///
/// Capacity (the CPUs and memory the managed root's sandboxes can use), the reserve and
/// what is allocatable after it, the memory live sandboxes commit and what memory
/// admission allows, lifecycles by state, whether the node is draining, the daemon's
/// version, the kernel, the cgroup mode and the managed root's controllers.
#[utoipa::path(
    get,
    path = "/v1/node",
    operation_id = "node_info",
    responses(
        (status = 200, description = "The node", body = NodeInfo),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
    ),
)]
pub(super) async fn node_info(State(st): State<Shared>, _q: NoParams) -> axum::Json<NodeInfo> {
    let (capacity, allocatable) = resources(&st);
    // Reservations before the live ones: a start going live meanwhile is counted twice
    // at worst, never missed.
    let (_, reserved_memory) = st.sup.admitted();
    let occ = st.sup.occupancy();
    let (draining, draining_since_ms) = {
        let a = st.admission.lock().unwrap();
        (a.draining, a.draining_since_ms)
    };
    let root = st.sup.root();
    let mode = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| host::cgroup_mode(&m))
        .unwrap_or("unified");
    let n = |s: SbState| occ.count(s) as u64;
    let sandboxes = SandboxCounts {
        creating: n(SbState::Creating),
        running: n(SbState::Running),
        paused: occ.paused as u64,
        stopping: n(SbState::Stopping),
        stopped: n(SbState::Stopped),
        failed: n(SbState::Failed),
        quarantined: n(SbState::Quarantined),
        live: n(SbState::Running) + n(SbState::Stopping) + n(SbState::Quarantined),
    };
    let (version, git_commit) = version();
    axum::Json(NodeInfo {
        version: version.to_owned(),
        git_commit: git_commit.map(str::to_owned),
        kernel: host::kernel_release(),
        cgroup: NodeCgroup {
            mode: mode.to_owned(),
            mount: root.mount().mount_point.display().to_string(),
            root: root.path().display().to_string(),
            controllers: root.controllers().unwrap_or_default(),
        },
        capacity,
        reserved: NodeResources {
            cpus: st.node.reserve_cpus,
            memory_bytes: st.node.reserve_memory,
        },
        allocatable,
        memory: NodeMemory {
            committed_bytes: occ.memory_committed.saturating_add(reserved_memory),
            live_without_limit: occ.live_without_memory_max as u64,
            overcommit_ratio: st.node.overcommit_memory,
            admission_limit_bytes: memory_admission_limit(&st, &allocatable),
            require_limit: st.node.require_memory_limit,
        },
        sandboxes,
        draining,
        draining_since_ms: draining.then_some(draining_since_ms).flatten(),
    })
}

/// Parses the optional body of a drain.
fn parse_drain(body: &[u8]) -> ApiResult<(bool, Option<Duration>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((false, None));
    }
    let v = strict_json(body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    if v.is_null() {
        return Ok((false, None));
    }
    let Value::Object(m) = v else {
        return Err(ApiError::bad(
            "request body must be a JSON object (a DrainRequest), null or empty",
        ));
    };
    // Decoded field by field, so that each error names its field.
    let mut r = DrainRequest::default();
    for (k, v) in m {
        match (k.as_str(), v) {
            ("stop", Value::Bool(b)) => r.stop = b,
            ("stop", v) => return Err(ApiError::bad(format!("stop: {v} is not a boolean"))),
            ("grace", Value::Null) => r.grace = None,
            ("grace", Value::String(g)) => r.grace = Some(g),
            ("grace", v) => {
                return Err(ApiError::bad(format!(
                    "grace: {v} is not a duration string (examples: 10s, 500ms, 0)"
                )));
            }
            (k, _) => {
                return Err(ApiError::bad(format!(
                    "unknown field {k:?} (a drain takes stop and grace)"
                )));
            }
        }
    }
    let grace = r
        .grace
        .as_deref()
        .map(|g| parse_api_duration(g).map_err(|why| ApiError::bad(format!("grace: {why}"))))
        .transpose()?;
    Ok((r.stop, grace))
}

/// Waits until no admitted create is in flight.
async fn creates_finished(st: &AppState) {
    loop {
        let woken = st.admitted_done.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if st.admission.lock().unwrap().inflight == 0 {
            return;
        }
        woken.await;
    }
}

/// Drain the node: refuse every create from now on (503 with `Retry-After`), and
/// optionally stop every sandbox.
///
/// The flag is kept in the state directory (the file `draining`), so a restarted daemon
/// stays drained until an undrain. The answer comes once every create admitted before
/// the drain has finished (it counts them): after it, no create can start a sandbox.
/// With `"stop": true`, every live sandbox is then stopped by its own stop policy (reason
/// `drain`, its restarts ended), `grace` replacing the grace periods, and the answer comes
/// once every stop has finished. Draining a drained node changes nothing but may stop.
/// The body is optional (none is `{}`); at most 65536 bytes.
#[utoipa::path(
    post,
    path = "/v1/node/drain",
    operation_id = "drain_node",
    request_body(content = Option<DrainRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Draining: what the drain waited for and stopped", body = DrainReport),
        (status = 400, description = "The body breaks this document (malformed JSON, an unknown field, a duplicate key, a value of the wrong type, a grace that is not a duration), an oversized body, or a query parameter (none is taken); the message names it; nothing changed", body = ErrorBody),
        (status = 500, description = "The drain flag could not be written to the state directory: this daemon drains, but a restarted one would not; the message names the file", body = ErrorBody),
    ),
)]
pub(super) async fn drain(
    State(st): State<Shared>,
    _q: NoParams,
    body: Body,
) -> ApiResult<axum::Json<DrainReport>> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::bad(format!(
            "request body is larger than {MAX_BODY} bytes (or could not be read)"
        ))
    })?;
    let (stop, grace) = parse_drain(&bytes)?;
    let _op = st.node_op.lock().await;
    let (was_draining, in_flight, since) = {
        let mut a = st.admission.lock().unwrap();
        let was = a.draining;
        a.draining = true;
        if !was {
            a.draining_since_ms = Some(now_ms());
        }
        (was, a.inflight, a.draining_since_ms)
    };
    if !was_draining {
        tracing::warn!(stop, grace = ?grace, creates_in_flight = in_flight, "node draining: creates are refused until undrain");
    }
    let dir = st.node.state_dir.clone();
    let persisted = tokio::task::spawn_blocking(move || {
        host::write_drain_file(&dir, since.unwrap_or_else(now_ms))
    })
    .await
    .unwrap_or_else(|e| Err(format!("the writer task failed: {e}")));
    if let Err(e) = persisted {
        tracing::error!(error = %e, "could not record the drain in the state directory");
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "record the drain: {e}: this daemon is draining, but a restarted one would admit creates; fix the state directory and drain again"
            ),
        });
    }
    creates_finished(&st).await;
    let mut stopped = 0;
    let mut failed = Vec::new();
    if stop {
        for (id, r) in st.sup.stop_every(grace, StopReason::Drain).await {
            match r {
                Ok(_) => stopped += 1,
                Err(e) => {
                    tracing::error!(sandbox = %id, error = %e, "drain: stop failed");
                    failed.push(DrainFailure {
                        id,
                        error: e.to_string(),
                    });
                }
            }
        }
        failed.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        tracing::info!(
            stopped,
            failed = failed.len(),
            "drain: every live sandbox stopped"
        );
    }
    Ok(axum::Json(DrainReport {
        draining: true,
        was_draining,
        creates_in_flight: in_flight as u64,
        stopped,
        failed,
        live: st.sup.live() as u64,
    }))
}

/// Undrain the node: admit creates again.
///
/// The drain flag's file is removed first; a drain in progress (waiting for its stops)
/// finishes before this begins. Undraining a node that is not draining changes nothing.
#[utoipa::path(
    post,
    path = "/v1/node/undrain",
    operation_id = "undrain_node",
    responses(
        (status = 200, description = "Creates are admitted again", body = UndrainReport),
        (status = 400, description = "A query parameter: this endpoint takes none", body = ErrorBody),
        (status = 500, description = "The drain flag could not be removed from the state directory: the node stays draining; the message names the file", body = ErrorBody),
    ),
)]
pub(super) async fn undrain(
    State(st): State<Shared>,
    _q: NoParams,
) -> ApiResult<axum::Json<UndrainReport>> {
    let _op = st.node_op.lock().await;
    let dir = st.node.state_dir.clone();
    tokio::task::spawn_blocking(move || host::remove_drain_file(&dir))
        .await
        .unwrap_or_else(|e| Err(format!("the writer task failed: {e}")))
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "remove the drain flag: {e}: the node stays draining; fix the state directory and undrain again"
            ),
        })?;
    let was_draining = {
        let mut a = st.admission.lock().unwrap();
        let was = a.draining;
        a.draining = false;
        a.draining_since_ms = None;
        was
    };
    if was_draining {
        tracing::warn!("node undrained: creates are admitted again");
    }
    Ok(axum::Json(UndrainReport {
        draining: false,
        was_draining,
    }))
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
pub(super) async fn openapi(_q: NoParams) -> Response {
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
pub(super) async fn metrics(State(st): State<Shared>, _q: NoParams) -> Response {
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
pub(super) async fn healthz(_q: NoParams) -> axum::Json<StatusBody> {
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
pub(super) async fn readyz(State(st): State<Shared>, _q: NoParams) -> Response {
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
pub(super) fn readiness(
    reconciled: bool,
    reaper: &paddock_supervisor::ReaperHealth,
) -> Result<(), String> {
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
