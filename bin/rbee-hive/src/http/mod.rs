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
use axum::extract::{RawQuery, Request, State};
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
        .route(
            "/queen/{key}/v1/heartbeats/stream",
            get(telemetry::queen_stream),
        )
        .route("/v1/queen", get(queen_report))
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

/// `GET /capabilities` (both paths); `?queen_url=X` from a discovering queen registers with
/// it (PROTOCOL §9). The answer is the same either way.
async fn get_capabilities(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Json<devices::Capabilities> {
    if let Some(queen_url) = query.as_deref().and_then(queen_url_of) {
        discovered(&state, &queen_url);
    }
    Json(state.devices.capabilities().await)
}

/// The `queen_url` of a query string, decoded.
fn queen_url_of(query: &str) -> Option<String> {
    form_urlencoded_pairs(query).find_map(|(key, value)| (key == "queen_url").then_some(value))
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> {
    let url = reqwest::Url::parse(&format!("http://query.invalid/?{query}")).ok();
    url.into_iter().flat_map(|url| {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>()
    })
}

/// A queen asked for the capabilities and said where it is: register with it when that is
/// allowed (the request carried the token, or the hive has none and serves loopback only).
fn discovered(state: &AppState, queen_url: &str) {
    let config = state.config.current();
    // With a token, this request passed `auth::require_token`: it carried it.
    let allowed = config.token.is_some() || state.listening.ip().is_loopback();
    if !allowed {
        tracing::warn!(
            "ignoring queen_url {queen_url:?} of a capabilities request: a hive without a token registers only while it serves loopback alone"
        );
        return;
    }
    if let Err(error) = crate::config::http_url("queen_url", queen_url) {
        tracing::warn!("ignoring the queen_url of a capabilities request: {error}");
        return;
    }
    match state.queen.add(queen_url, false) {
        Ok(()) => tracing::info!("a queen at {queen_url} discovered this hive"),
        Err(why) => tracing::warn!("not registering with the queen at {queen_url}: {why}"),
    }
}

/// `GET /v1/queen`: the registrations with queens.
async fn queen_report(State(state): State<AppState>) -> Json<crate::queen::QueenReport> {
    Json(state.queen.report())
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
