//! `PATCH /v1/sandboxes/{id}`: a live change of a running sandbox's limits.

use super::*;
use paddock_supervisor::LimitsUpdate;

/// The body of `PATCH /v1/sandboxes/{id}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The change: a field given replaces that limit, `null` lifts it, a field left out is
    /// left as it is (`io_max` and `hugetlb_max` replace the whole list). An empty object
    /// changes nothing and answers with the sandbox as it is.
    pub limits: LimitsUpdate,
}

/// Change the limits of a running sandbox.
///
/// Each changed field is written to the sandbox's cgroup in turn, after the merged limits
/// are validated as a create validates them and the controllers they need are enabled. The
/// limits in force are recorded (a restarted daemon keeps them) and announced with a
/// `limits_updated` event; the answer carries them in `spec.limits`. What the kernel does
/// with a lower limit is its own: a `memory.max` below the current usage makes it reclaim,
/// then OOM-kill (the whole sandbox, with `memory.oom.group`; docs/limits.md).
#[utoipa::path(
    patch,
    path = "/v1/sandboxes/{id}",
    operation_id = "update_sandbox",
    params(("id" = SandboxId, Path, description = "The sandbox ID")),
    request_body(content = UpdateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated: the sandbox as it is now, its limits in `spec.limits`", body = SandboxInfo),
        (status = 400, description = "The body breaks this document (malformed JSON, an unknown field, a value out of its range) or the ID is invalid; the message names the field; nothing changed", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running (also: it stopped during the update)", body = ErrorBody),
        (status = 422, description = "This node cannot carry it out: a limit needs a controller the node lacks, an io_max device is not a whole block device, a page size is not offered, or the kernel refused a value (the fields written before it stay in force and are recorded; the message names the field); nothing else changed", body = ErrorBody),
        (status = 500, description = "The daemon failed: a system call failed unexpectedly; the message names it", body = ErrorBody),
        (status = 503, description = "The durable store refused the record", body = ErrorBody),
    ),
)]
pub(super) async fn update(
    State(st): State<Shared>,
    IdPath(id): IdPath,
    _q: NoParams,
    body: Body,
) -> ApiResult<axum::Json<SandboxInfo>> {
    let id = parse_id(&id)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::bad(format!(
            "request body is larger than {MAX_BODY} bytes (or could not be read)"
        ))
    })?;
    let mut v: Value =
        strict_json(&bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    integral_floats_to_integers(&mut v);
    let req: UpdateRequest =
        serde_json::from_value(v).map_err(|e| ApiError::bad(format!("invalid update: {e}")))?;
    // What the document refuses is a 400 (checked against the limits in force); what this
    // node refuses afterwards is a 422.
    let Some(now) = st.sup.get(&id) else {
        return Err(SupError::NotFound {
            id: id.to_string(),
            lifecycle: None,
        }
        .into());
    };
    let mut spec = now.spec.clone();
    spec.limits = req.limits.merged(&now.spec.limits);
    spec.validate()?;
    let info = st
        .sup
        .update_limits(&id, &req.limits)
        .await
        .map_err(|e| match e {
            SupError::InvalidSpec(why) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: why,
            },
            e @ SupError::Cgroup(_) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: e.to_string(),
            },
            e => e.into(),
        })?;
    tracing::info!(sandbox = %id, "limits updated through the API");
    Ok(axum::Json(info))
}
