//! `worker_process_delete`: stops a worker found by pid exactly as `worker_delete` does.
//! A pid that is not a running worker of this hive is refused and never signalled.

use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::ops::worker_delete::stop_worker;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Stops the worker whose process is `pid`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    pid: u64,
) -> Result<(), OperationFailure> {
    let job_id = job.job_id();
    NARRATE
        .action("worker_proc_del_start")
        .job_id(job_id)
        .context(pid)
        .context(hive_id)
        .human("🗑️  Deleting worker process PID {} on hive '{}'")
        .emit();
    let outcome = async {
        let (record, _) = services.workers.find_by_pid(pid)?;
        stop_worker(job_id, services, &record.id, None).await
    };
    match outcome.await {
        Ok(result) => {
            NARRATE
                .action("worker_proc_del_ok")
                .job_id(job_id)
                .context(pid)
                .human("✅ Worker process PID {} deleted successfully")
                .emit();
            job.publish_result(result);
            Ok(())
        }
        Err(error) => {
            NARRATE
                .action("worker_proc_del_error")
                .job_id(job_id)
                .context(&error)
                .human("❌ {}")
                .error()
                .emit();
            Err(error)
        }
    }
}
