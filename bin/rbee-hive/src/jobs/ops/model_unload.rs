//! `model_unload` (today's rbee, PROTOCOL §9): stops every worker serving a model, each as
//! `worker_delete` stops one (with its narration); none is a success that says so.

use catalog::CatalogId;
use job_server::JobContext;
use serde_json::json;

use crate::jobs::NARRATE;
use crate::jobs::ops::{model_delete, worker_delete};
use crate::jobs::router::{OperationFailure, OperationServices};

/// Stops the workers serving model `id` (by its id, by a file of its catalog folder, or by
/// the model string a worker was given).
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_unload_start")
        .context(id)
        .context(hive_id)
        .human("📤 Unloading model '{}' on hive '{}'")
        .emit_to(job);
    let workers = match CatalogId::parse(id) {
        Ok(catalog_id) => model_delete::workers_using(services, &catalog_id),
        // Not a catalog id (a path a worker was given): the workers given exactly that.
        Err(_) => services
            .workers
            .list()
            .into_iter()
            .filter(|worker| worker.is_active() && worker.model_id == id)
            .map(|worker| worker.id)
            .collect(),
    };
    if workers.is_empty() {
        NARRATE
            .action("model_unload_none")
            .context(id)
            .human("No worker is serving model '{}'; nothing to unload")
            .emit_to(job);
        job.publish_result(&json!({ "model": id, "stopped": [] }));
        return Ok(());
    }
    NARRATE
        .action("model_unload_workers")
        .context(workers.len())
        .context(workers.join(", "))
        .human("Stopping {} worker(s): {}")
        .emit_to(job);
    // One after the other: each delete narrates its own steps, which would interleave.
    let mut stopped = Vec::new();
    for worker in &workers {
        match worker_delete::run(job, services, hive_id, worker, None).await {
            Ok(()) => stopped.push(worker.clone()),
            // Gone meanwhile (another delete, its own exit and removal): not this job's failure.
            Err(OperationFailure::Lifecycle(error)) if services.workers.is_gone(worker) => {
                tracing::debug!(%error, worker, "worker gone before model_unload stopped it");
            }
            Err(error) => return Err(error),
        }
    }
    NARRATE
        .action("model_unload_complete")
        .context(id)
        .context(stopped.len())
        .human("✅ Model '{}' unloaded: {} worker(s) stopped")
        .emit_to(job);
    job.publish_result(&json!({ "model": id, "stopped": stopped }));
    Ok(())
}
