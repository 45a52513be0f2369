//! `worker_spawn`: starts a worker process and waits until it is ready.

use job_server::JobContext;
use worker_lifecycle::LifecycleError;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Spawns a `worker` worker for `model` on device `device`.
pub async fn run(
    job: &JobContext,
    _services: &OperationServices,
    hive_id: &str,
    model: &str,
    worker: &str,
    device: u32,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_spawn_start")
        .job_id(job.job_id())
        .context(worker)
        .context(model)
        .context(device)
        .context(hive_id)
        .human("🚀 Spawning {} worker for model '{}' on device {} on hive '{}'")
        .emit();
    Err(LifecycleError::SpawnUnavailable(worker.to_owned()).into())
}
