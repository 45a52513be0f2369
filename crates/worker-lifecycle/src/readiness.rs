//! Readiness: a worker is `Starting` until `GET http://127.0.0.1:{port}{health_path}`
//! answers 2xx **from a socket that a process of its own group holds**, then `Ready`.
//!
//! A worker tells no one when it starts listening, so the hive asks: at once, then after
//! 2 ms, then at an interval growing by half each time up to 100 ms, so fast workers are
//! seen ready within a few milliseconds and slow ones cost little. A 503 (llama-server
//! while it loads a model) or a refused connection means "still starting". An answer from
//! a socket held by another program (another hive's worker on the same port) does not
//! count: probing goes on, and a timeout then says who holds the port. The supervisor owns
//! the probe: it drops it the moment the worker exits or a stop begins.

use std::time::Duration;

use tokio::time::Instant;

use crate::process;
use crate::record::WorkerHealth;

const FIRST_DELAY: Duration = Duration::from_millis(2);
const MAX_DELAY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe found out.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Healthy, from a socket of the worker's own group.
    Ready,
    /// Not ready within the timeout; `detail` says who answered instead, if anyone did.
    TimedOut {
        /// Who holds the port, when a health check was answered by someone else.
        detail: Option<String>,
    },
    /// The one health check of an adopted worker.
    Health(WorkerHealth),
}

/// Where and how to probe one worker.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    /// The HTTP client (no idle connections kept: each probe is a fresh connection).
    pub(crate) http: reqwest::Client,
    /// `http://127.0.0.1:{port}{health_path}`.
    pub(crate) url: String,
    /// The worker's port.
    pub(crate) port: u16,
    /// The worker's process group.
    pub(crate) pgid: u32,
}

impl ProbeTarget {
    /// Whether the health check answers 2xx from a socket of the worker's group; `Err`
    /// names who answered instead.
    async fn check(&self, deadline: Instant) -> Result<bool, String> {
        let answer = tokio::time::timeout_at(
            deadline.min(Instant::now() + PROBE_TIMEOUT),
            self.http.get(&self.url).send(),
        )
        .await;
        match answer {
            Ok(Ok(response)) if response.status().is_success() => {
                // `/proc` scans: off the runtime's threads.
                let (port, pgid) = (self.port, self.pgid);
                match tokio::task::spawn_blocking(move || {
                    process::listener_is_held_by_group(port, pgid)
                })
                .await
                {
                    Ok(proof) => proof.map(|()| true),
                    // The runtime is shutting down: nothing is proven either way.
                    Err(_) => Ok(false),
                }
            }
            _ => Ok(false),
        }
    }
}

/// Probes until the worker is proven healthy or `timeout` passes.
pub(crate) async fn until_ready(target: ProbeTarget, timeout: Duration) -> Probe {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    let mut impostor: Option<String> = None;
    loop {
        match target.check(deadline).await {
            Ok(true) => return Probe::Ready,
            Ok(false) => {}
            Err(who) => {
                if impostor.as_deref() != Some(who.as_str()) {
                    tracing::warn!(url = %target.url, "a health check was answered, but not by the worker: {who}");
                }
                impostor = Some(who);
            }
        }
        if Instant::now() >= deadline {
            return Probe::TimedOut { detail: impostor };
        }
        tokio::time::sleep_until((Instant::now() + delay).min(deadline)).await;
        delay = (delay * 3 / 2).min(MAX_DELAY);
    }
}

/// After a restart: asks an adopted `Ready`/`Busy` worker for its health once. A worker
/// that does not answer, or whose port someone else answers, is marked degraded, not
/// stopped.
pub(crate) async fn check_adopted(target: ProbeTarget) -> Probe {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let health = match target.check(deadline).await {
        Ok(true) => WorkerHealth::Healthy,
        Ok(false) => {
            tracing::warn!(
                "adopted worker does not answer {}; marked degraded",
                target.url
            );
            WorkerHealth::Degraded
        }
        Err(who) => {
            tracing::warn!(
                "adopted worker's {} is answered by someone else ({who}); marked degraded",
                target.url
            );
            WorkerHealth::Degraded
        }
    };
    Probe::Health(health)
}
