//! `model_get`: one model of the catalog, as a summary line and the pretty JSON artifact.

use catalog::CatalogId;
use job_server::JobContext;

use crate::jobs::NARRATE;
use crate::jobs::router::{OperationFailure, OperationServices};

/// Shows model `id`.
pub async fn run(
    job: &JobContext,
    services: &OperationServices,
    hive_id: &str,
    id: &str,
) -> Result<(), OperationFailure> {
    NARRATE
        .action("model_get_start")
        .context(id)
        .context(hive_id)
        .human("🔍 Getting model '{}' on hive '{}'")
        .emit_to(job);
    let entry = match CatalogId::parse(id).and_then(|id| services.models.get(&id)) {
        Ok(entry) => entry,
        Err(error) => {
            NARRATE
                .action("model_get_error")
                .context(id)
                .context(&error)
                .human("❌ Model '{}' not found: {}")
                .error()
                .emit_to(job);
            return Err(error.into());
        }
    };
    let model = &entry.artifact;
    NARRATE
        .action("model_get_found")
        .context(&model.id)
        .context(&model.name)
        .context(model.path.display())
        .human("✅ Model: {} | Name: {} | Path: {}")
        .emit_to(job);
    NARRATE
        .action("model_get_details")
        .human(serde_json::to_string_pretty(model).unwrap_or_default())
        .emit_to(job);
    job.publish_result(&entry);
    Ok(())
}
