//! The optional bearer token: when configured, every request but those to `/health` (and
//! `GET /metrics` with `metrics_public = true`, the telemetry stream with
//! `telemetry_public = true`) needs `Authorization: Bearer <token>`,
//! unknown routes and wrong methods included, so that nothing about the hive is told to a
//! client without it. The token is the one in effect now (a reload may change it); the
//! scheme is matched without regard to case (RFC 7235) and the token in constant time.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::http::error::ApiError;

/// Middleware that refuses requests without the configured token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = state.config.current();
    if let Some(expected) = config.token.as_deref()
        && !is_open(&request, config.metrics_public, config.telemetry_public)
    {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        if !presented.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.as_bytes())) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// The requests served without the token (PROTOCOL §8: only `/health` is open, whatever
/// the method; a wrong method there is a 405 that tells nothing; §9: the telemetry stream
/// with `telemetry_public`, at its own path and at a queen's).
fn is_open(request: &Request, metrics_public: bool, telemetry_public: bool) -> bool {
    let reads = request.method() == Method::GET || request.method() == Method::HEAD;
    let path = request.uri().path();
    match path {
        "/health" => true,
        "/metrics" => reads && metrics_public,
        _ => reads && telemetry_public && is_telemetry_path(path),
    }
}

/// `/v1/heartbeats/stream`, or a queen's `/queen/<key>/v1/heartbeats/stream`.
fn is_telemetry_path(path: &str) -> bool {
    path == "/v1/heartbeats/stream"
        || path
            .strip_prefix("/queen/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(key, rest)| {
                crate::queen::is_queen_key(key) && rest == "v1/heartbeats/stream"
            })
}

/// The token of an `Authorization: Bearer <token>` value; the scheme in any case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq, is_telemetry_path};

    #[test]
    fn only_the_telemetry_stream_paths_are_telemetry() {
        let key = crate::queen::queen_key("http://queen:7833");
        assert!(is_telemetry_path("/v1/heartbeats/stream"));
        assert!(is_telemetry_path(&format!(
            "/queen/{key}/v1/heartbeats/stream"
        )));
        for path in [
            "/v1/heartbeats/stream/",
            "/v1/jobs",
            "/queen/x/v1/heartbeats/stream",
            &format!("/queen/{key}/v1/jobs"),
            &format!("/queen/{key}/../v1/jobs"),
        ] {
            assert!(!is_telemetry_path(path), "{path}");
        }
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn the_scheme_is_matched_in_any_case() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR  s3cret ",
        ] {
            assert_eq!(bearer_token(value), Some("s3cret"), "{value}");
        }
        for value in ["Basic s3cret", "Bearers3cret", "s3cret", "Bearer"] {
            assert_ne!(bearer_token(value), Some("s3cret"), "{value}");
        }
    }
}
