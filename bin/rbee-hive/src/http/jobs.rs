//! `POST /v1/jobs`, `GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use job_server::{JobId, JobSnapshot};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http::error::ApiError;
use crate::jobs::{Operation, OperationError, router};

/// The answer to a submitted job.
#[derive(Debug, Serialize)]
pub struct Submitted {
    /// The new job's id.
    pub job_id: JobId,
    /// Where its narration streams.
    pub sse_url: String,
}

/// `POST /v1/jobs`: validates the operation, then starts it as a job.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Submitted>, ApiError> {
    if state.jobs.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    require_json(&headers)?;
    let body = read_limited(&headers, body, state.config.current().body_limit_bytes).await?;
    let job_id = match Operation::parse(&body) {
        Ok(operation) => match refusal(&state, &operation) {
            Some(reason) => refuse(&state, operation.name(), reason)?,
            None => {
                let services = state.services.clone();
                let timer = state.metrics.job(operation.name());
                state.jobs.submit(operation.name(), move |job| async move {
                    let outcome = router::dispatch(operation, job, services).await;
                    timer.finish(outcome.is_ok());
                    outcome
                })?
            }
        },
        // Well-formed but not run here: a job that fails with the reason (PROTOCOL §8), so
        // that the upstream clients, which read only streams, show it.
        Err(OperationError::UnsupportedOperation { name }) => {
            let reason = OperationError::UnsupportedOperation { name: name.clone() }.to_string();
            refuse(&state, &name, reason)?
        }
        // A field of the right type whose value is refused (a model that reads as a flag, an
        // empty id, …) is not a syntax error of the client: the reason goes in a stream too.
        Err(error @ OperationError::InvalidValue { .. }) => {
            let name = operation_name(&body).unwrap_or("unknown");
            refuse(&state, name, error.to_string())?
        }
        Err(error) => return Err(error.into()),
    };
    let sse_url = format!("/v1/jobs/{job_id}/stream");
    Ok(Json(Submitted { job_id, sse_url }))
}

/// Why a valid operation is not run here: it names another hive than the one this hive was
/// explicitly told it is (`hive_check` names none, only the alias a keeper uses).
fn refusal(state: &AppState, operation: &Operation) -> Option<String> {
    let config = state.config.current();
    let configured = config.hive_id.as_ref()?;
    let addressed = operation.hive_id()?;
    (configured != addressed).then(|| {
        format!("this hive is '{configured}', not '{addressed}'; address it as '{configured}'")
    })
}

/// The operation name of a body that parsed as far as its fields: one of the known names.
fn operation_name(body: &[u8]) -> Option<&'static str> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let name = value.get("operation")?.as_str()?;
    name.parse::<crate::jobs::OperationKind>()
        .ok()
        .map(|kind| kind.name())
}

/// Starts a job that fails at once with `reason`.
fn refuse(state: &AppState, operation: &str, reason: String) -> Result<JobId, ApiError> {
    let timer = state.metrics.job(operation);
    Ok(state.jobs.submit(operation, move |_| async move {
        timer.finish(false);
        Err::<(), String>(reason)
    })?)
}

/// `GET /v1/jobs`: every kept job's status, oldest first.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "jobs": state.jobs.list() }))
}

/// `GET /v1/jobs/{id}`: the job's status.
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobSnapshot>, ApiError> {
    let job_id = JobId::parse(&id).ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    state
        .jobs
        .snapshot(&job_id)
        .map(Json)
        .ok_or(ApiError::JobNotFound(id))
}

/// `DELETE /v1/jobs/{id}`: cancels a queued or running job.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job_id = JobId::parse(&id).ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    state.jobs.cancel(&job_id)?;
    Ok(Json(json!({ "job_id": job_id, "status": "cancelled" })))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = content_type.as_deref().is_some_and(|value| {
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            got: content_type.unwrap_or_else(|| "no Content-Type".to_owned()),
        })
    }
}

async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        discard(body, declared.unwrap_or(0)).await;
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut body = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        let chunk = chunk.map_err(ApiError::body_read)?;
        if collected.len() + chunk.len() > limit {
            let rest = futures::StreamExt::fold(body, 0u64, |n, c| async move {
                n + c.map(|c| c.len() as u64).unwrap_or(0)
            });
            if tokio::time::timeout(DISCARD_TIME, rest).await.is_err() {
                tracing::debug!("stopped reading an oversized body");
            }
            return Err(ApiError::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

/// Bodies up to this size are read (and dropped) before a 413 is sent, so that a client
/// still writing its body gets the answer instead of a broken pipe; larger ones are cut off.
const DISCARD_UP_TO: u64 = 1024 * 1024;
/// How long the hive reads an oversized body before it gives up on it.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn discard(body: Body, declared: u64) {
    if declared > DISCARD_UP_TO {
        return;
    }
    let drained = Limited::new(body, DISCARD_UP_TO as usize).collect();
    let _ = tokio::time::timeout(DISCARD_TIME, drained).await;
}
