//! The HTTP surface of the hive (PROTOCOL §2): routes, the token check, error mapping.
//!
//! # Layout
//! - [`error`]: `ApiError`, the one error-to-HTTP mapping.
//! - [`auth`]: the optional bearer token.
//! - [`heartbeat`]: worker heartbeats.
//! - [`jobs`]: submit, status and cancel of jobs.
//! - [`logs`]: a worker's captured output, whole, tailed or followed.
//! - [`telemetry`]: the telemetry stream (snapshot, worker changes, periodic stats).
//! - [`workers`]: the workers as JSON without a job (`GET /v1/workers`, `/v1/workers/{id}`).
//! - [`stream`]: a job's narration stream in its three encodings.
//! - [`server`]: the connection loop: header and idle timeouts, the connection cap, the
//!   shutdown hand-over.

pub mod auth;
pub mod error;
pub mod heartbeat;
pub mod jobs;
pub mod logs;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod workers;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::AppState;
use error::ApiError;

/// The response header that names the hive's id (the `hive_id` its jobs accept);
/// `server` names its version (`rbee-hive/<version>`).
pub use hive_api::HIVE_ID_HEADER;

/// The hive's router, ready to serve.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/capabilities", get(get_capabilities))
        .route("/v1/capabilities", get(get_capabilities))
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{job_id}", get(jobs::status).delete(jobs::cancel))
        .route("/v1/jobs/{job_id}/stream", get(stream::stream))
        .route("/v1/heartbeat", post(heartbeat::heartbeat))
        .route("/v1/workers", get(workers::list))
        .route("/v1/workers/{id}", get(workers::get))
        .route("/v1/workers/{id}/logs", get(logs::logs))
        .route("/v1/heartbeats/stream", get(telemetry::stream))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Outside the routing, so that unknown routes and wrong methods need the token too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            identify,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Says which hive answered: its version and id, on every response (the CLI's `status`
/// shows them, and its other subcommands address jobs to that id).
async fn identify(State(state): State<AppState>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::SERVER,
        HeaderValue::from_static(concat!("rbee-hive/", env!("CARGO_PKG_VERSION"))),
    );
    if let Ok(id) = HeaderValue::from_str(state.config.current().effective_hive_id()) {
        headers.insert(HIVE_ID_HEADER, id);
    }
    response
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.services.workers);
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn health() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "ok")
}

async fn get_capabilities(State(state): State<AppState>) -> Json<devices::Capabilities> {
    Json(state.devices.capabilities().await)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}
