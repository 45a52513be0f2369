//! Router tests: the HTTP surface with `tower::ServiceExt::oneshot`, no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rbee_hive::config::Config;
use rbee_hive::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A config with its own state dir (a state dir is locked by the hive that uses it).
fn config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Config {
            state_dir: dir.path().to_owned(),
            ..Config::default()
        },
        dir,
    )
}

fn new_state((config, dir): (Config, tempfile::TempDir)) -> (AppState, tempfile::TempDir) {
    (
        AppState::new(config, "127.0.0.1:1".parse().unwrap()).unwrap(),
        dir,
    )
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, String) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn post_job(body: &str) -> Request<Body> {
    Request::post("/v1/jobs")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn health_is_plain_ok() {
    let (state, _dir) = new_state(config());
    let (status, body) = send(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_json_errors() {
    let (state, _dir) = new_state(config());
    let (status, body) = send(
        &state,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "no_route"
    );
    let (status, body) = send(
        &state,
        Request::put("/v1/jobs").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn submit_then_stream_through_the_router() {
    let (state, _dir) = new_state(config());
    let (status, body) = send(
        &state,
        post_job(r#"{"operation":"worker_list","hive_id":"localhost"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    let stream_url = answer["sse_url"].as_str().unwrap().to_owned();
    let (status, body) = send(
        &state,
        Request::get(&stream_url).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.ends_with(
            "data: [hv-router ] worker_list_empty: No workers found\n\ndata: [DONE]\n\n"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn validation_happens_before_a_job_exists() {
    let (state, _dir) = new_state(config());
    let (status, body) = send(
        &state,
        post_job(r#"{"operation":"worker_delete","hive_id":"h","id":5}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "field `id` must be a worker id string such as \"worker-1\", got a number", "code": "invalid_field"})
    );
    assert!(state.jobs.is_empty());
}

#[tokio::test]
async fn shutting_down_refuses_new_jobs_with_503() {
    let (state, _dir) = new_state(config());
    state.jobs.begin_shutdown();
    let (status, body) = send(
        &state,
        post_job(r#"{"operation":"worker_list","hive_id":"h"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting_down"));
}

#[tokio::test]
async fn token_check_spares_health_only() {
    let (base, dir) = config();
    let (state, _dir) = new_state((
        Config {
            token: Some("t0ken".into()),
            ..base
        },
        dir,
    ));
    let (status, _) = send(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &state,
        Request::get("/v1/jobs").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = Request::get("/v1/jobs")
        .header("authorization", "Bearer t0ken")
        .body(Body::empty())
        .unwrap();
    let (status, _) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK);
}
