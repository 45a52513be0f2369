//! rbee-hive: the worker manager daemon of an rbee cluster.
//!
//! Clients submit operations as jobs (`POST /v1/jobs`) and read each job's narration as
//! Server-Sent Events. The job router hands each operation to the worker lifecycle.
//!
//! [`run`] serves a bound listener until the shutdown future resolves, then shuts down in a
//! fixed order: stop accepting; end every running job (its stream gets its terminal lines);
//! wait for open connections to finish (bounded); exit.
//!
//! # Layout
//! - [`config`]: flags, environment and config file, merged.
//! - [`http`]: routes, token check, error mapping, streams.
//! - [`jobs`]: the operation enum, its router, one file per operation.
//! - [`capabilities`]: GPU and CPU detection for `/capabilities`.
//! - [`shutdown`]: the SIGTERM/SIGINT future.

pub mod capabilities;
pub mod config;
pub mod http;
pub mod jobs;
pub mod shutdown;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use job_server::{JobStore, JobStoreConfig};
use worker_lifecycle::Registry;

use crate::config::Config;
use crate::jobs::router::OperationServices;

pub use http::app;

/// Everything a request handler needs. A cheap `Clone`.
#[derive(Clone)]
pub struct AppState {
    /// The merged configuration.
    pub config: Arc<Config>,
    /// The hive's jobs.
    pub jobs: JobStore,
    /// What operations act on.
    pub services: OperationServices,
}

impl AppState {
    /// A fresh hive state; must be called within a Tokio runtime.
    pub fn new(config: Config) -> Self {
        let jobs = JobStore::new(JobStoreConfig {
            retention: config.job_retention(),
            max_finished: config.max_finished_jobs,
            event_buffer: config.job_event_buffer,
        });
        let services = OperationServices {
            workers: Registry::new(),
        };
        Self {
            config: Arc::new(config),
            jobs,
            services,
        }
    }
}

/// Why the hive stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HiveError {
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves `listener` until `shutdown` resolves, then shuts down in order.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HiveError> {
    let state = AppState::new(config);
    let drain = Duration::from_secs(state.config.shutdown_drain_s);
    let jobs = state.jobs.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        let cancelled = jobs.begin_shutdown();
        tracing::info!("shutting down: stopped accepting, cancelled {cancelled} running job(s)");
        let _ = draining_tx.send(());
    });
    let drain_deadline = async move {
        if draining_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result?,
        _ = drain_deadline => {
            tracing::warn!("connections still open {drain:?} after shutdown began; closing them");
        }
    }
    tracing::info!("rbee-hive stopped");
    Ok(())
}
