//! `GET /v1/heartbeats/stream`: the hive's telemetry as Server-Sent Events (the path the
//! rbee upstream hive uses).
//!
//! On connect, `event: snapshot` holds the hive and every worker. Then `event: worker`
//! reports each transition as the lifecycle's supervisors announce it (`spawned`, `ready`, `busy`,
//! `stopping`, `exited`, `restarting` (a failed run, the next one waits for its backoff),
//! `restarted`, `crash_loop` (failed too often: no more restarts), `failed` (a pending
//! restart not made: a shutdown, a reload, …), `removed`), and every `telemetry_interval_ms` an `event: telemetry`
//! holds every running worker's stats in the upstream shape (`{pid, worker_id, model, state,
//! cpu_pct, rss_mb, uptime_s}`, and `gpu_util_pct`, `vram_mb`, `total_vram_mb` for GPU
//! workers when the driver reports them). Each reader has its own cursor in the
//! lifecycle's bounded event buffer: a reader that falls behind gets `event: gap` with how
//! many changes it missed, and never slows the hive.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use worker_lifecycle::{WorkerEvent, WorkerManager, WorkerTransition};

use crate::AppState;
use crate::jobs::ops::worker_json;

/// `GET /v1/heartbeats/stream`.
pub async fn stream(State(state): State<AppState>) -> Response {
    let workers = state.services.workers.clone();
    // Subscribed before the snapshot is taken, so that no change falls between the two.
    let events = workers.subscribe();
    let snapshot = snapshot(&state, &workers);
    let interval = Duration::from_millis(state.config.current().telemetry_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let reader = Reader {
        metrics: state.metrics.clone(),
        closing: state.closing.clone(),
        workers,
        events,
        pending: std::collections::VecDeque::new(),
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
    /// Worker events of one change not sent yet (a change may make several transitions).
    pending: std::collections::VecDeque<String>,
    ticker: tokio::time::Interval,
    first: Option<String>,
}

impl Reader {
    /// The next event's text; `None` once the lifecycle has ended (the hive is stopping).
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if let Some(next) = self.pending.pop_front() {
            return Some(next);
        }
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return None,
                event = self.events.recv() => match event {
                    Ok(WorkerEvent::Changed { transitions, record }) => {
                        let mut named = transitions.iter().filter_map(change_name).peekable();
                        if named.peek().is_none() {
                            continue;
                        }
                        let worker = worker_json(&record, self.workers.stats(&record.id));
                        self.pending.extend(named.map(|change| {
                            sse("worker", &json!({"change": change, "worker": worker}))
                        }));
                        return self.pending.pop_front();
                    }
                    Ok(WorkerEvent::Removed { id }) => {
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

/// The name of a transition on the stream, for those reported.
fn change_name(transition: &WorkerTransition) -> Option<&'static str> {
    Some(match transition {
        WorkerTransition::Spawned => "spawned",
        WorkerTransition::Ready { .. } => "ready",
        WorkerTransition::Busy => "busy",
        WorkerTransition::Stopping { .. } => "stopping",
        WorkerTransition::Exited { .. } => "exited",
        WorkerTransition::Restarting { .. } => "restarting",
        WorkerTransition::Restarted { .. } => "restarted",
        WorkerTransition::CrashLoop => "crash_loop",
        WorkerTransition::RestartAbandoned => "failed",
        // Followed by `exited` or a final status already reported; metrics count these.
        WorkerTransition::Killed | WorkerTransition::Gone { .. } => return None,
    })
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
