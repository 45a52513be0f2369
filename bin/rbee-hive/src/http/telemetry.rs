//! `GET /v1/heartbeats/stream`: the hive's telemetry as Server-Sent Events (the path the
//! rbee upstream hive uses).
//!
//! On connect, `event: snapshot` holds the hive and every worker. Then `event: worker`
//! reports each state change as the lifecycle makes it (`spawned`, `ready`, `busy`,
//! `stopping`, `exited`, `restarting` (a failed run, the next one waits for its backoff),
//! `restarted`, `crash_loop` (failed too often: no more restarts), `failed` (a pending
//! restart not made: a shutdown, a reload, …), `removed`), and every `telemetry_interval_ms` an `event: telemetry`
//! holds every running worker's stats in the upstream shape (`{pid, worker_id, model, state,
//! cpu_pct, rss_mb, uptime_s}`, and `gpu_util_pct`, `vram_mb`, `total_vram_mb` for GPU
//! workers when the driver reports them). Each reader has its own cursor in the
//! lifecycle's bounded event buffer: a reader that falls behind gets `event: gap` with how
//! many changes it missed, and never slows the hive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use worker_lifecycle::{CRASH_LOOP, WorkerEvent, WorkerManager, WorkerRecord, WorkerStatus};

use crate::AppState;
use crate::jobs::ops::worker_json;

/// `GET /v1/heartbeats/stream`.
pub async fn stream(State(state): State<AppState>) -> Response {
    let workers = state.services.workers.clone();
    // Subscribed before the snapshot is taken, so that no change falls between the two.
    let events = workers.subscribe();
    let snapshot = snapshot(&state, &workers);
    let known: HashMap<String, WorkerRecord> = workers
        .list()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let interval = Duration::from_millis(state.config.current().telemetry_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let reader = Reader {
        metrics: state.metrics.clone(),
        closing: state.closing.clone(),
        workers,
        events,
        known,
        ticker,
        first: Some(sse("snapshot", &snapshot)),
    };
    let body = Body::from_stream(futures::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next().await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(chunk)), reader))
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct Reader {
    metrics: crate::metrics::Metrics,
    closing: tokio_util::sync::CancellationToken,
    workers: WorkerManager,
    events: tokio::sync::broadcast::Receiver<WorkerEvent>,
    known: HashMap<String, WorkerRecord>,
    ticker: tokio::time::Interval,
    first: Option<String>,
}

impl Reader {
    /// The next event's text; `None` once the lifecycle has ended (the hive is stopping).
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return None,
                event = self.events.recv() => match event {
                    Ok(WorkerEvent::Changed(record)) => {
                        let change = change(self.known.get(&record.id), &record);
                        self.known.insert(record.id.clone(), (*record).clone());
                        if let Some(change) = change {
                            let stats = self.workers.stats(&record.id);
                            return Some(sse("worker", &json!({
                                "change": change,
                                "worker": worker_json(&record, stats),
                            })));
                        }
                    }
                    Ok(WorkerEvent::Removed { id }) => {
                        self.known.remove(&id);
                        return Some(sse("worker", &json!({"change": "removed", "worker_id": id})));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // What is known may be stale now: the next telemetry event says how
                        // things are.
                        self.metrics.stream_gap();
                        return Some(sse("gap", &json!({"missed": missed})));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.ticker.tick() => return Some(sse("telemetry", &telemetry(&self.workers))),
            }
        }
    }
}

/// The state change a new record makes, if it is one of those reported.
fn change(before: Option<&WorkerRecord>, after: &WorkerRecord) -> Option<&'static str> {
    let Some(before) = before else {
        return Some("spawned");
    };
    if after.restart_pending() && !before.restart_pending() {
        return Some("restarting");
    }
    if after.restart_count > before.restart_count {
        return Some("restarted");
    }
    if before.restart_pending() && !after.restart_pending() && after.status.is_terminal() {
        return Some("failed");
    }
    if let WorkerStatus::Failed { reason } = &after.status
        && reason.starts_with(CRASH_LOOP)
        && before.status != after.status
    {
        return Some("crash_loop");
    }
    if after.exit.is_some() && before.exit.is_none() {
        return Some("exited");
    }
    if after.stop.is_some() && before.stop.is_none() {
        return Some("stopping");
    }
    if before.status != after.status {
        return match after.status {
            WorkerStatus::Ready => Some("ready"),
            WorkerStatus::Busy => Some("busy"),
            WorkerStatus::Stopped | WorkerStatus::Failed { .. } if before.exit.is_none() => {
                Some("exited")
            }
            _ => None,
        };
    }
    None
}

fn snapshot(state: &AppState, workers: &WorkerManager) -> Value {
    let stats = workers.all_stats();
    let config = state.config.current();
    json!({
        "hive": {
            "id": config.effective_hive_id(),
            "version": env!("CARGO_PKG_VERSION"),
            "telemetry_interval_ms": config.telemetry_interval_ms,
        },
        "workers": workers
            .list()
            .iter()
            .map(|w| worker_json(w, stats.get(&w.id).cloned()))
            .collect::<Vec<_>>(),
    })
}

/// Every running worker's stats in the upstream shape.
fn telemetry(workers: &WorkerManager) -> Value {
    let stats = workers.all_stats();
    let entries: Vec<Value> = workers
        .list()
        .into_iter()
        .filter_map(|record| {
            let stats = stats.get(&record.id)?;
            let mut entry = json!({
                "pid": record.pid,
                "worker_id": record.id,
                "model": record.model_id,
                "state": record.status.label(),
                "cpu_pct": stats.cpu_pct,
                "rss_mb": stats.rss_mb,
                "uptime_s": stats.uptime_s,
            });
            // GPU fields only where the driver reports them (upstream's optional fields).
            for (key, value) in [
                ("gpu_util_pct", stats.gpu_util_pct),
                ("vram_mb", stats.vram_mb),
                ("total_vram_mb", stats.total_vram_mb),
            ] {
                if let Some(value) = value {
                    entry[key] = json!(value);
                }
            }
            Some(entry)
        })
        .collect();
    json!({ "workers": entries, "at": chrono::Utc::now() })
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}
