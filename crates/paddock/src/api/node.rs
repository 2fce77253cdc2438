//! Node endpoints: the OpenAPI document, metrics, liveness and readiness.

use super::*;

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
