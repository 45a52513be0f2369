//! `worker_binary_get`: one worker-binary catalog entry (`worker_type` is its id, as
//! upstream names the field).

use catalog::CatalogId;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Shows worker-binary entry `worker_type`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    worker_type: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("worker_bin_get_start")
        .context(worker_type)
        .context(hive_id)
        .human("🔍 Getting worker binary '{}' on hive '{}'")
        .emit_to(job);
    let entry = match CatalogId::parse(worker_type).and_then(|id| services.worker_binaries.get(&id))
    {
        Ok(entry) => entry,
        Err(error) => {
            NARRATE
                .action("worker_bin_get_error")
                .context(worker_type)
                .context(&error)
                .human("❌ Worker binary '{}' not found: {}")
                .error()
                .emit_to(job);
            return Err(error.into());
        }
    };
    let binary = &entry.artifact;
    NARRATE
        .action("worker_bin_get_found")
        .context(&binary.id)
        .context(binary.name())
        .context(binary.path.display())
        .human("✅ Worker: {} | Name: {} | Path: {}")
        .emit_to(job);
    NARRATE
        .action("worker_bin_get_details")
        .human(serde_json::to_string_pretty(binary).unwrap_or_default())
        .emit_to(job);
    job.publish_result(&entry);
    Ok(())
}
