//! `worker_spawn`: starts a worker process and waits until it is ready.
//!
//! The job ends only when the worker answers its health check from a socket of its own
//! process group, and that is on disk (or it fails to). While it waits it narrates progress
//! once a second. If the job is cancelled before the worker is
//! ready, the worker is stopped and removed (the lifecycle's `Spawning` handle does that
//! when dropped).

use std::time::Duration;

use catalog::CatalogId;
use job_server::JobContext;
use tokio::time::{Instant, MissedTickBehavior};
use worker_lifecycle::SpawnRequest;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// How often a long wait narrates its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Spawns a `worker` worker for `model` on device `device`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    model: &str,
    worker: &str,
    device: u32,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_spawn_start")
        .context(worker)
        .context(model)
        .context(device)
        .context(hive_id)
        .human("🚀 Spawning {} worker for model '{}' on device {} on hive '{}'")
        .emit_to(job);
    let model = match resolve_model(services, model, worker) {
        Ok(model) => model,
        Err(error) => return Err(spawn_error(job, error)),
    };
    let program = services.worker_binaries.binary_for(worker);
    if let Some(program) = &program {
        NARRATE
            .action("worker_spawn_binary")
            .context(program.display())
            .human("Worker binary from the catalog: {}")
            .emit_to(job);
    }
    let request = SpawnRequest {
        model,
        worker_type: worker.to_owned(),
        device_ordinal: device,
        program,
    };
    let started = Instant::now();
    let mut spawning = match services.workers.spawn(&request).await {
        Ok(spawning) => spawning,
        Err(error) => return Err(spawn_error(job, error.into())),
    };
    let record = match spawning.started().await {
        Ok(record) => record,
        Err(error) => return Err(spawn_error(job, error.into())),
    };
    NARRATE
        .action("worker_spawn_process")
        .context(&record.id)
        .context(record.pid)
        .context(record.port)
        .context(&record.device)
        .field("worker_id", &record.id)
        .field("pid", record.pid)
        .field("port", record.port)
        .human("Started {}: PID {} on port {}, device {}")
        .emit_to(job);
    NARRATE
        .action("worker_spawn_command")
        .context(record.command.join(" "))
        .context(record.log_path.display())
        .human("Command: {} (output: {})")
        .emit_to(job);

    let mut progress = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    progress.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let outcome = loop {
        tokio::select! {
            outcome = spawning.ready() => break outcome,
            _ = progress.tick() => {
                NARRATE
                    .action("worker_spawn_waiting")
                    .context(&record.id)
                    .context(format!("{:.1}", started.elapsed().as_secs_f64()))
                    .context(format!("{:.0}", spawning.ready_timeout.as_secs_f64()))
                    .human("⏳ Waiting for {} to become ready: {}s of {}s")
                    .emit_to(job);
            }
        }
    };
    match outcome {
        Ok(ready) => {
            let elapsed_ms = started.elapsed().as_millis();
            NARRATE
                .action("worker_spawn_ready")
                .context(&ready.id)
                .context(ready.pid)
                .context(ready.port)
                .context(elapsed_ms)
                .field("worker_id", &ready.id)
                .field("ready_ms", elapsed_ms)
                .human("✅ Worker ready: {} | PID {} | port {} ({} ms)")
                .emit_to(job);
            job.publish_result(&ready);
            Ok(())
        }
        Err(error) => Err(spawn_error(job, error.into())),
    }
}

/// What the worker is given as `{model}`: for a type that takes a file, a catalog id
/// becomes its model file, and a name that is neither an id nor a path is refused with the
/// catalog's ids; other types get the model as given (a catalog id stays an id).
fn resolve_model(
    services: &OperationServices,
    model: &str,
    worker: &str,
) -> Result<String, OperationFailure> {
    let Ok(takes_path) = services.workers.model_is_path(worker) else {
        // An unknown type: the lifecycle's refusal names the known ones.
        return Ok(model.to_owned());
    };
    if !takes_path {
        return Ok(model.to_owned());
    }
    let catalog = &services.models;
    match CatalogId::parse(model) {
        Ok(id) if catalog.contains(&id) => Ok(catalog.model_file(&id)?.display().to_string()),
        _ if model.contains('/') => Ok(model.to_owned()),
        _ => {
            let ids: Vec<String> = catalog
                .list()
                .unwrap_or_default()
                .into_iter()
                .map(|entry| entry.artifact.id)
                .collect();
            Err(OperationFailure::UnknownModel {
                model: model.to_owned(),
                dir: catalog.dir().to_path_buf(),
                known: if ids.is_empty() {
                    "the catalog is empty (download one with model_download, or rbee-hive model download)".to_owned()
                } else {
                    format!("known ids: {}", ids.join(", "))
                },
            })
        }
    }
}

/// Narrates a failed spawn in one line: the worker's last output lines come once, in the
/// job's failure reason (`failed:` and `[ERROR]`), not a third time here.
fn spawn_error(job: &JobContext, error: OperationFailure) -> OperationFailure {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_suffix("; last output:").unwrap_or(first);
    NARRATE
        .action("worker_spawn_error")
        .context(first)
        .human("❌ Spawn failed: {}")
        .error()
        .emit_to(job);
    error
}
