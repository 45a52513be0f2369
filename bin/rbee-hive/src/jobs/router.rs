//! The job router: one exhaustive match from [`Operation`] to its handler. There is no
//! wildcard arm, so a new operation does not compile until it is routed here.

use job_server::JobContext;
use worker_lifecycle::{LifecycleError, WorkerManager};

use crate::jobs::Operation;
use crate::jobs::ops;

/// What operations need from the hive.
#[derive(Clone)]
pub struct OperationServices {
    /// The hive's workers.
    pub workers: WorkerManager,
}

/// Why an operation failed; its text is the job's failure reason.
#[derive(Debug, thiserror::Error)]
pub enum OperationFailure {
    /// The worker lifecycle refused or failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// Runs `operation` as the job `job`.
pub async fn dispatch(
    operation: Operation,
    job: JobContext,
    services: OperationServices,
) -> Result<(), OperationFailure> {
    match operation {
        Operation::WorkerSpawn {
            hive_id,
            model,
            worker,
            device,
        } => ops::worker_spawn::run(&job, &services, &hive_id, &model, &worker, device).await,
        Operation::WorkerList { hive_id } => ops::worker_list::run(&job, &services, &hive_id).await,
        Operation::WorkerGet { hive_id, id } => {
            ops::worker_get::run(&job, &services, &hive_id, &id).await
        }
        Operation::WorkerDelete {
            hive_id,
            id,
            grace_ms,
        } => ops::worker_delete::run(&job, &services, &hive_id, &id, grace_ms).await,
        Operation::WorkerProcessList { hive_id } => {
            ops::worker_process_list::run(&job, &services, &hive_id).await
        }
        Operation::WorkerProcessGet { hive_id, pid } => {
            ops::worker_process_get::run(&job, &services, &hive_id, pid).await
        }
        Operation::WorkerProcessDelete { hive_id, pid } => {
            ops::worker_process_delete::run(&job, &services, &hive_id, pid).await
        }
    }
}
