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
    NARRATE
        .action("worker_proc_del_start")
        .context(pid)
        .context(hive_id)
        .human("🗑️  Deleting worker process PID {} on hive '{}'")
        .emit_to(job);
    let outcome = async {
        let (record, _) = services.workers.find_by_pid(pid)?;
        stop_worker(job, services, &record.id, None).await
    };
    match outcome.await {
        Ok(result) => {
            NARRATE
                .action("worker_proc_del_ok")
                .context(pid)
                .human("✅ Worker process PID {} deleted successfully")
                .emit_to(job);
            job.publish_result(&result);
            Ok(())
        }
        Err(error) => {
            NARRATE
                .action("worker_proc_del_error")
                .context(&error)
                .human("❌ {}")
                .error()
                .emit_to(job);
            Err(error)
        }
    }
}
