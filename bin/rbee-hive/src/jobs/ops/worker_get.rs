//! `worker_get`: one worker's details, as a summary line and the pretty JSON record.

use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::ops::WorkerView;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Shows worker `id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_get_start")
        .context(id)
        .context(hive_id)
        .human("🔍 Getting worker '{}' on hive '{}'")
        .emit_to(job);

    let worker = match services.workers.get(id) {
        Ok(worker) => worker,
        Err(error) => {
            NARRATE
                .action("worker_get_error")
                .context(id)
                .context(&error)
                .human("❌ Worker '{}' not found: {}")
                .error()
                .emit_to(job);
            return Err(error.into());
        }
    };
    NARRATE
        .action("worker_get_found")
        .context(&worker.id)
        .context(&worker.model_id)
        .context(&worker.device)
        .context(worker.port)
        .human("✅ Worker: {} | Model: {} | Device: {} | Port: {}")
        .emit_to(job);
    // Pretty-printed from the record itself, so the fields keep the protocol's order; the
    // last resource sample comes after them.
    let view = WorkerView::new(&worker, services.workers.stats(&worker.id));
    let pretty = serde_json::to_string_pretty(&view).unwrap_or_default();
    NARRATE
        .action("worker_get_details")
        .human(pretty)
        .emit_to(job);
    job.publish_result(&view);
    Ok(())
}
