//! `worker_process_list`: the processes of this hive's running workers, as the upstream
//! queen asks for them: pid, memory, CPU, elapsed time and command line from `/proc`.

use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the running worker processes of this hive.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_proc_list_start")
        .context(hive_id)
        .human("📋 Listing worker processes on hive '{}'")
        .emit_to(job);
    let processes = services.workers.running_processes();
    NARRATE
        .action("worker_proc_list_result")
        .context(processes.len())
        .human("Found {} worker process(es)")
        .emit_to(job);
    if processes.is_empty() {
        NARRATE
            .action("worker_proc_list_empty")
            .human("No worker processes found")
            .emit_to(job);
    }
    let mut entries = Vec::new();
    let all_stats = services.workers.all_stats();
    for (record, info) in &processes {
        // The worker's whole process group over the last interval when sampled.
        let stats = all_stats.get(&record.id);
        let (megabytes, cpu) = match stats {
            Some(stats) => (stats.rss_mb, stats.cpu_pct),
            None => (info.memory_kb as f64 / 1024.0, info.cpu_percent),
        };
        NARRATE
            .action("worker_proc_list_entry")
            .context(info.pid)
            .context(format!("{megabytes:.1}"))
            .context(cpu)
            .context(&info.elapsed)
            .context(&info.command)
            .human("  PID {} | {} MB | {}% CPU | {} | {}")
            .emit_to(job);
        entries.push(json!({
            "pid": info.pid,
            "worker_id": record.id,
            "command": info.command,
            "memory_kb": info.memory_kb,
            "cpu_percent": info.cpu_percent,
            "elapsed": info.elapsed,
            "stats": stats,
        }));
    }
    job.publish_result(&json!({ "processes": entries }));
    Ok(())
}
