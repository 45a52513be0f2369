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
//!
//! For today's rbee queen (PROTOCOL §9), `event: heartbeat` carries its telemetry message
//! (`heartbeat`): at every interval and after every worker change, every running worker in
//! the upstream's field names and JSON types. The queen parses every message's data and
//! drops what is not that shape, so our other events cost it nothing. A queen reads the
//! stream at `/queen/<key>/v1/heartbeats/stream` (the `hive_url` it was registered with):
//! the same stream, counted as its subscription while the connection is open.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use worker_lifecycle::{WorkerEvent, WorkerManager, WorkerTransition};

use crate::AppState;
use crate::http::error::ApiError;
use crate::jobs::ops::worker_json;
use crate::queen::SubscriptionGuard;

/// `GET /v1/heartbeats/stream`.
pub async fn stream(State(state): State<AppState>) -> Response {
    open(state, None)
}

/// `GET /queen/{key}/v1/heartbeats/stream`: a queen's subscription (see `crate::queen`).
pub async fn queen_stream(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    if !crate::queen::is_queen_key(&key) {
        return ApiError::NoRoute {
            method: "GET".to_owned(),
            path: format!("/queen/{key}/v1/heartbeats/stream"),
        }
        .into_response();
    }
    let subscription = state.queen.subscribed(&key);
    open(state, Some(subscription))
}

fn open(state: AppState, subscription: Option<SubscriptionGuard>) -> Response {
    let workers = state.services.workers.clone();
    // Subscribed before the snapshot is taken, so that no change falls between the two.
    let events = workers.subscribe();
    let snapshot = snapshot(&state, &workers);
    let interval = Duration::from_millis(state.config.current().telemetry_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reader = Reader {
        hive: HiveInfo::of(&state),
        _subscription: subscription,
        metrics: state.metrics.clone(),
        closing: state.closing.clone(),
        workers,
        events,
        pending: std::collections::VecDeque::new(),
        ticker,
        first: Some(sse("snapshot", &snapshot)),
    };
    reader.queue_heartbeat();
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
    hive: HiveInfo,
    /// Counts the connection as a queen's subscription until the stream is dropped.
    _subscription: Option<SubscriptionGuard>,
    metrics: crate::metrics::Metrics,
    closing: tokio_util::sync::CancellationToken,
    workers: WorkerManager,
    events: tokio::sync::broadcast::Receiver<WorkerEvent>,
    /// Events not sent yet: the worker events of one change (a change may make several
    /// transitions) and the heartbeat that follows them.
    pending: std::collections::VecDeque<Queued>,
    ticker: tokio::time::Interval,
    first: Option<String>,
}

/// An event waiting to be sent.
enum Queued {
    /// Its text, made when it was queued.
    Text(String),
    /// A heartbeat, made when it is sent: the change events before it go out first (a
    /// heartbeat reads every worker's figures), and a burst of changes queues one, which
    /// says how things are when it leaves.
    Heartbeat,
}

impl Reader {
    /// The next event's text; `None` once the lifecycle has ended (the hive is stopping).
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.pending.pop_front() {
            Some(Queued::Text(text)) => return Some(text),
            Some(Queued::Heartbeat) => {
                return Some(sse("heartbeat", &heartbeat(&self.hive, &self.workers)));
            }
            None => {}
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
                        let mut events = named.map(|change| {
                            sse("worker", &json!({"change": change, "worker": worker}))
                        });
                        let first = events.next();
                        self.pending.extend(events.map(Queued::Text));
                        self.queue_heartbeat();
                        return first;
                    }
                    Ok(WorkerEvent::Removed { id }) => {
                        self.queue_heartbeat();
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
                _ = self.ticker.tick() => {
                    self.queue_heartbeat();
                    return Some(sse("telemetry", &telemetry(&self.workers)));
                }
            }
        }
    }

    /// Queues a heartbeat after what is queued, unless one is waiting already (it will be
    /// made when it leaves, so it shows this change too).
    fn queue_heartbeat(&mut self) {
        if !matches!(self.pending.back(), Some(Queued::Heartbeat)) {
            self.pending.push_back(Queued::Heartbeat);
        }
    }
}

/// What a heartbeat says of the hive itself (fixed while it serves).
struct HiveInfo {
    id: String,
    hostname: String,
    port: u16,
}

impl HiveInfo {
    fn of(state: &AppState) -> Self {
        Self {
            id: state.config.current().effective_hive_id().to_owned(),
            hostname: crate::config::hostname().unwrap_or_else(|| "localhost".to_owned()),
            port: state.listening.port(),
        }
    }
}

/// Today's queen's telemetry message (PROTOCOL §9): what its `HiveHeartbeatEvent::Telemetry`
/// (`bin/10_queen_rbee/src/hive_subscriber.rs`) parses, with `hive_info` as its `HiveInfo`
/// (`hive-contract`). Typed so that every field has the JSON type the queen requires.
#[derive(Debug, Serialize)]
struct QueenTelemetry<'a> {
    /// The queen's tag: `"telemetry"`.
    r#type: &'static str,
    hive_id: &'a str,
    hive_info: QueenHiveInfo<'a>,
    /// RFC 3339, seconds, `Z`.
    timestamp: String,
    workers: Vec<QueenWorker>,
}

/// `HiveInfo` of `hive-contract` (`operational_status` and `health_status` are its enums'
/// lowercase names).
#[derive(Debug, Serialize)]
struct QueenHiveInfo<'a> {
    id: &'a str,
    hostname: &'a str,
    port: u16,
    operational_status: &'static str,
    health_status: &'static str,
    version: &'static str,
}

/// `ProcessStats` of the upstream's monitor crate, field for field and type for type, plus
/// two fields of ours that its parser ignores (`worker_id`, `state`).
#[derive(Debug, Serialize)]
struct QueenWorker {
    pid: u32,
    /// The worker type.
    group: String,
    /// The worker's port: the queen's scheduler sends inference to `localhost:{instance}`.
    instance: String,
    cpu_pct: f64,
    /// Whole MiB, as the upstream's `memory.current / 1024 / 1024`.
    rss_mb: u64,
    io_r_mb_s: f64,
    io_w_mb_s: f64,
    uptime_s: u64,
    gpu_util_pct: f64,
    vram_mb: u64,
    total_vram_mb: u64,
    model: Option<String>,
    worker_id: String,
    state: &'static str,
}

/// A MiB figure as the whole number the queen's `u64` fields take.
fn whole_mib(mib: f64) -> u64 {
    mib.max(0.0) as u64
}

/// Today's queen's telemetry message: every worker whose process runs, each field measured;
/// GPU figures are the driver's, 0 where it reports none (a CPU worker, no GPU).
fn heartbeat(hive: &HiveInfo, workers: &WorkerManager) -> Value {
    let message = QueenTelemetry {
        r#type: "telemetry",
        hive_id: &hive.id,
        hive_info: QueenHiveInfo {
            id: &hive.id,
            hostname: &hive.hostname,
            port: hive.port,
            operational_status: "ready",
            health_status: "healthy",
            version: env!("CARGO_PKG_VERSION"),
        },
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        workers: workers
            .running_with_stats()
            .into_iter()
            .map(|(record, stats)| QueenWorker {
                pid: record.pid,
                instance: record.port.to_string(),
                cpu_pct: stats.cpu_pct,
                rss_mb: whole_mib(stats.rss_mb),
                io_r_mb_s: stats.io_r_mb_s,
                io_w_mb_s: stats.io_w_mb_s,
                uptime_s: stats.uptime_s,
                gpu_util_pct: stats.gpu_util_pct.unwrap_or(0.0),
                vram_mb: stats.vram_mb.map_or(0, |mib| whole_mib(mib.round())),
                total_vram_mb: stats.total_vram_mb.map_or(0, |mib| whole_mib(mib.round())),
                model: Some(record.model_id.clone()),
                state: record.status.label(),
                group: record.worker_type,
                worker_id: record.id,
            })
            .collect(),
    };
    serde_json::to_value(&message).unwrap_or_default()
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
