//! `worker_catalog_get`: one worker of the worker catalog server (`worker_catalog_url`),
//! with a pretty-JSON detail line, and the entry as the result object.

use catalog::CatalogId;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Shows the catalog server's worker `worker_id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    worker_id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_cat_get_start")
        .context(worker_id)
        .context(hive_id)
        .human("🔍 Getting worker '{}' from the worker catalog for hive '{}'")
        .emit_to(job);
    let found = match CatalogId::parse(worker_id) {
        Ok(id) => match services.worker_installer.server() {
            Ok(server) => server.get(&id).await.map_err(OperationFailure::from),
            Err(error) => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    };
    let worker = match found {
        Ok(worker) => worker,
        Err(error) => {
            NARRATE
                .action("worker_cat_get_error")
                .context(worker_id)
                .context(&error)
                .human("❌ Cannot get worker '{}' from the worker catalog: {}")
                .error()
                .emit_to(job);
            return Err(error);
        }
    };
    NARRATE
        .action("worker_cat_get_found")
        .context(&worker.id)
        .context(&worker.name)
        .context(&worker.version)
        .context(&worker.worker_type)
        .context(worker.platforms_phrase())
        .human("✅ Worker: {} | Name: {} | Version: {} | Type: {} | Platforms: {}")
        .emit_to(job);
    NARRATE
        .action("worker_cat_get_details")
        .context(serde_json::to_string_pretty(&worker).unwrap_or_default())
        .human("{}")
        .emit_to(job);
    job.publish_result(&worker);
    Ok(())
}
