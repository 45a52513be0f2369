//! `worker_process_get`: one worker process, found by pid; only this hive's workers.

use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Shows the worker process `pid`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    pid: u64,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_proc_get_start")
        .context(pid)
        .context(hive_id)
        .human("🔍 Getting worker process PID {} on hive '{}'")
        .emit_to(job);
    let (record, info) = match services.workers.find_by_pid(pid) {
        Ok(found) => found,
        Err(error) => {
            NARRATE
                .action("worker_proc_get_error")
                .context(&error)
                .human("❌ {}")
                .error()
                .emit_to(job);
            return Err(error.into());
        }
    };
    // The worker's whole process group over the last interval when sampled; the process's
    // own numbers (its lifetime CPU average) until then.
    let stats = services.workers.stats(&record.id);
    let (megabytes, cpu) = match &stats {
        Some(stats) => (stats.rss_mb, stats.cpu_pct),
        None => (info.memory_kb as f64 / 1024.0, info.cpu_percent),
    };
    NARRATE
        .action("worker_proc_get_found")
        .context(info.pid)
        .context(&info.command)
        .context(format!("{megabytes:.1}"))
        .context(cpu)
        .context(&info.elapsed)
        .human("✅ PID {}: {} | {} MB | {}% CPU | {}")
        .emit_to(job);
    let details = json!({
        "pid": info.pid,
        "worker_id": record.id,
        "command": info.command,
        "memory_kb": info.memory_kb,
        "cpu_percent": info.cpu_percent,
        "elapsed": info.elapsed,
        "stats": stats,
    });
    NARRATE
        .action("worker_proc_get_details")
        .human(serde_json::to_string_pretty(&details).unwrap_or_default())
        .emit_to(job);
    job.publish_result(&details);
    Ok(())
}
