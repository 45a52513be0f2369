//! `worker_list`: the registered workers, one narration line each (the seed's texts).

use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the workers of this hive.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    let job_id = job.job_id();
    NARRATE
        .action("worker_list_start")
        .job_id(job_id)
        .context(hive_id)
        .human("📋 Listing workers on hive '{}'")
        .emit();

    let workers = services.workers.list();
    NARRATE
        .action("worker_list_result")
        .job_id(job_id)
        .context(workers.len())
        .field("count", workers.len())
        .human("Found {} worker(s)")
        .emit();

    if workers.is_empty() {
        NARRATE
            .action("worker_list_empty")
            .job_id(job_id)
            .human("No workers found")
            .emit();
    }
    for worker in &workers {
        NARRATE
            .action("worker_list_entry")
            .job_id(job_id)
            .context(&worker.id)
            .context(&worker.model_id)
            .context(&worker.device)
            .context(worker.port)
            .context(worker.status.label())
            .field("worker_id", &worker.id)
            .human("  {} | {} | {} | port {} | {}")
            .emit();
    }
    job.publish_result(serde_json::json!({ "workers": workers }));
    Ok(())
}
