//! `worker_delete`: stops a worker's whole process tree and removes it.
//!
//! The stop itself belongs to the worker's supervisor, so it completes even if this job is
//! cancelled: the worker ends fully stopped, never half. This file narrates what happens:
//! SIGTERM, progress once a second during the grace, SIGKILL only if it was really needed.
//! `worker_process_delete` stops a worker the same way, through [`stop_worker`].

use std::time::Duration;

use job_server::JobContext;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use worker_lifecycle::Stopping;

use crate::jobs::NARRATE;
use crate::jobs::ops::worker_spawn::PROGRESS_EVERY;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Deletes worker `id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
    grace_ms: Option<u64>,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_delete_start")
        .context(id)
        .context(hive_id)
        .human("🗑️  Deleting worker '{}' on hive '{}'")
        .emit_to(job);
    let result = match stop_worker(job, services, id, grace_ms.map(Duration::from_millis)).await {
        Ok(result) => result,
        Err(error) => {
            NARRATE
                .action("worker_delete_error")
                .context(id)
                .context(&error)
                .human("❌ Delete failed for '{}': {}")
                .error()
                .emit_to(job);
            return Err(error);
        }
    };
    NARRATE
        .action("worker_delete_complete")
        .context(id)
        .field("elapsed_ms", &result["elapsed_ms"])
        .human("✅ Worker deleted: {}")
        .emit_to(job);
    job.publish_result(&result);
    Ok(())
}

/// Stops worker `id` as a delete does, narrating each step, and returns a summary
/// (`deleted`, `pid`, `port`, `exit`, `sigkill`, `elapsed_ms`) once its whole process group
/// is gone, it is out of the registry, and that is on disk.
pub async fn stop_worker(
    job: &JobContext,
    services: &OperationServices,
    id: &str,
    grace: Option<Duration>,
) -> Result<Value, OperationFailure> {
    let started = Instant::now();
    // What the worker held on its GPU at the last sample: "stopped" means that is back.
    let gpu_held = services
        .workers
        .stats(id)
        .filter(|s| s.vram_mb.is_some_and(|mb| mb > 0.0));
    let mut stopping = services.workers.delete(id, grace)?;
    let record = stopping.record();
    if stopping.already_exited {
        let exit = record
            .exit
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "unknown exit".into());
        NARRATE
            .action("worker_delete_exited")
            .context(record.pid)
            .context(exit)
            .human("Process PID {} had already exited ({}); removing the record")
            .emit_to(job);
    } else {
        NARRATE
            .action("worker_delete_kill")
            .context(record.pid)
            .human("Killing process PID {}")
            .emit_to(job);
        narrate_stop(job, &mut stopping, record.pid, started).await;
    }
    let last = stopping.finished().await?;
    if let (Some(held), Some(gpu)) = (gpu_held, &services.gpu) {
        wait_for_gpu_release(job, gpu.as_ref(), &held.pids, held.vram_mb.unwrap_or(0.0)).await;
    }
    let stop = last.stop.as_ref();
    Ok(json!({
        "deleted": id,
        "pid": record.pid,
        "port": record.port,
        "exit": last.exit,
        "sigkill": stop.is_some_and(|s| s.sigkill_at.is_some()),
        "elapsed_ms": started.elapsed().as_millis(),
    }))
}

/// The longest a delete waits for the driver to give a stopped worker's GPU memory back.
const GPU_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until none of `pids` holds GPU memory any more, and says so.
async fn wait_for_gpu_release(
    job: &JobContext,
    gpu: &dyn worker_lifecycle::GpuUsage,
    pids: &[u32],
    held_mb: f64,
) {
    let started = Instant::now();
    loop {
        let still: Vec<(u32, u64)> = match gpu.sample().await {
            Some(sample) => pids
                .iter()
                .filter_map(|pid| sample.by_pid.get(pid).map(|mb| (*pid, *mb)))
                .collect(),
            // The driver does not answer: nothing to wait for.
            None => Vec::new(),
        };
        if still.is_empty() {
            NARRATE
                .action("worker_delete_gpu_released")
                .context(format!("{:.1}", held_mb / 1024.0))
                .context(format!("{:.1}", started.elapsed().as_secs_f64()))
                .human("GPU memory released: {} GiB in {} s")
                .emit_to(job);
            return;
        }
        if started.elapsed() >= GPU_RELEASE_WAIT {
            let holders: Vec<String> = still
                .iter()
                .map(|(pid, mb)| format!("PID {pid} ({mb} MiB)"))
                .collect();
            NARRATE
                .action("worker_delete_gpu_held")
                .context(format!("{:.0}", GPU_RELEASE_WAIT.as_secs_f64()))
                .context(holders.join(", "))
                .human("⚠️  GPU memory still held after {} s by {}")
                .warn()
                .emit_to(job);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Narrates the stop as the supervisor records it, until the worker is gone.
async fn narrate_stop(job: &JobContext, stopping: &mut Stopping, pid: u32, started: Instant) {
    let mut told_sigterm = false;
    let mut told_sigkill = false;
    let mut progress = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    progress.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let record = stopping.progress();
        let stop = record.stop.as_ref();
        if stop.is_some_and(|s| s.sigterm_at.is_some()) && !told_sigterm {
            told_sigterm = true;
            NARRATE
                .action("worker_delete_sigterm")
                .human("Sent SIGTERM to worker process")
                .emit_to(job);
        }
        if let Some(stop) = stop.filter(|s| s.sigkill_at.is_some() && !told_sigkill) {
            told_sigkill = true;
            NARRATE
                .action("worker_delete_sigkill")
                .context(format!("{:.1}", stop.grace_ms as f64 / 1000.0))
                .human("Sent SIGKILL to worker process (still running after {}s of grace)")
                .warn()
                .emit_to(job);
        }
        tokio::select! {
            alive = stopping.changed() => if !alive { return },
            _ = progress.tick() => {
                NARRATE
                    .action("worker_delete_waiting")
                    .context(pid)
                    .context(format!("{:.1}", started.elapsed().as_secs_f64()))
                    .context(format!("{:.1}", stopping.grace.as_secs_f64()))
                    .human("⏳ Waiting for PID {} to exit: {}s of {}s grace")
                    .emit_to(job);
            }
        }
    }
}
