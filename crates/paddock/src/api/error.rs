//! Error answers: the `{"error": "..."}` body and the mapping of supervisor errors to statuses; the small status bodies.

use super::*;

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
            SupError::Inconsistent(_) | SupError::Unsupported(_) | SupError::OutOfRange(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            SupError::AlreadyExists(_) => StatusCode::CONFLICT,
            SupError::NotFound { .. } => StatusCode::NOT_FOUND,
            SupError::InvalidState { .. } => StatusCode::CONFLICT,
            SupError::Spawn { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            SupError::Journal { .. } | SupError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SupError::PoolExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            SupError::PortInUse(_) => StatusCode::CONFLICT,
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
