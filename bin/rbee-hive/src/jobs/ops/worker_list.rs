//! `worker_list`: the registered workers, one narration line each (the seed's texts).

use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::ops::WorkerView;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Lists the workers of this hive.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_list_start")
        .context(hive_id)
        .human("📋 Listing workers on hive '{}'")
        .emit_to(job);

    let workers = services.workers.list_with_stats();
    NARRATE
        .action("worker_list_result")
        .context(workers.len())
        .field("count", workers.len())
        .human("Found {} worker(s)")
        .emit_to(job);

    if workers.is_empty() {
        NARRATE
            .action("worker_list_empty")
            .human("No workers found")
            .emit_to(job);
    }
    for (worker, _) in &workers {
        NARRATE
            .action("worker_list_entry")
            .context(&worker.id)
            .context(&worker.model_id)
            .context(&worker.device)
            .context(worker.port)
            .context(worker.status.label())
            .field("worker_id", &worker.id)
            .human("  {} | {} | {} | port {} | {}")
            .emit_to(job);
    }
    // Numbers go in the result object, not into the seed's lines; serialised straight from
    // the records (no tree of JSON values in between).
    #[derive(serde::Serialize)]
    struct Workers<'a> {
        workers: Vec<WorkerView<'a>>,
    }
    let views = workers
        .iter()
        .map(|(worker, stats)| WorkerView::new(worker, stats.clone()))
        .collect();
    job.publish_result(&Workers { workers: views });
    Ok(())
}
