//! Readiness: a worker is `Starting` until `GET http://127.0.0.1:{port}{health_path}`
//! answers 2xx, then `Ready`.
//!
//! A worker tells no one when it starts listening, so the hive asks: first after 2 ms, then
//! at a growing interval capped at 100 ms, so fast workers are seen ready within a few
//! milliseconds and slow ones cost little. A 503 (llama-server while it loads a model) or a
//! refused connection means "still starting". The process exiting, or any status change,
//! ends the wait at once (the supervisor's channels wake it). Past the ready timeout the
//! worker is stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::record::WorkerStatus;
use crate::registry::WorkerSlot;
use crate::supervisor::{ProcessPhase, StopReason};

const FIRST_DELAY: Duration = Duration::from_millis(2);
const MAX_DELAY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes the worker until it is healthy, stops it at the timeout, or returns when it
/// leaves `Starting` for any other reason.
pub(crate) async fn await_healthy(
    slot: Arc<WorkerSlot>,
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    grace: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    let mut process = slot.watch_process();
    let mut record = slot.watch_record();
    loop {
        if record.borrow_and_update().status != WorkerStatus::Starting
            || process.borrow_and_update().phase != ProcessPhase::Running
        {
            return;
        }
        let probe = tokio::time::timeout_at(
            deadline.min(Instant::now() + PROBE_TIMEOUT),
            http.get(&url).send(),
        );
        if let Ok(Ok(response)) = probe.await
            && response.status().is_success()
        {
            if slot.set_status(WorkerStatus::Ready) {
                tracing::info!(worker = %slot.id(), "ready: {url} answered {}", response.status());
            }
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(worker = %slot.id(), "not ready within {timeout:?}; stopping it");
            slot.request_stop(grace, StopReason::ReadyTimeout, false);
            return;
        }
        let wake = (Instant::now() + delay).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = process.changed() => {}
            _ = record.changed() => {}
        }
        delay = (delay * 3 / 2).min(MAX_DELAY);
    }
}

/// After a restart: asks an adopted `Ready`/`Busy` worker for its health once and records
/// what it says (a worker that does not answer is marked degraded, not stopped).
pub(crate) async fn check_adopted(slot: Arc<WorkerSlot>, http: reqwest::Client, url: String) {
    let healthy = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, http.get(&url).send()).await,
        Ok(Ok(response)) if response.status().is_success()
    );
    if !healthy {
        tracing::warn!(worker = %slot.id(), "adopted worker does not answer {url}; marked degraded");
    }
    slot.update(|record| {
        record.health = Some(if healthy {
            crate::record::WorkerHealth::Healthy
        } else {
            crate::record::WorkerHealth::Degraded
        });
    });
}
