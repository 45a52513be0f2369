//! `GET /v1/workers` and `GET /v1/workers/{id}`: the workers with their last resource sample,
//! as JSON in one request and without a job — what the command line's `ps` and `get` read,
//! and what a program that polls wants. The operations `worker_list` and `worker_get` give
//! the same records in a job's result, with the upstream narration.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::http::error::ApiError;
use crate::jobs::ops::WorkerView;

/// Every listed worker: `{"workers": [<record with "stats">, …]}`.
pub async fn list(State(state): State<AppState>) -> Response {
    #[derive(serde::Serialize)]
    struct Workers<'a> {
        workers: Vec<WorkerView<'a>>,
    }
    let workers = state.services.workers.list_with_stats();
    let views = workers
        .iter()
        .map(|(record, stats)| WorkerView::new(record, stats.clone()))
        .collect();
    Json(Workers { workers: views }).into_response()
}

/// One worker, or 404 `worker_not_found`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let workers = &state.services.workers;
    match workers.get(&id) {
        Ok(record) => Json(WorkerView::new(&record, workers.stats(&id))).into_response(),
        Err(_) => ApiError::WorkerNotFound(id).into_response(),
    }
}
