//! `GET /metrics`: Prometheus / OpenMetrics text (`prometheus-client`).
//!
//! Event metrics (jobs by operation and outcome, job durations, spawn-to-ready and stop
//! durations, SIGKILLs needed, worker exits by reason, stream gaps) are counted as things
//! happen: jobs by the HTTP layer, worker events by a task that follows the lifecycle's
//! event stream. State metrics (workers by state and type, each listed worker's memory and
//! CPU from the sampler, the hive's own process) are read at scrape time, so their labels
//! are bounded by the workers listed now.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use worker_lifecycle::{WorkerEvent, WorkerManager, WorkerTransition};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerTypeLabel {
    worker_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
    worker_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker_id: String,
    worker_type: String,
    device: String,
}

/// 1 ms to about 17 minutes, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 21))
}

/// The hive's event metrics. A cheap `Clone` handle (the metrics share their state).
#[derive(Clone)]
pub struct Metrics {
    jobs: Family<JobLabels, Counter>,
    job_seconds: Family<OperationLabel, Histogram>,
    spawn_ready_seconds: Histogram,
    stop_seconds: Histogram,
    sigkills: Counter,
    exits: Family<ExitLabels, Counter>,
    restarts: Family<WorkerTypeLabel, Counter>,
    crash_loops: Family<WorkerTypeLabel, Counter>,
    stream_gaps: Counter,
    missed_worker_events: Counter,
    reloads: Family<OutcomeLabel, Counter>,
    queen_registrations: Family<OutcomeLabel, Counter>,
    queen_subscriptions: Gauge,
}

/// The states of `rbee_hive_workers`, as `WorkerStatus::label` names them.
const WORKER_STATES: &[&str] = &["starting", "ready", "busy", "stopped", "failed"];

/// The outcomes of `rbee_hive_jobs_total`.
const JOB_OUTCOMES: &[&str] = &["succeeded", "failed", "cancelled"];

/// The reasons of `rbee_hive_worker_exits_total`.
const EXIT_REASONS: &[&str] = &["exit_code_0", "exit_code_nonzero", "signal", "unknown"];

/// The outcomes of `rbee_hive_config_reloads_total`.
const RELOAD_OUTCOMES: &[&str] = &["applied", "refused"];

/// The outcomes of `rbee_hive_queen_registrations_total`.
const REGISTRATION_OUTCOMES: &[&str] = &["ok", "failed"];

impl Metrics {
    /// The hive's metrics, with every counter whose labels are known up front at 0 (jobs
    /// by each of `operations` and outcome, exits by reason, reloads by outcome): a series
    /// that appears only at its first event breaks `rate()` and alerts.
    pub fn new(operations: &[&str]) -> Self {
        let metrics = Self::default();
        for operation in operations {
            for outcome in JOB_OUTCOMES {
                let _ = metrics.jobs.get_or_create(&JobLabels {
                    operation: (*operation).to_owned(),
                    outcome: (*outcome).to_owned(),
                });
            }
        }
        for reason in EXIT_REASONS {
            let _ = metrics.exits.get_or_create(&ExitLabels {
                reason: (*reason).to_owned(),
            });
        }
        for outcome in RELOAD_OUTCOMES {
            let _ = metrics.reloads.get_or_create(&OutcomeLabel {
                outcome: (*outcome).to_owned(),
            });
        }
        for outcome in REGISTRATION_OUTCOMES {
            let _ = metrics.queen_registrations.get_or_create(&OutcomeLabel {
                outcome: (*outcome).to_owned(),
            });
        }
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            jobs: Family::default(),
            job_seconds: Family::new_with_constructor(duration_histogram),
            spawn_ready_seconds: duration_histogram(),
            stop_seconds: duration_histogram(),
            sigkills: Counter::default(),
            exits: Family::default(),
            restarts: Family::default(),
            crash_loops: Family::default(),
            stream_gaps: Counter::default(),
            missed_worker_events: Counter::default(),
            reloads: Family::default(),
            queen_registrations: Family::default(),
            queen_subscriptions: Gauge::default(),
        }
    }
}

/// Counts a job when it ends; a job whose future is dropped before (cancelled, or ended by
/// the shutdown) counts as `cancelled`.
pub struct JobTimer {
    metrics: Metrics,
    operation: String,
    started: Instant,
    outcome: Option<&'static str>,
}

impl JobTimer {
    /// Records the outcome (`succeeded` or `failed`).
    pub fn finish(mut self, succeeded: bool) {
        self.outcome = Some(if succeeded { "succeeded" } else { "failed" });
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        self.metrics
            .jobs
            .get_or_create(&JobLabels {
                operation: self.operation.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.metrics
            .job_seconds
            .get_or_create(&OperationLabel {
                operation: self.operation.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Starts timing a job of `operation`.
    pub fn job(&self, operation: &str) -> JobTimer {
        JobTimer {
            metrics: self.clone(),
            operation: operation.to_owned(),
            started: Instant::now(),
            outcome: None,
        }
    }

    /// A config reload, `applied` or `refused`.
    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A registration with a queen, `ok` or `failed`.
    pub fn queen_registration(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.queen_registrations
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The gauge of queen subscriptions open now (the registration module moves it).
    pub fn queen_subscriptions(&self) -> &Gauge {
        &self.queen_subscriptions
    }

    /// A reader fell behind and missed narration lines.
    pub fn stream_gap(&self) {
        self.stream_gaps.inc();
    }

    /// Follows the workers' events until the lifecycle ends, counting what happens to them.
    pub async fn follow_workers(self, workers: WorkerManager) {
        use tokio::sync::broadcast::error::RecvError;
        let mut events = workers.subscribe();
        loop {
            match events.recv().await {
                Ok(WorkerEvent::Changed {
                    transitions,
                    record,
                }) => {
                    for transition in &transitions {
                        self.count(transition, &record.worker_type);
                    }
                }
                Ok(WorkerEvent::Removed { .. }) => {}
                Err(RecvError::Lagged(missed)) => {
                    self.missed_worker_events.inc_by(missed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn count(&self, transition: &WorkerTransition, worker_type: &str) {
        let worker_type = || WorkerTypeLabel {
            worker_type: worker_type.to_owned(),
        };
        match transition {
            WorkerTransition::Ready { spawn_to_ready } => {
                if let Some(took) = spawn_to_ready {
                    self.spawn_ready_seconds.observe(took.as_secs_f64());
                }
            }
            WorkerTransition::Killed => {
                self.sigkills.inc();
            }
            WorkerTransition::Exited { exit } => {
                let reason = match (exit.code, exit.signal) {
                    (Some(0), _) => "exit_code_0",
                    (Some(_), _) => "exit_code_nonzero",
                    (None, Some(_)) => "signal",
                    (None, None) => "unknown",
                };
                self.exits
                    .get_or_create(&ExitLabels {
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
            WorkerTransition::Gone { stop_took } => {
                if let Some(took) = stop_took {
                    self.stop_seconds.observe(took.as_secs_f64());
                }
            }
            WorkerTransition::Restarted { .. } => {
                self.restarts.get_or_create(&worker_type()).inc();
            }
            WorkerTransition::CrashLoop => {
                self.crash_loops.get_or_create(&worker_type()).inc();
            }
            WorkerTransition::Spawned
            | WorkerTransition::Busy
            | WorkerTransition::Stopping { .. }
            | WorkerTransition::Restarting { .. }
            | WorkerTransition::RestartAbandoned => {}
        }
    }

    /// The OpenMetrics text of a scrape now.
    pub fn render(&self, workers: &WorkerManager) -> String {
        let mut registry = Registry::with_prefix("rbee_hive");
        registry.register(
            "jobs",
            "Jobs ended, by operation and outcome",
            self.jobs.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "Time from a job's start to its end",
            Unit::Seconds,
            self.job_seconds.clone(),
        );
        registry.register_with_unit(
            "worker_spawn_to_ready",
            "Time from a worker's start to its readiness",
            Unit::Seconds,
            self.spawn_ready_seconds.clone(),
        );
        registry.register_with_unit(
            "worker_stop_duration",
            "Time from a stop's request to its end (the whole process group gone)",
            Unit::Seconds,
            self.stop_seconds.clone(),
        );
        registry.register(
            "worker_sigkills",
            "Stops that needed SIGKILL",
            self.sigkills.clone(),
        );
        registry.register(
            "worker_exits",
            "Worker exits, by reason",
            self.exits.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers started again after a failure (their type's `restart = \"on-failure\"`), by worker type",
            self.restarts.clone(),
        );
        registry.register(
            "worker_crash_loops",
            "Workers left failed because they failed more than `max_restarts` times in `restart_window_s`, by worker type",
            self.crash_loops.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP), by outcome: applied, or refused (the old config stays)",
            self.reloads.clone(),
        );
        registry.register(
            "queen_registrations",
            "Registrations with a queen (POST /v1/hive/ready), by outcome",
            self.queen_registrations.clone(),
        );
        registry.register(
            "queen_subscriptions",
            "Queen subscriptions to the telemetry stream open now",
            self.queen_subscriptions.clone(),
        );
        registry.register(
            "stream_gaps",
            "Times a reader of a job stream or the telemetry stream fell behind and missed lines or events",
            self.stream_gaps.clone(),
        );
        registry.register(
            "missed_worker_events",
            "Worker events the metrics missed (they fell behind)",
            self.missed_worker_events.clone(),
        );

        let by_state: Family<StateLabels, Gauge> = Family::default();
        let rss: Family<WorkerLabels, Gauge<f64, AtomicU64>> = Family::default();
        let cpu: Family<WorkerLabels, Gauge<f64, AtomicU64>> = Family::default();
        let vram: Family<WorkerLabels, Gauge<f64, AtomicU64>> = Family::default();
        // Every state of every type, at 0 where no worker is: a dashboard or an alert on
        // `state="failed"` needs a 0, not a missing series.
        let worker_types = workers.worker_type_names();
        for worker_type in &worker_types {
            for state in WORKER_STATES {
                let _ = by_state.get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                    worker_type: worker_type.clone(),
                });
            }
            let label = WorkerTypeLabel {
                worker_type: worker_type.clone(),
            };
            let _ = self.restarts.get_or_create(&label);
            let _ = self.crash_loops.get_or_create(&label);
        }
        let stats = workers.all_stats();
        for record in workers.list() {
            by_state
                .get_or_create(&StateLabels {
                    state: record.status.label().to_owned(),
                    worker_type: record.worker_type.clone(),
                })
                .inc();
            if let Some(stats) = stats.get(&record.id) {
                let labels = WorkerLabels {
                    worker_id: record.id.clone(),
                    worker_type: record.worker_type.clone(),
                    device: record.device.clone(),
                };
                rss.get_or_create(&labels)
                    .set(stats.rss_mb * 1024.0 * 1024.0);
                cpu.get_or_create(&labels).set(stats.cpu_pct / 100.0);
                if let Some(mb) = stats.vram_mb {
                    vram.get_or_create(&labels).set(mb * 1024.0 * 1024.0);
                }
            }
        }
        registry.register("workers", "Listed workers, by state and type", by_state);
        registry.register_with_unit(
            "worker_resident_memory",
            "Resident memory of a worker's whole process group",
            Unit::Bytes,
            rss,
        );
        registry.register(
            "worker_cpu_cores",
            "CPU use of a worker's whole process group over the last sample interval, in cores",
            cpu,
        );
        registry.register_with_unit(
            "worker_gpu_memory",
            "GPU memory held by a worker's process group (GPU workers, as the driver reports it)",
            Unit::Bytes,
            vram,
        );
        register_process_metrics(&mut registry);

        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The hive's own process, as Prometheus client libraries name these metrics (read through
/// the `procfs` crate, like every other read of `/proc`).
fn register_process_metrics(registry: &mut Registry) {
    let Ok(myself) = procfs::process::Process::myself() else {
        return;
    };
    let Ok(stat) = myself.stat() else {
        return;
    };
    let ticks = procfs::ticks_per_second() as f64;
    let cpu: Counter<f64, AtomicU64> = Counter::default();
    cpu.inc_by((stat.utime + stat.stime) as f64 / ticks);
    registry.register_with_unit(
        "process_cpu",
        "CPU time of the hive process",
        Unit::Seconds,
        cpu,
    );
    let gauge = |value: f64| {
        let gauge: Gauge<f64, AtomicU64> = Gauge::default();
        gauge.set(value);
        gauge
    };
    registry.register_with_unit(
        "process_resident_memory",
        "Resident memory of the hive process",
        Unit::Bytes,
        gauge((stat.rss * procfs::page_size()) as f64),
    );
    registry.register(
        "process_threads",
        "Threads of the hive process",
        gauge(stat.num_threads as f64),
    );
    let open_fds = myself.fd_count().unwrap_or(0) as f64;
    registry.register(
        "process_open_fds",
        "Open file descriptors of the hive process",
        gauge(open_fds),
    );
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    registry.register_with_unit(
        "process_start_time",
        "Start time of the hive process since the Unix epoch",
        Unit::Seconds,
        gauge(boot + stat.starttime as f64 / ticks),
    );
}
