//! The per-sandbox endpoints: create, list, get, stop, kill, wait, pause, resume, delete, stats, logs.

use super::*;

/// An admitted create, until it has finished: counted in [`Admission::inflight`]; a drain
/// waits for it. (What it counts against the limits is its supervisor reservation.)
pub(super) struct Inflight<'a> {
    st: &'a AppState,
}
impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        {
            let mut a = self.st.admission.lock().unwrap();
            a.inflight -= 1;
        }
        self.st.admitted_done.notify_waiters();
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
        (status = 400, description = "The body breaks this document: malformed JSON, an unknown field, a duplicate key, a missing required field, a value of the wrong type, out of its range, too long, not matching its pattern, too many items or a repeated one where items are unique (every per-field rule is stated in the schema), an oversized body, or a query parameter (none is taken); the message names the field; nothing changed", body = ErrorBody),
        (status = 409, description = "A sandbox with this ID is creating or running, or a host port its veth network publishes is published by another live sandbox; nothing started", body = ErrorBody),
        (status = 422, description = "Every field matches this document, but the fields do not fit together (in the jail: a capability in both cap_add and cap_drop, cap_add for a non-root or dynamic user, uid or gid with a dynamic user, user_ns with a dynamic user, id map lines that overlap or pass the largest id, a uid, gid or group the user namespace does not map, the user namespace without user_ns or a dynamic user, an mqueue mount without the ipc namespace, init without a pid namespace, an rlimit given twice or with soft above hard, more than 4096 seccomp system call names in all; in a veth network: a host port published twice, a tap name given twice; in the limits: a cpuset range that runs backwards or reaches 8192), or they do and this node cannot carry it out: the program cannot be started, a stdio file target is one the daemon will not open (not a regular file, a symbolic link, outside --stdio-dir, a missing directory on the way), the named network namespace does not exist, a limit needs a controller the node lacks, or the jail names what the node lacks (a user or group, the rootfs, a bind source, a device), asks for a dynamic user without --uid-range, or for an id of that range, or a veth network needs what the node lacks (the tun driver for a tap, nftables for its rules, IPv4 forwarding that the daemon cannot turn on), or the node requires a memory limit (--require-memory-limit) and limits.memory_max is missing; the message names the field; nothing left behind", body = ErrorBody),
        (status = 429, description = "An admission limit (max-sandboxes or max-starting) was reached, the memory the create's limits.memory_max would commit does not fit under allocatable × --overcommit-memory (the message names the committed, requested and allowed bytes), or the veth networks' address pool is exhausted (every /30 of --net-pool is leased); the message names it; nothing created", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
        (status = 503, description = "The node is draining (POST /v1/node/drain; with a Retry-After header: create on another node, or retry after the node is undrained), the durable store refused the record, opening a stdio file or the jail's files did not finish in time (a hung file system), or every uid of the dynamic range is held; nothing created", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Only when the node is draining: seconds after which to try again"))),
    ),
)]
pub(super) async fn create(
    State(st): State<Shared>,
    _q: NoParams,
    body: Body,
) -> ApiResult<Response> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::bad(format!(
            "request body is larger than {MAX_BODY} bytes (or could not be read)"
        ))
    })?;
    let spec = parse_create(&bytes)?;
    let memory = spec.limits.memory_max;
    if st.node.require_memory_limit && memory.is_none() {
        st.metrics.admission_rejected("require_memory_limit");
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "limits.memory_max: missing, and this node requires a memory limit on every sandbox (--require-memory-limit); give one, e.g. \"limits\": {\"memory_max\": 536870912}".into(),
        });
    }
    // A duplicate is a 409 whatever the admission limits say: it would start nothing. The
    // supervisor checks again atomically (a start of the same ID racing this one).
    if st.sup.get(&spec.id).is_some_and(|i| i.state.holds_id()) {
        st.sup
            .counters()
            .starts_conflict
            .fetch_add(1, Ordering::Relaxed);
        return Err(SupError::AlreadyExists(spec.id.clone()).into());
    }
    if st.admission.lock().unwrap().draining {
        return Ok(draining_refusal(&st));
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
    // Read before the lock: files of /proc and the cgroup tree.
    let memory_limit = st
        .node
        .overcommit_memory
        .and_then(|_| memory_admission_limit(&st, &resources(&st).1));
    // One critical section admits (or refuses) and commits: a drain that began before is
    // seen, and no two creates both fit under the memory limit.
    let (_inflight, reservation) = {
        let mut a = st.admission.lock().unwrap();
        if a.draining {
            drop(a);
            return Ok(draining_refusal(&st));
        }
        // Reserved starts count until they are live (then live counts them): a start that
        // just went live is not counted twice, so parallel creates are not refused early.
        let (admitted, reserved_memory) = st.sup.admitted();
        if let Some(max) = st.max_sandboxes {
            if admitted >= max {
                st.metrics.admission_rejected("max_sandboxes");
                return Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "limit max-sandboxes reached: {admitted} live or starting sandbox(es) of at most {max}; stop or delete one first"
                    ),
                });
            }
        }
        let requested = memory.unwrap_or(0);
        if let Some(allowed) = memory_limit {
            let committed = st
                .sup
                .occupancy()
                .memory_committed
                .saturating_add(reserved_memory);
            if committed.saturating_add(requested) > allowed {
                st.metrics.admission_rejected("overcommit_memory");
                return Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "limit overcommit-memory reached: limits.memory_max of {requested} bytes requested, {committed} bytes committed by live and starting sandboxes, {allowed} bytes allowed (allocatable memory × --overcommit-memory {}); stop a sandbox or ask for less",
                        st.node.overcommit_memory.unwrap_or(0.0)
                    ),
                });
            }
        }
        a.inflight += 1;
        (Inflight { st: &st }, st.sup.reserve(requested))
    };
    // The spec passed `validate` in `parse_create`: what `start` refuses now is what this
    // node cannot do (a stdio file, a network namespace, a controller), not a bad request.
    let started = st
        .sup
        .start_reserved(spec, reservation)
        .await
        .map_err(|e| match e {
            SupError::InvalidSpec(why) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: why,
            },
            e @ SupError::Cgroup(paddock_supervisor::CgroupError::ControllerUnavailable {
                ..
            }) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.to_string(),
            },
            e => e.into(),
        })?;
    tracing::info!(sandbox = %started.info.id, lifecycle = %started.info.lifecycle, pid = ?started.info.pid, "sandbox created through the API");
    Ok((StatusCode::CREATED, axum::Json(started.info)).into_response())
}

/// List every known lifecycle, or those whose labels match every selector.
///
/// The current ones, and older ones still stopping or quarantined. `?label=key=value`
/// keeps those whose label `key` is `value`, `?label=key` those that have the label `key`;
/// the parameter may be repeated (at most 16 times, each at most 256 characters): every selector must match. A selector
/// is split at its first `=`, so a key that holds `=` cannot be selected.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    operation_id = "list_sandboxes",
    params(("label" = Option<LabelSelectors>, Query, description = "A label selector: `key=value` (the label `key` is `value`) or `key` (the label `key` is present); repeat it for more: every one must match", style = Form, explode = true)),
    responses(
        (status = 200, description = "The sandboxes (that match)", body = Vec<SandboxInfo>),
        (status = 400, description = "A selector that is not `key` or `key=value` with a non-empty key, more than 16 selectors or one over 256 characters, or another query parameter; the message names it", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    State(st): State<Shared>,
    LabelQuery(selectors): LabelQuery,
) -> axum::Json<Vec<SandboxInfo>> {
    let mut all = st.sup.list();
    if !selectors.is_empty() {
        all.retain(|i| selectors.iter().all(|s| s.matches(&i.spec.labels)));
    }
    axum::Json(all)
}

pub(super) fn find(st: &AppState, id: &str, q: &LcQuery) -> ApiResult<SandboxInfo> {
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
pub(super) async fn get_one(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let Query(q) = q?;
    Ok(axum::Json(find(&st, &id, &q)?))
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
pub(super) async fn stop(
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
pub(super) async fn kill(
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
pub(super) fn pin_lifecycle(
    st: &AppState,
    id: &SandboxId,
    lc: Option<LifecycleId>,
) -> ApiResult<LifecycleId> {
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
pub(super) async fn wait(
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

/// Move a running sandbox's deadline later.
///
/// The new deadline is `extend` after the current one (or after now, for a sandbox without
/// a deadline or whose deadline has just passed without its stop having begun). It is
/// recorded before it takes effect and holds across a restart of the daemon. When it
/// passes, the sandbox is stopped gracefully by its own stop policy, reason `deadline`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/deadline",
    operation_id = "extend_sandbox_deadline",
    params(
        ("id" = SandboxId, Path, description = "The sandbox ID"),
        ("extend" = ApiDuration, Query, description = "How much later the deadline is to be (the deadline at most 365 days away; 0 keeps a deadline as it is, and gives a sandbox without one the deadline now: it stops)"),
    ),
    responses(
        (status = 200, description = "The sandbox, with its new deadline (`deadline_at_ms`)", body = SandboxInfo),
        (status = 400, description = "An invalid ID (also one whose percent-decoding is not UTF-8), a missing or invalid `extend`, or an unknown query parameter; the message names it; nothing changed", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running (creating, stopping, stopped, quarantined or failed); nothing changed", body = ErrorBody),
        (status = 422, description = "The extension would put the deadline more than 365 days away; nothing changed", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
        (status = 503, description = "The durable store refused the record: the deadline moved in this daemon but a restarted one would not know it", body = ErrorBody),
    ),
)]
pub(super) async fn extend_deadline(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<ExtendQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let by = q.extend()?;
    let at = st.sup.extend_deadline(&id, by).await?;
    tracing::info!(sandbox = %id, deadline_at_ms = at, "deadline moved through the API");
    st.sup.get(&id).map(axum::Json).ok_or_else(|| {
        SupError::NotFound {
            id: id.to_string(),
            lifecycle: None,
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
pub(super) async fn pause(
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
pub(super) async fn resume(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    q: Result<Query<LcQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SandboxInfo>> {
    set_paused(st, id, q, false).await
}

pub(super) async fn set_paused(
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
pub(super) async fn delete(
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
pub(super) async fn stats(
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
pub(super) async fn logs(
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
