//! The one mapping from errors to HTTP responses: `{"error": "...", "code": "..."}` with
//! the right status. 5xx bodies say little; their cause is logged once, here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use job_server::{CancelError, SubmitError};
use serde::Serialize;

use crate::jobs::OperationError;

/// An error answered outside a stream.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid operation.
    #[error(transparent)]
    BadOperation(#[from] OperationError),
    /// The body is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read.
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The body did not arrive whole within the body timeout.
    #[error(transparent)]
    BodyTimedOut(#[from] crate::http::server::BodyTimedOut),
    /// Not `application/json`.
    #[error("the request body must be JSON: send `Content-Type: application/json` (got {got})")]
    UnsupportedMediaType {
        /// The content type sent.
        got: String,
    },
    /// No or wrong bearer token.
    #[error("missing or wrong API token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// A query parameter has a value the hive cannot use.
    #[error("query parameter `{name}` {reason}")]
    InvalidQuery {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header has a value the hive cannot use.
    #[error("header {name} {reason}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// No such job.
    #[error("job '{0}' not found (unknown, or freed after its retention period)")]
    JobNotFound(String),
    /// The job already ended.
    #[error(
        "job '{job_id}' already finished ({state}); only queued or running jobs can be cancelled"
    )]
    JobFinished {
        /// The job.
        job_id: String,
        /// How it ended.
        state: &'static str,
    },
    /// A heartbeat body that does not parse.
    #[error(
        "invalid heartbeat: {0}; expected {{\"worker_id\", \"timestamp\", \"health_status\": \"healthy\"|\"degraded\", \"state\"?: \"ready\"|\"busy\"}}"
    )]
    BadHeartbeat(String),
    /// No worker with this id.
    #[error("worker '{0}' not found")]
    WorkerNotFound(String),
    /// The hive failed at something it should not (a file it owns could not be read).
    #[error("internal error: {0}")]
    Internal(String),
    /// Shutting down.
    #[error("the hive is shutting down and accepts no new work")]
    ShuttingDown,
    /// No such route.
    #[error("no route for {method} {path}; see the README for the endpoints")]
    NoRoute {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// Wrong method for an existing route.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadOperation(e) => (StatusCode::BAD_REQUEST, e.code()),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, "body_unreadable"),
            Self::BodyTimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header"),
            Self::InvalidQuery { .. } => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found"),
            Self::JobFinished { .. } => (StatusCode::CONFLICT, "job_finished"),
            Self::BadHeartbeat(_) => (StatusCode::BAD_REQUEST, "invalid_heartbeat"),
            Self::WorkerNotFound(_) => (StatusCode::NOT_FOUND, "worker_not_found"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }
}

impl ApiError {
    /// A request body that could not be read: too slow (`408`), or broken.
    pub fn body_read(error: axum::Error) -> Self {
        match error
            .into_inner()
            .downcast::<crate::http::server::BodyTimedOut>()
        {
            Ok(timed_out) => Self::BodyTimedOut(*timed_out),
            Err(other) => Self::BodyUnreadable(other.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(error: CancelError) -> Self {
        match error {
            CancelError::NotFound(id) => Self::JobNotFound(id),
            CancelError::AlreadyFinished { job_id, state } => Self::JobFinished {
                job_id,
                state: state.as_str(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, "{self}");
        } else {
            tracing::debug!(code, "{self}");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                code,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
