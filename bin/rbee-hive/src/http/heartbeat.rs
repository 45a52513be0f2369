//! `POST /v1/heartbeat`: a worker says it is alive (and, optionally, idle or busy).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use worker_lifecycle::{HeartbeatState, LifecycleError, WorkerHealth};

use crate::AppState;
use crate::http::error::ApiError;

/// The heartbeat body.
#[derive(Debug, Deserialize)]
pub struct Heartbeat {
    worker_id: String,
    /// When the worker sent it (informational; the hive records its own receive time).
    #[serde(default)]
    #[allow(dead_code)]
    timestamp: Option<DateTime<Utc>>,
    health_status: WorkerHealth,
    #[serde(default)]
    state: Option<BeatState>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BeatState {
    Ready,
    Busy,
}

/// Records a heartbeat; 404 for an unknown worker.
pub async fn heartbeat(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let beat: Heartbeat =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadHeartbeat(e.to_string()))?;
    let beat_state = beat.state.map(|s| match s {
        BeatState::Ready => HeartbeatState::Ready,
        BeatState::Busy => HeartbeatState::Busy,
    });
    match state
        .services
        .workers
        .heartbeat(&beat.worker_id, beat.health_status, beat_state)
        .await
    {
        Ok(record) => Ok(Json(json!({
            "status": "ok",
            "message": format!("heartbeat recorded for {} ({})", record.id, record.status.label()),
        }))),
        Err(LifecycleError::NotFound(id)) => Err(ApiError::WorkerNotFound(id)),
        Err(other) => Err(ApiError::BadHeartbeat(other.to_string())),
    }
}
