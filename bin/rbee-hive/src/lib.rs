//! rbee-hive: the worker manager daemon of an rbee cluster.
//!
//! Clients submit operations as jobs (`POST /v1/jobs`) and read each job's narration as
//! Server-Sent Events. The job router hands each operation to the worker lifecycle.
//!
//! [`run`] serves a bound listener until the shutdown future resolves, then shuts down in a
//! fixed order: stop accepting; end every running job (its stream gets its terminal lines);
//! wait for open connections to finish (bounded); apply the worker shutdown policy (stop
//! every worker, or keep them); exit.
//!
//! The machine's GPUs and CPU (`/capabilities`, the devices a spawn may name) and the GPU
//! memory of each worker come from the `devices` crate, made here from the config.
//!
//! # Layout
//! - [`config`]: flags, environment and config file, merged.
//! - [`http`]: routes, token check, error mapping, streams.
//! - [`jobs`]: the router of the operations (`hive-api`), one file per operation.
//! - [`metrics`]: the Prometheus / OpenMetrics `/metrics`.
//! - [`queen`]: registration with today's rbee queen, and its subscriptions.
//! - [`reload`]: SIGHUP re-reads the config and applies what may change while serving.
//! - [`service`]: systemd notify, watchdog and socket activation.
//! - [`shutdown`]: the SIGTERM/SIGINT future.
//!
//! The command line (the daemon's flags, the client commands, the demo worker mode) is the
//! `hive-cli` crate; `main.rs` dispatches what it parses.

pub mod config;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod queen;
pub mod reload;
pub mod service;
pub mod shutdown;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use job_server::{JobStore, JobStoreConfig};
use worker_lifecycle::{LifecycleConfig, LifecycleError, WorkerManager};

use crate::config::{Config, ConfigError, LiveConfig, ShutdownPolicy};
use crate::jobs::router::OperationServices;

pub use http::app;

/// Everything a request handler needs. A cheap `Clone`.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in effect (a reload replaces it).
    pub config: LiveConfig,
    /// The hive's jobs.
    pub jobs: JobStore,
    /// What operations act on.
    pub services: OperationServices,
    /// The hive's metrics.
    pub metrics: metrics::Metrics,
    /// The machine's GPUs and CPU (`/capabilities`).
    pub devices: Arc<devices::Devices>,
    /// Cancelled when the shutdown begins: open telemetry streams end.
    pub closing: tokio_util::sync::CancellationToken,
    /// The registrations with queens (PROTOCOL §9).
    pub queen: queen::QueenLink,
    /// The address the hive serves at.
    pub listening: std::net::SocketAddr,
}

impl AppState {
    /// A fresh hive state for a hive serving at `listening` (workers and queens are told
    /// where to reach it from that and `advertise_url`). Must be called within a Tokio
    /// runtime.
    pub fn new(config: Config, listening: std::net::SocketAddr) -> Result<Self, HiveError> {
        let urls = config.hive_urls(listening);
        let jobs = JobStore::new(JobStoreConfig {
            retention: config.job_retention(),
            max_finished: config.max_finished_jobs,
            event_buffer: config.job_event_buffer,
        });
        let devices = Arc::new(devices::Devices::new(devices::DeviceConfig {
            gpu_source: config.gpu_source,
            nvml_library: config.nvml_library.clone(),
            nvidia_smi: config.nvidia_smi.clone(),
        }));
        let workers = WorkerManager::new(LifecycleConfig {
            state_dir: config.state_dir.clone(),
            ports: config.worker_port_range()?,
            stop_grace: config.stop_grace(),
            hive_url: urls.for_workers,
            queen_url: config.queen_url.clone(),
            worker_types: config.workers.clone(),
            llama_server: config.llama_server.clone(),
            // The built-in `demo` type runs this very executable in its demo-worker mode,
            // so the quick start needs no second build.
            demo_worker: std::env::current_exe()
                .ok()
                .filter(|exe| exe.file_name().is_some_and(|name| name == "rbee-hive"))
                .map(|exe| vec![exe.display().to_string(), "demo-worker".to_owned()]),
            devices: devices.clone(),
            logs: config.worker_log_retention(),
            stats_interval: Duration::from_millis(config.telemetry_interval_ms),
            gpu_usage: Some(devices.clone()),
            event_buffer: config.telemetry_event_buffer,
        })?;
        let models = catalog::ModelCatalog::new(&config.catalog_dir);
        let downloads = catalog::Downloader::new(
            models.clone(),
            catalog::DownloaderConfig {
                hub_endpoint: config.hf_endpoint_url()?,
                hub_token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
                stall_timeout: Duration::from_secs(config.download_stall_timeout_s),
                user_agent: format!("rbee-hive/{}", env!("CARGO_PKG_VERSION")),
            },
        )?;
        let worker_binaries = catalog::WorkerCatalog::new(&config.catalog_dir);
        let worker_installer = catalog::WorkerInstaller::new(
            worker_binaries.clone(),
            config.worker_catalog_url()?,
            &format!("rbee-hive/{}", env!("CARGO_PKG_VERSION")),
        )?;
        let live = LiveConfig::new(config.clone());
        let operations: Vec<&str> = <jobs::OperationKind as strum::VariantArray>::VARIANTS
            .iter()
            .map(|kind| kind.name())
            .collect();
        let metrics = metrics::Metrics::new(&operations);
        tokio::spawn(metrics.clone().follow_workers(workers.clone()));
        let closing = tokio_util::sync::CancellationToken::new();
        let queen = queen::QueenLink::new(
            config.effective_hive_id().to_owned(),
            config.state_dir.clone(),
            urls.for_queen,
            live.clone(),
            metrics.clone(),
            closing.clone(),
        );
        let services = OperationServices {
            workers,
            worker_binaries,
            worker_installer,
            models,
            downloads,
            gpu: Some(devices.clone()),
            // The same handle as the state's: a reload is seen by the jobs too.
            config: live.clone(),
            devices: devices.clone(),
            queen: queen.clone(),
        };
        Ok(Self {
            config: live,
            jobs,
            services,
            metrics,
            devices,
            closing,
            queen,
            listening,
        })
    }
}

/// Why the hive could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HiveError {
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The worker lifecycle could not start (state dir, worker types).
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The downloader could not start.
    #[error(transparent)]
    Download(#[from] catalog::DownloadError),
    /// The worker installer could not be made (its HTTP client).
    #[error(transparent)]
    Install(#[from] catalog::InstallError),
}

/// A hive ready to serve: its listener bound, its state dir locked, its workers adopted.
pub struct Hive {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Hive {
    /// Prepares a hive on a bound listener: locks the state dir, reads the state file back
    /// and adopts the recorded workers. Nothing is served yet.
    pub fn start(listener: tokio::net::TcpListener, config: Config) -> Result<Self, HiveError> {
        let state = AppState::new(config, listener.local_addr()?)?;
        Ok(Self { listener, state })
    }

    /// What reloads its configuration while it serves.
    pub fn reloader(&self) -> std::io::Result<reload::Reloader> {
        Ok(reload::Reloader::new(
            self.state.clone(),
            self.listener.local_addr()?.ip(),
        ))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then shuts down in order; if `force` resolves
    /// during the shutdown, workers still stopping are killed without more grace.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        force: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HiveError> {
        let Self { listener, state } = self;
        serve(listener, state, shutdown, force).await
    }
}

/// Raises the soft limit of open files to the hard limit (a hive holds a socket per client,
/// a log and a pidfd per worker); returns the soft limit in effect.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {error}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(error) => {
            tracing::warn!("cannot read the open-file limit: {error}");
            1024
        }
    }
}

/// [`Hive::start`] then [`Hive::serve`].
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    force: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HiveError> {
    Hive::start(listener, config)?.serve(shutdown, force).await
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    force: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HiveError> {
    let workers = state.services.workers.clone();
    let live_config = state.config.clone();
    let jobs = state.jobs.clone();
    let jobs_for_tasks = state.jobs.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    // A second signal during the shutdown (`force`) cuts every stop short, those under way
    // (a delete's) and those still to come (the shutdown's own), whatever phase the
    // shutdown is in.
    let (shutting_down_tx, shutting_down_rx) = tokio::sync::oneshot::channel::<()>();
    let hurry = workers.clone();
    let force_watch = tokio::spawn(async move {
        if shutting_down_rx.await.is_err() {
            return;
        }
        force.await;
        tracing::warn!(
            "second signal: killing the workers still stopping without waiting for their grace"
        );
        hurry.hurry_all();
    });
    let closing = state.closing.clone();
    let hold_restarts = workers.clone();
    let server_shutdown = tokio_util::sync::CancellationToken::new();
    let begin_shutdown = server_shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Not one more worker is started, whichever the shutdown policy.
        hold_restarts.hold_restarts();
        service::stopping();
        let _ = shutting_down_tx.send(());
        let cancelled = jobs.begin_shutdown();
        closing.cancel();
        tracing::info!("shutting down: stopped accepting, cancelled {cancelled} running job(s)");
        begin_shutdown.cancel();
        let _ = draining_tx.send(());
    });
    let limits = live_config.current().connection_limits(raise_fd_limit());
    tracing::info!(
        "connections: at most {}; header timeout {:?}, idle keep-alive timeout {:?}",
        limits.max_connections,
        limits.header_timeout,
        limits.idle_timeout
    );
    let abort_connections = tokio_util::sync::CancellationToken::new();
    let server = http::server::serve(
        listener,
        app(state.clone()),
        limits,
        server_shutdown,
        abort_connections.clone(),
    );
    // The state file is read, the workers adopted, the socket listens: ready.
    let service_tasks = tokio_util::sync::CancellationToken::new();
    service::spawn_watchdog(service_tasks.clone());
    service::spawn_status(workers.clone(), state.closing.clone());
    service::ready(&workers);
    if let Some(queen_url) = live_config.current().queen_url.clone()
        && let Err(why) = state.queen.add(&queen_url, true)
    {
        tracing::warn!("not registering with the queen at {queen_url}: {why}");
    }
    state.queen.serving();
    // Read when the shutdown begins: a reload may have changed them.
    let drain = || Duration::from_secs(live_config.current().shutdown_drain_s);
    let drain_deadline = async {
        if draining_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain()).await;
    };
    tokio::select! {
        () = server => {},
        _ = drain_deadline => {
            tracing::warn!("connections still open {:?} after shutdown began; closing them", drain());
            abort_connections.cancel();
        }
    }
    // Running jobs were cancelled when shutdown began; once their tasks have ended, every
    // spawn they abandoned has asked for its worker to be stopped.
    jobs_for_tasks.wait_for_tasks().await;
    match live_config.current().on_shutdown {
        ShutdownPolicy::Stop => {
            let stopped = workers.stop_all().await;
            tracing::info!("stopped {stopped} worker(s)");
        }
        ShutdownPolicy::Keep => {
            // A stop that has begun (a delete, a cancelled spawn) finishes before exit;
            // every other worker is left running.
            let finished = workers.settle().await;
            tracing::info!(
                "finished {finished} stop(s) under way; leaving {} worker(s) running for the next hive to adopt (on_shutdown = \"keep\")",
                workers.len()
            );
        }
    }
    force_watch.abort();
    if let Err(error) = workers.flush().await {
        tracing::error!("the last state of the workers is not on disk: {error}");
    }
    drop(state);
    service_tasks.cancel();
    tracing::info!("rbee-hive stopped");
    Ok(())
}
